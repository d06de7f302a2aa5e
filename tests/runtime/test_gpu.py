"""On a CUDA GPU (compiled Triton, not the interpreter): every zoo model forward in fp32, fp16 and
bf16, every zoo model's loss and gradients, and a training run, against torch on the same GPU.
They run with `FUSEGRAPH_TEST_GPU=1 pytest tests/runtime/test_gpu.py` (see tests/conftest.py) and skip
where torch sees no GPU."""

import pytest
import torch

import fusegraph as fg
from fusegraph.kernels import Target
from tests.conftest import (
    HALF_TOL,
    KERNEL_ATOL,
    KERNEL_RTOL,
    assert_training_follows_torch,
    feeds_for,
    requires_cuda,
    targets_for,
    torch_loss,
)

pytestmark = requires_cuda


def record(test: str, **measured) -> None:
    """A GPU test's measurement for the issues' record: printed, and appended as a JSON line to
    $FUSEGRAPH_GPU_RECORD where set (bench/gpu_check.sh sets it: pytest-xdist workers' prints are lost)."""
    import json
    import os

    line = json.dumps({"test": test, "gpu": torch.cuda.get_device_name(), **measured})
    print(line)
    if os.environ.get("FUSEGRAPH_GPU_RECORD"):
        with open(os.environ["FUSEGRAPH_GPU_RECORD"], "a") as records:  # one short write per line: whole lines
            records.write(line + "\n")

LOSSES = fg.zoo.LOSSES
# half-precision floors, where torch's own half result happens to land very close to fp32
HALF_FLOOR = {"float16": 2e-3, "bfloat16": 1.6e-2}


@pytest.fixture(autouse=True)
def no_tf32():
    """fp32 means fp32: torch's TF32 shortcuts off (our fp32 tl.dot is ieee or tf32x3, both fp32-accurate)."""
    saved = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    yield
    torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved


@pytest.mark.parametrize("batch", [1, 8, 300])
@pytest.mark.parametrize("name", list(fg.zoo.MODELS))
def test_zoo_forward_on_gpu_fp32(name, batch):
    model = fg.zoo.get(name)
    feeds = [f.cuda() for f in feeds_for(model, batch, vocab=1000)]
    theirs = model.to_torch().cuda()(*feeds)
    ours = fg.compile(model, device="cuda")(feeds)
    torch.testing.assert_close(ours, theirs, rtol=KERNEL_RTOL, atol=KERNEL_ATOL)


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
@pytest.mark.parametrize("name", ["lenet", "cnn1d", "gru_forecaster", "resnet_block"])
def test_half_precision_on_gpu(dtype, name):
    """Against torch in fp32 on the same rounded weights and inputs, and no worse than torch's own
    half-precision forward (twice its error, or the floor)."""
    model = getattr(fg.zoo, name)(dtype=dtype)
    half = getattr(torch, dtype)
    feeds = [f.to("cuda", half) for f in feeds_for(model, 64)]
    oracle = model.to_torch().to("cuda", half)
    torch_half = oracle(*feeds).float()
    reference = oracle.float()(*[f.float() for f in feeds])
    ours = fg.compile(model, device="cuda")(feeds)
    assert ours.dtype == half
    ours_error = (ours.float() - reference).abs().max().item()
    torch_error = (torch_half - reference).abs().max().item()
    assert ours_error <= max(2 * torch_error, HALF_FLOOR[dtype]), (ours_error, torch_error)
    rtol, atol = HALF_TOL[dtype]
    torch.testing.assert_close(ours.float(), reference, rtol=rtol, atol=atol)


@pytest.mark.parametrize("name", list(LOSSES))
def test_zoo_loss_and_gradients_on_gpu(name):
    model, loss = fg.zoo.get(name), LOSSES[name]
    feeds = [f.cuda() for f in feeds_for(model, 16, vocab=1000)]
    target = targets_for(model, loss, 16).cuda()
    value, grads = fg.compile(model, loss=loss, device="cuda").loss_and_grads(feeds, target)
    oracle = model.to_torch().cuda().train()  # NOTE: cuDNN's RNN backward runs in training mode only (no dropout here)
    expected = torch_loss(model, oracle(*feeds), target, loss)
    expected.backward()
    assert value == pytest.approx(expected.item(), rel=KERNEL_RTOL, abs=KERNEL_ATOL)
    params = oracle.fusegraph_parameters()
    assert set(grads) == {n.name for n in model.graph.param_nodes if n.attrs["trainable"]}
    for param, grad in grads.items():
        assert grad.device.type == "cuda"
        torch.testing.assert_close(grad, params[param].grad, rtol=KERNEL_RTOL, atol=KERNEL_ATOL,
                                   msg=lambda m, p=param: f"{p}: {m}")


