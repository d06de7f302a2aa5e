"""The interpreter's fast path (kernels/interpreter.py and the large interpreter tiles of
kernels/target.py): every piece installed on this Triton, results unchanged bit for bit where only
dead work was removed, and against torch where the tiles (so the summation order) change; the small
tiles still give the multi-program and split-K launches the tests of those paths rely on."""

import threadpoolctl
import torch
import triton
import triton.language as tl
from triton.runtime import interpreter as triton_interpreter

import fusegraph as fg
from fusegraph.kernels import interpreter, recording_launches
from fusegraph.kernels.target import interpreter_tiles
from tests.conftest import KERNEL_ATOL, KERNEL_RTOL, feeds_for, targets_for


def test_every_piece_is_installed_on_this_triton():
    assert interpreter.installed == ["overflow_checks_off", "language_patched_once", "one_blas_thread_per_launch",
                                     "numpy_quiet_in_launches"]
    assert not triton_interpreter.interpreter_builder.options.sanitize_overflow


def _forward_and_gradients(model, feeds, target):
    trainer = fg.compile(model, loss="cross_entropy")
    return [trainer(feeds), *trainer.loss_and_grads(feeds, target)[1].values()]


def test_overflow_checks_off_changes_no_bit():
    """The checks built values nothing read: with them on (as Triton ships), the same bits come out."""
    model = fg.zoo.lenet_digits()
    feeds, target = feeds_for(model, 4), targets_for(model, "cross_entropy", 4)
    fast = _forward_and_gradients(model, feeds, target)
    builder = triton_interpreter.interpreter_builder
    saved = builder.options
    builder.options = type(saved)(**{**saved.__dict__, "sanitize_overflow": True})
    try:
        checked = _forward_and_gradients(model, feeds, target)
    finally:
        builder.options = saved
    assert all(torch.equal(a, b) for a, b in zip(fast, checked, strict=True))


def test_the_language_is_patched_once_not_per_launch_or_helper_call():
    """A training step's launches (a conv input gradient calls the layout helpers hundreds of times) patch
    triton.language for the interpreter once for good; later steps patch nothing, and stay right."""
    model = fg.Sequential([fg.Input((3, 8, 8)), fg.Conv2D(4, 3, name="first"), fg.Conv2D(4, 3, name="second"),
                           fg.Flatten(), fg.Dense(2)])
    feeds, target = feeds_for(model, 2), targets_for(model, "cross_entropy", 2)
    trainer = fg.compile(model, loss="cross_entropy")
    trainer.loss_and_grads(feeds, target)
    before = len(interpreter.patches)
    _, grads = trainer.loss_and_grads(feeds, target)
    assert len(interpreter.patches) == before and 1 <= before <= 2  # tl, and tl.core for Triton's own helpers
    oracle = model.to_torch()
    torch.nn.functional.cross_entropy(oracle(*feeds), target).backward()
    for name, param in oracle.fusegraph_parameters().items():
        torch.testing.assert_close(grads[name], param.grad, rtol=KERNEL_RTOL, atol=KERNEL_ATOL)


@triton.jit
def _copy_kernel(x_ptr, y_ptr, BLOCK: tl.constexpr):  # noqa: N803 (Triton tiles are CAPS)
    offsets = tl.arange(0, BLOCK)
    tl.store(y_ptr + offsets, tl.load(x_ptr + offsets))


def numpy_blas_threads() -> list[int]:
    return [i["num_threads"] for i in threadpoolctl.threadpool_info() if i["filepath"] in interpreter.blas_libraries]


def test_blas_runs_on_one_thread_inside_a_launch_only():
    """numpy's BLAS (what the interpreter's tl.dot calls), loaded when fusegraph was imported."""
    seen, before = [], numpy_blas_threads()
    assert before and interpreter.blas_libraries
    hook = lambda *args, **kwargs: seen.extend(numpy_blas_threads())  # noqa: E731
    _copy_kernel.add_pre_run_hook(hook)
    try:
        x = torch.arange(16.0)
        y = torch.empty(16)
        _copy_kernel[(1,)](x, y, BLOCK=16)
    finally:
        _copy_kernel.pre_run_hooks.remove(hook)
    assert torch.equal(x, y) and seen and set(seen) == {1}
    assert numpy_blas_threads() == before  # as they were, outside the launch


