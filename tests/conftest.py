"""Shared test helpers: compare a fusegraph model with real torch.nn modules."""

from __future__ import annotations

import os
import tempfile

# NOTE: the suite runs in Triton's CPU interpreter, as CI does, even on a machine with a GPU (one
# process cannot both interpret and compile kernels); the GPU tests run on their own with
# `FUSEGRAPH_TEST_GPU=1 pytest tests/runtime/test_gpu.py` (bench/gpu_check.sh does)
if os.environ.get("FUSEGRAPH_TEST_GPU") != "1":
    os.environ["CUDA_VISIBLE_DEVICES"] = ""
    os.environ["TRITON_INTERPRET"] = "1"

import pytest  # noqa: E402
import torch  # noqa: E402

# NOTE: under pytest-xdist (`-n 2`, as the README runs the suite) each worker is one process per core:
# torch's own intra-op threads would only contend with the other worker's
if os.environ.get("PYTEST_XDIST_WORKER"):
    torch.set_num_threads(1)
from hypothesis import settings  # noqa: E402

# NOTE: derandomised, so every run (CI included) draws the same examples; counts are capped per test
settings.register_profile("fusegraph", derandomize=True, deadline=None, print_blob=True)
settings.load_profile("fusegraph")

# the files whose tests take longest (tens of seconds to two minutes each: the demos' seeded runs, the sm_90
# compiles) run first: pytest-xdist hands tests out in collection order, so a long one collected last
# would leave the other worker idle at the end
LONGEST_FIRST = ("tests/test_demo.py", "tests/kernels/test_gpu_compile.py")


def pytest_collection_modifyitems(config, items) -> None:
    def rank(item) -> int:
        return next((i for i, path in enumerate(LONGEST_FIRST) if item.nodeid.startswith(path)), len(LONGEST_FIRST))

    items.sort(key=rank)  # stable: the order within each file, and of the rest, kept


# NOTE: a private kernel cache per test run, so tests never trust (or litter) the user's cache
os.environ.setdefault("FUSEGRAPH_CACHE", tempfile.mkdtemp(prefix="fusegraph-test-cache-"))

import fusegraph as fg  # noqa: E402

# fp32 tolerances for interpreter vs torch.nn: the same math through different kernels
FP32_RTOL, FP32_ATOL = 1e-5, 1e-5
# fp32 tolerances for generated kernels vs torch.nn: different summation orders in long reductions
KERNEL_RTOL, KERNEL_ATOL = 1e-4, 1e-5
# fp16 / bf16 (GPU only), against torch in fp32 on the same rounded inputs: every stored activation
# is rounded to 10 / 7 mantissa bits (accumulation stays fp32), so the error grows with depth
HALF_TOL = {"float16": (1e-2, 1e-2), "bfloat16": (5e-2, 5e-2)}

requires_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


@pytest.fixture
def small_tiles():
    """The interpreter's small tiles (kernels/target.py): launches spanning several programs and split
    reductions at test sizes, for the tests that exist to cover those paths; its large tiles put most
    launches in one program."""
    from fusegraph.kernels.target import interpreter_tiles

    with interpreter_tiles("small"):
        yield


def feeds_for(model: fg.Model, batch: int = 3, seed: int = 0, vocab: int | None = None) -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    feeds = []
    for value in model.graph.inputs:
        shape = value.type.concrete(batch)
        if value.type.dtype == "int64":
            feeds.append(torch.randint(0, vocab or 2, shape, generator=generator))
        else:
            feeds.append(torch.randn(shape, generator=generator))
    return feeds


def assert_matches_torch(model: fg.Model, feeds: list[torch.Tensor], rtol: float = FP32_RTOL,
                         atol: float = FP32_ATOL) -> None:
    """The IR interpreter and to_torch() agree, in shape and value, on every output."""
    ours = model.reference(feeds)
    with torch.no_grad():
        theirs = model.to_torch()(*feeds)
    ours, theirs = ([ours], [theirs]) if isinstance(ours, torch.Tensor) else (ours, theirs)
    assert len(ours) == len(theirs)
    for a, b in zip(ours, theirs):
        assert a.shape == b.shape
        torch.testing.assert_close(a, b, rtol=rtol, atol=atol)