def test_lenet_training_on_gpu_follows_torch():
    model = fg.zoo.lenet()
    trainer = fg.compile(model, loss="cross_entropy", optimizer=fg.optim.Adam(lr=1e-3), device="cuda")
    oracle = model.to_torch().cuda()
    torch_optimizer = torch.optim.Adam(oracle.parameters(), lr=1e-3)
    generator = torch.Generator().manual_seed(3)
    batches = [(torch.randn(128, 1, 28, 28, generator=generator).cuda(),
                torch.randint(0, 10, (128,), generator=generator).cuda()) for _ in range(20)]
    assert_training_follows_torch(model, trainer, torch_optimizer, oracle, batches)


@pytest.mark.parametrize("name", ["lenet", "lstm_classifier", "gru_forecaster"])
def test_cuda_graph_replays_fresh_inputs_and_hands_out_its_own_outputs(name):
    """Each call's answer is for that call's inputs (static inputs refreshed), outputs survive the
    next call (copied out of the graph's pool), a new batch size is captured anew, and the result
    equals launching kernel by kernel."""
    model = fg.zoo.get(name)
    replayed = fg.compile(model, device="cuda")
    eager = fg.compile(model, device="cuda", cuda_graphs=False)
    oracle = model.to_torch().cuda()
    answers = []
    for batch, seed in [(8, 0), (8, 1), (5, 2), (8, 3)]:
        feeds = [f.cuda() for f in feeds_for(model, batch, seed=seed, vocab=1000)]
        ours = replayed(feeds)
        torch.testing.assert_close(ours, oracle(*feeds), rtol=KERNEL_RTOL, atol=KERNEL_ATOL)
        torch.testing.assert_close(ours, eager(feeds), rtol=0, atol=0)
        answers.append((ours, ours.clone()))
    assert len(replayed._forward.captured) == 2 and replayed._forward.failed is None
    assert replayed.last_launches == eager.last_launches
    for kept, copy in answers:
        assert torch.equal(kept, copy)


def test_gradients_replayed_equal_gradients_launched_one_by_one():
    model = fg.zoo.lenet()
    replayed = fg.compile(model, loss="cross_entropy", device="cuda")
    eager = fg.compile(model, loss="cross_entropy", device="cuda", cuda_graphs=False)
    for seed in range(3):
        feeds = [f.cuda() for f in feeds_for(model, 32, seed=seed)]
        target = targets_for(model, "cross_entropy", 32, seed=seed).cuda()
        value, grads = replayed.loss_and_grads(feeds, target)
        expected_value, expected = eager.loss_and_grads(feeds, target)
        assert value == expected_value
        for name, grad in grads.items():
            # NOTE: not bit for bit: split-K weight gradients add their partial sums atomically, in any order
            torch.testing.assert_close(grad, expected[name], rtol=1e-5, atol=1e-6)
    assert replayed.last_launches == eager.last_launches


@pytest.mark.parametrize("dtype", ["float32", "float16"])
@pytest.mark.parametrize("cell", [fg.LSTM, fg.GRU])
def test_recurrent_layer_at_benchmark_size_on_gpu(cell, dtype):
    """The tuned small-GEMM launch (bench/results/tune_cuda.md) on the shape it was tuned for."""
    model = fg.Sequential([fg.Input((100, 128), dtype=dtype), cell(256, return_sequences=True)])
    half = getattr(torch, dtype)
    x = torch.randn(64, 100, 128, generator=torch.Generator().manual_seed(4)).to("cuda", half)
    oracle = model.to_torch().to("cuda", half)
    ours = fg.compile(model, device="cuda")(x).float()
    if dtype == "float32":
        torch.testing.assert_close(ours, oracle(x), rtol=KERNEL_RTOL, atol=KERNEL_ATOL)
        return
    torch_error = (oracle(x).float() - oracle.float()(x.float())).abs().max().item()
    reference = oracle(x.float())
    assert (ours - reference).abs().max().item() <= max(2 * torch_error, HALF_FLOOR[dtype])