def _programs(kind: str) -> dict[str, list[int]]:
    """A small CNN's training launches with the interpreter's `kind` tiles: each kernel's programs per
    launch (split-K programs included), and the gradients, which must match torch.autograd either way."""
    model = fg.Sequential([fg.Input((1, 16, 16)), fg.Conv2D(6, 5, padding="same", activation="relu"),
                           fg.MaxPool2D(2), fg.Conv2D(16, 5, padding="same", activation="relu"), fg.MaxPool2D(2),
                           fg.Flatten(), fg.Dense(10)])
    model.init(0)
    feeds, target = feeds_for(model, 32), targets_for(model, "cross_entropy", 32)
    with interpreter_tiles(kind), recording_launches() as launches:
        loss, grads = fg.compile(model, loss="cross_entropy").loss_and_grads(feeds, target)
    oracle = model.to_torch()
    torch.nn.functional.cross_entropy(oracle(*feeds), target).backward()
    for name, param in oracle.fusegraph_parameters().items():
        torch.testing.assert_close(grads[name], param.grad, rtol=KERNEL_RTOL, atol=KERNEL_ATOL)
    programs: dict[str, list[int]] = {}
    for fn, grid, _, _ in launches:
        programs.setdefault(fn.__name__, []).append(grid[0] * (grid[1] if len(grid) > 1 else 1) *
                                                    (grid[2] if len(grid) > 2 else 1))
    return programs


def test_large_tiles_put_launches_in_one_program_and_small_tiles_still_split():
    large, small = _programs("large"), _programs("small")
    assert large["relu_bwd_max_pool2d_bwd_idx"] == [1, 1] and max(small["relu_bwd_max_pool2d_bwd_idx"]) >= 3
    assert large["conv2d_bwd_weight_bias_grad"] == [1, 1]  # one program each: no split reduction
    assert all(p % 2 == 0 for p in small["conv2d_bwd_weight_bias_grad"])  # split-K in 2: partial sums added atomically
    assert sum(small["conv2d_bwd_input"]) > 1 and sum(large["conv2d_bwd_input"]) <= sum(small["conv2d_bwd_input"])


def test_a_kernel_computing_inf_warns_nothing_and_keeps_the_value():
    """A float16 dense whose sums overflow float16 when stored: inf, as on a GPU, and no numpy warning."""
    import warnings

    x = fg.Input((2,))
    model = fg.Model(x, fg.Dense(1, use_bias=False)(x))
    model.load_params({"dense.weight": torch.full((1, 2), 1000.0)})
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # NOTE: a numpy warning would fail the call
        out = fg.compile(model, precision="fp16")(torch.full((1, 2), 1000.0))
    assert out.dtype == torch.float16 and out.item() == float("inf")


_TRITON_FIRST = """
import torch._dynamo  # imports triton before fusegraph can choose to interpret
from torch import nn
import fusegraph as fg

torch.manual_seed(0)
net = nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Dropout(0.5), nn.Linear(8, 3), nn.Softmax(dim=1))
x = torch.randn(4, 6)
trainer = fg.compile(fg.from_torch(net, x), loss="mse")
value, grads = trainer.loss_and_grads(x, torch.rand(4, 3))  # dropout draws with tl.rand, softmax reduces
assert set(grads) and all(bool(torch.isfinite(g).all()) for g in grads.values())
with torch.no_grad():
    got = torch.compile(net.eval(), backend="fusegraph")(x)
    torch.testing.assert_close(got, net(x), rtol=1e-4, atol=1e-5)
print("ok")
"""


def test_kernels_interpret_when_triton_was_imported_first(tmp_path):
    """torch.compile imports triton before the backend imports fusegraph: Triton's language helpers were
    then defined for compiling, and fusegraph defines them again for the interpreter (kernels/triton_env.py);
    on a machine without a GPU and without TRITON_INTERPRET set, as a user's laptop is."""
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    env.update(CUDA_VISIBLE_DEVICES="", PYTHONPATH=root)
    script = tmp_path / "triton_first.py"
    script.write_text(_TRITON_FIRST)
    done = subprocess.run([sys.executable, str(script)], env=env, capture_output=True, text=True, timeout=300,
                          cwd=root)
    assert done.returncode == 0 and done.stdout.strip().endswith("ok"), done.stderr[-3000:]