def single_layer(layer: fg.Layer, shape: tuple[int, ...], dtype: str = "float32", seed: int = 0) -> fg.Model:
    x = fg.Input(shape, dtype=dtype)
    model = fg.Model(x, layer(x))
    model.init(seed)
    return model


def assert_compiled_matches_torch(model: fg.Model, feeds: list[torch.Tensor], rtol: float = KERNEL_RTOL,
                                  atol: float = KERNEL_ATOL, **compile_args) -> fg.CompiledModel:
    """fg.compile(model) and to_torch() agree on every output; returns the compiled model."""
    compiled = fg.compile(model, **compile_args)
    ours = compiled(feeds)
    with torch.no_grad():
        theirs = model.to_torch()(*feeds)
    ours, theirs = ([ours], [theirs]) if isinstance(ours, torch.Tensor) else (ours, theirs)
    for a, b in zip(ours, theirs, strict=True):
        assert a.shape == b.shape
        torch.testing.assert_close(a, b, rtol=rtol, atol=atol)
    return compiled


def torch_loss(model: fg.Model, prediction: torch.Tensor, target: torch.Tensor, loss: str) -> torch.Tensor:
    """The same loss in PyTorch, on what the model outputs (probabilities stay probabilities)."""
    import torch.nn.functional as F

    last = model.graph.producers()[model.graph.outputs[0].name].op
    if loss == "cross_entropy":
        if last == "softmax":
            return F.nll_loss(torch.log(prediction), target)
        if last == "log_softmax":
            return F.nll_loss(prediction, target)
        return F.cross_entropy(prediction, target)
    if loss == "binary_cross_entropy":
        if last == "sigmoid":
            return F.binary_cross_entropy(prediction, target)
        return F.binary_cross_entropy_with_logits(prediction, target)
    return F.mse_loss(prediction, target)


def targets_for(model: fg.Model, loss: str, batch: int, seed: int = 1) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    shape = (batch, *model.output_shape)
    if loss == "cross_entropy":
        return torch.randint(0, model.output_shape[-1], (batch,), generator=generator)
    if loss == "binary_cross_entropy":
        return (torch.rand(shape, generator=generator) > 0.5).float()
    return torch.randn(shape, generator=generator)


def training_oracle(model: fg.Model) -> torch.nn.Module:
    """model.to_torch() as a training step sees it: batch norms on the batch's statistics (train mode);
    dropout stays off, so both sides are deterministic."""
    oracle = model.to_torch()
    for module in oracle.modules():
        if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
            module.train()
    return oracle


def assert_grads_match_torch(model: fg.Model, feeds: list[torch.Tensor], target: torch.Tensor, loss: str,
                             rtol: float = KERNEL_RTOL, atol: float = KERNEL_ATOL, **compile_args) -> fg.CompiledModel:
    """fusegraph's loss and every gradient equal torch.autograd's on to_torch() (fp32)."""
    compiled = fg.compile(model, loss=loss, **compile_args)
    value, grads = compiled.loss_and_grads(feeds, target)
    oracle = training_oracle(model)
    expected = torch_loss(model, oracle(*feeds), target, loss)
    expected.backward()
    torch.testing.assert_close(torch.tensor(value), expected.detach(), rtol=rtol, atol=atol)
    params = oracle.fusegraph_parameters()
    trainable = {n.name for n in model.graph.param_nodes if n.attrs["trainable"]}
    assert set(grads) == trainable
    for name, grad in grads.items():
        torch.testing.assert_close(grad, params[name].grad, rtol=rtol, atol=atol, msg=lambda m, n=name: f"{n}: {m}")
    return compiled


def assert_training_follows_torch(model: fg.Model, trainer, torch_optimizer, oracle, batches) -> None:
    """Each `trainer.train_step` loss is torch's on the same batch, torch stepping `oracle` alongside."""
    for step, (x, y) in enumerate(batches):
        ours = trainer.train_step(x, y)
        torch_optimizer.zero_grad()
        theirs = torch_loss(model, oracle(x), y, "cross_entropy")
        theirs.backward()
        torch_optimizer.step()
        assert ours == pytest.approx(theirs.item(), rel=1e-3), step