def test_training_with_dropout_replays_a_graph_that_draws_a_new_mask_every_step():
    """The dropout step number is read from device memory, so the captured step still draws a new
    mask each time, the same masks as launching kernel by kernel."""
    model = fg.Sequential([fg.Input((32,)), fg.Dense(64, activation="relu"), fg.Dropout(0.5, seed=3),
                           fg.Dense(4)])
    replayed = fg.compile(model, loss="mse", optimizer=fg.optim.SGD(lr=0.1), device="cuda")
    eager = fg.compile(model, loss="mse", optimizer=fg.optim.SGD(lr=0.1), device="cuda", cuda_graphs=False)
    x = torch.randn(16, 32, generator=torch.Generator().manual_seed(0)).cuda()
    y = torch.randn(16, 4, generator=torch.Generator().manual_seed(1)).cuda()
    losses = [(replayed.train_step(x, y), eager.train_step(x, y)) for _ in range(4)]
    assert replayed._step_runner.captured and replayed._step_runner.failed is None
    for ours, theirs in losses:
        assert ours == pytest.approx(theirs, rel=1e-5)
    assert len({round(ours, 6) for ours, _ in losses}) == 4  # a new mask (and new weights) every step
    for _ in range(2):  # evaluation replays its own graph, dropout off
        assert replayed.evaluate(x, y)["loss"] == pytest.approx(eager.evaluate(x, y)["loss"], rel=1e-5)
    assert replayed._evaluation.captured


@pytest.mark.parametrize("cell", [fg.LSTM, fg.GRU, fg.SimpleRNN])
def test_recurrent_gradients_at_benchmark_width_on_gpu(cell):
    """The one-kernel backward step (cell gradient computed in dh = dz W_hh's K loop) with hidden 256:
    several K chunks, row and column blocks, on compiled Triton."""
    model = fg.Sequential([fg.Input((20, 128)), cell(256, return_sequences=True), fg.Flatten(), fg.Dense(3)])
    feeds = [f.cuda() for f in feeds_for(model, 64)]
    target = targets_for(model, "mse", 64).cuda()
    value, grads = fg.compile(model, loss="mse", device="cuda").loss_and_grads(feeds, target)
    oracle = model.to_torch().cuda().train()
    expected = torch_loss(model, oracle(*feeds), target, "mse")
    expected.backward()
    assert value == pytest.approx(expected.item(), rel=KERNEL_RTOL)
    params = oracle.fusegraph_parameters()
    for name, grad in grads.items():
        torch.testing.assert_close(grad, params[name].grad, rtol=KERNEL_RTOL, atol=KERNEL_ATOL,
                                   msg=lambda m, n=name: f"{n}: {m}")


@pytest.mark.parametrize("layer", [fg.Dense(3), fg.Conv1D(2, 3, padding="same")], ids=["dense", "conv1d"])
def test_nan_and_inf_through_gpu_kernels_as_torch(layer):
    """ReLU / max pool keep NaN on the GPU too; and an infinite operand of an fp32 dot gives inf, not NaN."""
    x = fg.Input((1, 8))
    h = fg.MaxPool1D(2)(fg.Activation("relu")(x))
    model = fg.Model(x, layer(h if isinstance(layer, fg.Conv1D) else fg.Flatten()(h)))
    feeds = torch.tensor([[[float("nan"), 1, 2, 3, 4, 5, 6, 7]], [[1, 2, float("inf"), 3, 4, 5, 6, 7]]], device="cuda")
    theirs = model.to_torch().cuda()(feeds)
    relu_pool = fg.compile(fg.Model(x, h), device="cuda")(feeds)
    torch.testing.assert_close(relu_pool, torch.nn.functional.max_pool1d(torch.relu(feeds), 2), equal_nan=True)
    ours = fg.compile(model, device="cuda")(feeds)
    agree = torch.allclose(ours, theirs, rtol=KERNEL_RTOL, atol=KERNEL_ATOL, equal_nan=True)
    if Target("cuda").precision(torch.float32) == "tf32x3":  # NOTE: a strict expected failure, until it is fixed
        assert not agree, "tf32x3 dots now keep inf as torch does: drop this expected failure (issue 11, item 1)"
        pytest.xfail("issue 11, item 1: Triton's tf32x3 splits inf into inf + NaN (x - tf32(x) is NaN); fp32 dots "
                     "need a split of their own that keeps inf")
    torch.testing.assert_close(ours, theirs, rtol=KERNEL_RTOL, atol=KERNEL_ATOL, equal_nan=True)


