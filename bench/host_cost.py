"""Host cost per launch: what one kernel launch costs the CPU when nothing is captured in a CUDA graph.

Three figures, in microseconds per launch, on the same machine and in the same process:
  fusegraph     a zoo model called with cuda_graphs=False (its launches replayed one by one, as
                runtime/replay.py issues them), per kernel it launches
  bare triton   a warm, trivial @triton.jit kernel launched as `kernel[grid](...)`: Triton's own floor
  eager per op  the same model's torch eager forward, per ATen op it dispatches (views not counted)
plus, for information, bare launches of the very kernels fusegraph recorded (the arguments fusegraph
passes, without its runtime around them). Tiny inputs (batch 1) keep the GPU idle, so the host side is
what is timed. Goals: fusegraph <= 1.5x the bare Triton launch and <= eager's per-op cost."""

from __future__ import annotations

import time
from collections.abc import Callable

import torch
import triton
import triton.language as tl
from torch.utils._python_dispatch import TorchDispatchMode

import fusegraph as fg
import fusegraph.kernels  # noqa: F401  (chooses compile or interpret before the kernel below is defined)

GOAL_VS_BARE = 1.5
GOAL_VS_EAGER = 1.0


@triton.jit
def _touch_kernel(x_ptr, n, BLOCK: tl.constexpr):  # noqa: N803 (Triton tiles are CAPS)
    offsets = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    mask = offsets < n
    tl.store(x_ptr + offsets, tl.load(x_ptr + offsets, mask=mask) + 1.0, mask=mask)


class _CountOps(TorchDispatchMode):
    """Counts the ATen ops a call dispatches, views excluded (they launch nothing)."""

    def __init__(self) -> None:
        super().__init__()
        self.ops = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if not func.is_view:
            self.ops += 1
        return func(*args, **(kwargs or {}))


def _micros_per_call(call: Callable[[], object], calls: int) -> float:
    call()
    _synchronize()
    start = time.perf_counter()
    for _ in range(calls):
        call()
    _synchronize()
    return (time.perf_counter() - start) / calls * 1e6


def _synchronize() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def bare_triton_us(device: str, calls: int) -> float:
    """One launch of a warm trivial kernel (one program, 16 elements)."""
    x = torch.zeros(16, device=device)
    return _micros_per_call(lambda: _touch_kernel[(1,)](x, 16, BLOCK=16), calls)


def host_cost_per_launch(model: fg.Model, feeds: list[torch.Tensor], calls: int = 100) -> dict[str, float]:
    """The three figures (and fusegraph's own kernels launched bare) for one model at the feeds' batch."""
    from fusegraph.kernels import recording_launches

    device = feeds[0].device.type
    compiled = fg.compile(model, cuda_graphs=False)
    eager = model.to_torch().to(device).eval()
    with torch.no_grad():
        with recording_launches() as launches:  # the first call: it runs every launch through fusegraph
            compiled(feeds)
        kernels = [entry for entry in launches if entry[0] != "host"]

        def recorded_bare() -> None:
            for fn, grid, args, kwargs in kernels:
                fn[grid](*args, **kwargs)

        counter = _CountOps()
        with counter:
            eager(*feeds)
        fusegraph_us = _micros_per_call(lambda: compiled(feeds), calls) / len(kernels)
        eager_us = _micros_per_call(lambda: eager(*feeds), calls) / max(counter.ops, 1)
        recorded_us = _micros_per_call(recorded_bare, calls) / len(kernels)
    bare_us = bare_triton_us(device, calls * len(kernels))
    return {"launches_per_call": len(kernels), "eager_ops_per_call": counter.ops,
            "fusegraph_us_per_launch": fusegraph_us, "bare_triton_us_per_launch": bare_us,
            "eager_us_per_op": eager_us, "fusegraph_kernels_bare_us_per_launch": recorded_us,
            "vs_bare_triton": fusegraph_us / bare_us, "vs_eager_per_op": fusegraph_us / eager_us,
            "goals": {"vs_bare_triton": GOAL_VS_BARE, "vs_eager_per_op": GOAL_VS_EAGER}}
