"""The interpreter's fast path (kernels/interpreter.py and the large interpreter tiles of
kernels/registry.py): every piece installed on this Triton, results unchanged bit for bit where only
dead work was removed, and against torch where the tiles (so the summation order) change; the small
tiles still give the multi-program and split-K launches the tests of those paths rely on."""

import threadpoolctl
import torch
import triton
import triton.language as tl
from triton.runtime import interpreter as triton_interpreter

import fusegraph as fg
from fusegraph.kernels import interpreter, recording_launches
from fusegraph.kernels.registry import interpreter_tiles
from tests.conftest import KERNEL_ATOL, KERNEL_RTOL, feeds_for, targets_for


def test_every_piece_is_installed_on_this_triton():
    assert interpreter.installed == ["overflow_checks_off", "helpers_run_in_the_launch_scope",
                                     "one_blas_thread_per_launch"]
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


def test_helpers_called_in_a_launch_do_not_patch_the_language_again(monkeypatch):
    """A conv input-gradient launch calls the layout helpers (kernels/layout.py) hundreds of times; the
    language is patched by the launch, never by them."""
    model = fg.Sequential([fg.Input((3, 8, 8)), fg.Conv2D(4, 3, name="first"), fg.Conv2D(4, 3, name="second"),
                           fg.Flatten(), fg.Dense(2)])
    feeds, target = feeds_for(model, 2), targets_for(model, "cross_entropy", 2)
    trainer = fg.compile(model, loss="cross_entropy")
    patches = []
    real = triton_interpreter._patch_lang
    monkeypatch.setattr(triton_interpreter, "_patch_lang", lambda fn: patches.append(fn.__name__) or real(fn))
    _, grads = trainer.loss_and_grads(feeds, target)
    assert "conv2d_bwd_input" in patches  # it ran, and patched the language once
    assert not [name for name in patches if name.startswith("_nchw")], patches
    oracle = model.to_torch()
    torch.nn.functional.cross_entropy(oracle(*feeds), target).backward()
    for name, param in oracle.fusegraph_parameters().items():
        torch.testing.assert_close(grads[name], param.grad, rtol=KERNEL_RTOL, atol=KERNEL_ATOL)


@triton.jit
def _copy_kernel(x_ptr, y_ptr, BLOCK: tl.constexpr):  # noqa: N803 (Triton tiles are CAPS)
    offsets = tl.arange(0, BLOCK)
    tl.store(y_ptr + offsets, tl.load(x_ptr + offsets))


def test_blas_runs_on_one_thread_inside_a_launch_only():
    seen = []
    hook = lambda *args, **kwargs: seen.extend(i["num_threads"] for i in threadpoolctl.threadpool_info()  # noqa: E731
                                               if i["user_api"] == "blas")
    _copy_kernel.add_pre_run_hook(hook)
    try:
        x = torch.arange(16.0)
        y = torch.empty(16)
        _copy_kernel[(1,)](x, y, BLOCK=16)
    finally:
        _copy_kernel.pre_run_hooks.remove(hook)
    assert torch.equal(x, y) and seen and set(seen) == {1}
    outside = [i["num_threads"] for i in threadpoolctl.threadpool_info() if i["user_api"] == "blas"]
    assert outside == [threadpoolctl.threadpool_info()[0]["num_threads"]] * len(outside)


def _grids(kind: str):
    """LeNet-28's training launches with the interpreter's `kind` tiles: each kernel's grid, and the
    gradients, which must match torch.autograd either way."""
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
    return {fn.__name__ if hasattr(fn, "__name__") else str(fn): grid for fn, grid, _, _ in launches
            if fn != "host"}, launches


def test_large_tiles_put_launches_in_one_program_and_small_tiles_still_split():
    large, _ = _grids("large")
    small, small_launches = _grids("small")
    assert large["conv2d_bwd_input"] == (1, 1) and large["conv2d_bwd_weight_bias_grad"][2] == 1
    programs = lambda grid: grid[0] * (grid[1] if len(grid) > 1 else 1) * (grid[2] if len(grid) > 2 else 1)  # noqa: E731
    assert programs(small["conv2d_bwd_input"]) > 1  # several row blocks
    splits = [grid[2] for fn, grid, _, _ in small_launches if fn != "host" and fn.__name__.startswith("conv2d_bwd_weight")]
    assert max(splits) == 2  # split-K: partial sums added atomically