@pytest.mark.parametrize("precision,tolerance", [("ieee", KERNEL_RTOL), ("tf32x3", KERNEL_RTOL), ("tf32", 2e-2)])
def test_fp32_precision_modes_on_gpu(precision, tolerance):
    """ieee and tf32x3 match torch's exact fp32; one-pass tf32 matches torch's own TF32 mode's accuracy."""
    model = fg.zoo.get("lenet")
    feeds = [f.cuda() for f in feeds_for(model, 8)]
    theirs = model.to_torch().cuda()(*feeds)
    ours = fg.compile(model, device="cuda", fp32_precision=precision)(feeds)
    torch.testing.assert_close(ours, theirs, rtol=tolerance, atol=tolerance)


@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
@pytest.mark.parametrize("name", ["cifar_resnet", "lstm_classifier"])
def test_mixed_precision_training_on_gpu_follows_autocast(name, dtype):
    """fg.compile(precision=...) against torch's recipe on the same GPU: autocast, and for float16 a
    GradScaler; three SGD steps (CUDA graphs replayed on our side), each loss within half precision's
    tolerance, the loss scale exactly torch's, then the float32 master weights."""
    from tests.conftest import training_oracle

    model = fg.zoo.get(name)
    rtol, atol = HALF_TOL[dtype]
    loss = LOSSES[name]
    trainer = fg.compile(model, loss=loss, optimizer=fg.optim.SGD(0.01, momentum=0.9), device="cuda",
                         precision={"bfloat16": "bf16", "float16": "fp16"}[dtype])
    oracle = training_oracle(model).cuda()
    torch_optimizer = torch.optim.SGD(oracle.parameters(), lr=0.01, momentum=0.9)
    scaler = torch.amp.GradScaler("cuda", enabled=dtype == "float16")
    for step in range(3):
        x = [f.cuda() for f in feeds_for(model, 32, seed=step, vocab=1000)]
        y = targets_for(model, loss, 32, seed=step).cuda()
        ours = trainer.train_step(x, y)
        torch_optimizer.zero_grad()
        with torch.autocast("cuda", dtype=getattr(torch, dtype)):
            theirs = torch_loss(model, oracle(*x), y, loss)
        scaler.scale(theirs).backward()
        scaler.step(torch_optimizer)
        scaler.update()
        assert ours == pytest.approx(theirs.item(), rel=rtol, abs=atol), step
        if dtype == "float16":
            assert trainer.loss_scale == scaler.get_scale()
    for param_name, param in oracle.fusegraph_parameters().items():
        assert trainer.params[param_name].dtype == torch.float32
        torch.testing.assert_close(trainer.params[param_name], param.detach(), rtol=rtol, atol=atol)


def test_from_torch_to_module_and_the_backend_train_on_gpu_like_torch():
    """A torch CNN with batch norm: fg.from_torch + to_module() in a torch.optim loop, and
    torch.compile(backend="fusegraph"), each three SGD steps beside eager on the same GPU."""
    import copy

    import torch.nn.functional as F
    from torch import nn

    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(), nn.MaxPool2d(2),
                        nn.Conv2d(16, 16, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(16 * 16 * 16, 10)).cuda()
    generator = torch.Generator().manual_seed(1)
    data = [(torch.randn(32, 3, 32, 32, generator=generator).cuda(), torch.randint(0, 10, (32,), generator=generator)
             .cuda()) for _ in range(3)]
    eager = copy.deepcopy(net)
    module = fg.compile(fg.from_torch(net, data[0][0]), device="cuda").to_module()
    backend_net = copy.deepcopy(net)
    compiled = torch.compile(backend_net, backend="fusegraph")
    models = [(eager, eager), (module, module), (compiled, backend_net)]
    optimizers = [torch.optim.SGD(owner.parameters(), lr=0.05, momentum=0.9) for _, owner in models]
    for x, y in data:
        for (model, _), optimizer in zip(models, optimizers):
            optimizer.zero_grad()
            F.cross_entropy(model(x), y).backward()
            optimizer.step()
    expected = eager.state_dict()
    for _, owner in models[1:]:
        for key, value in owner.state_dict().items():
            torch.testing.assert_close(value, expected[key], rtol=KERNEL_RTOL, atol=KERNEL_ATOL)


def test_tma_paths_match_the_pointer_paths_and_torch():
    """On Hopper, convs and matmuls read operands through TMA descriptors: the same model with descriptors off
    (FUSEGRAPH_TENSOR_DESCRIPTORS=0's path) and torch agree, forward and gradients, fp32 and fp16."""
    from fusegraph.kernels import codegen
    from fusegraph.kernels.target import tensor_descriptors

    x = fg.Input((32, 28, 28))
    h = fg.Conv2D(64, 3, padding="same", activation="relu")(fg.Conv2D(32, 3, padding="same")(x))
    model = fg.Model(x, fg.Dense(10)(fg.Flatten()(fg.Conv2D(16, 3, padding="same")(h))))
    model.init(0)
    feeds = [f.cuda() for f in feeds_for(model, 8)]
    target = targets_for(model, "mse", 8).cuda()
    seen = []
    run = codegen.Kernel.__getitem__

    def record(kernel, grid):
        launch = run(kernel, grid)

        def recorded(*args, **kwargs):
            seen.append(any(kwargs.get(k) for k in ("X_DESC", "W_DESC", "DY_DESC", "A_DESC", "B_DESC")))
            return launch(*args, **kwargs)
        return recorded

    results = {}
    for used in (True, False):
        with tensor_descriptors(used), pytest.MonkeyPatch.context() as patch:
            patch.setattr(codegen.Kernel, "__getitem__", record)
            compiled = fg.compile(model, loss="mse", device="cuda", cuda_graphs=False)
            results[used] = compiled.loss_and_grads(feeds, target)
    assert any(seen) == (torch.cuda.get_device_capability() >= (9, 0))
    (loss_tma, grads_tma), (loss_ptr, grads_ptr) = results[True], results[False]
    assert abs(loss_tma - loss_ptr) <= 1e-5 * max(1.0, abs(loss_ptr))
    for name in grads_ptr:
        torch.testing.assert_close(grads_tma[name], grads_ptr[name], rtol=KERNEL_RTOL, atol=KERNEL_ATOL)
    oracle = model.to_torch().cuda()
    expected = torch_loss(model, oracle(*feeds), target, "mse")
    assert abs(loss_tma - float(expected)) <= 1e-4 * max(1.0, abs(float(expected)))


def test_nccl_data_parallel_at_world_size_one_equals_one_process(tmp_path):
    """The NCCL path (all-reduces outside the captured CUDA graph) at world size 1: the same steps as a
    trainer without it; the step times of both are printed (pytest -s) for the issue's record."""
    import time

    import torch.distributed as dist

    store = dist.FileStore(str(tmp_path / "store"), 1)
    dist.init_process_group("nccl", store=store, rank=0, world_size=1)
    try:
        x, y = torch.randn(64, 1, 8, 8, device="cuda"), torch.randint(0, 10, (64,), device="cuda")
        times, flats = {}, {}
        for distributed in (False, True):
            model = fg.zoo.lenet((1, 8, 8))
            model.init(0)
            trainer = fg.compile(model, loss="cross_entropy", optimizer=fg.optim.SGD(lr=0.1, momentum=0.9),
                                 distributed=distributed)
            for _ in range(3):
                trainer.train_step(x, y)
            torch.cuda.synchronize()
            start = time.perf_counter()
            for _ in range(20):
                trainer.train_step(x, y)
            torch.cuda.synchronize()
            times[distributed], flats[distributed] = (time.perf_counter() - start) / 20, trainer.flat.clone()
        torch.testing.assert_close(flats[True], flats[False], rtol=0, atol=1e-6)
        record("nccl_world_size_one", model="lenet_digits", batch=64, step_ms_alone=times[False] * 1e3,
               step_ms_with_nccl=times[True] * 1e3)
    finally:
        dist.destroy_process_group()


def test_mnist_demo_on_a_gpu_reaches_97_percent(tmp_path, capsys):
    """`fusegraph demo --task mnist` on a GPU: its GPU recipe (8 epochs, images shifted up to a pixel) to the
    issue's 97% held out; the accuracy and the training time recorded. Its own stage of bench/gpu_check.sh
    (`demo`: the tests stage leaves it out, for time)."""
    from fusegraph.cli import main

    assert main(["demo", "--task", "mnist", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    accuracy = float(out.split("held-out accuracy ")[-1].split("%")[0]) / 100
    seconds = float(out.split("trained 8 epochs in ")[1].split(" s")[0]) if "trained 8 epochs in " in out else None
    record("mnist_demo", accuracy=accuracy, training_seconds=seconds)
    assert "over 8 epochs" in out and "shifted" in out and accuracy >= 0.97
