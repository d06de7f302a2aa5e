"""CUDA graph replay: a program's launches captured once per input signature, then replayed as one.

Small models are launch-bound: a LeNet forward is 5 kernels of a few microseconds each, an LSTM
layer one launch per time step, and each launch costs tens of microseconds of Python and driver
work. A captured graph replays all of them for one launch's cost. What a capture needs: every
buffer at a fixed address (the memory plan's arena, scan carries and trainer buffers are cached;
inputs are copied into static tensors; outputs come from the graph's own pool), no host sync
inside the run, and no argument that changes between calls (random kernels read the step number
their seed changes with from a device scalar, which the Trainer writes before each replay)."""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence

import torch

from ..kernels import LaunchCounter
from .replay import Recorded

Run = Callable[[list[torch.Tensor]], list[torch.Tensor]]
SIGNATURES = 8  # input signatures a runner keeps a captured graph or a launch recording for


class Captured:
    """One signature's graph: static inputs, the graph, and the outputs it writes on each replay."""

    def __init__(self, run: Run, feeds: Sequence[torch.Tensor], counter: LaunchCounter) -> None:
        self.inputs = [f.clone() for f in feeds]
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            run(self.inputs)  # NOTE: warm-up outside the capture: Triton compiles, buffers get allocated
        torch.cuda.current_stream().wait_stream(side)
        self.graph = torch.cuda.CUDAGraph()
        start = counter.count
        with torch.cuda.graph(self.graph):
            self.outputs = run(self.inputs)
        self.launches = counter.count - start

    def replay(self, feeds: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        for static, tensor in zip(self.inputs, feeds):
            static.copy_(tensor)
        self.graph.replay()
        return self.outputs


class GraphRunner:
    """Runs `run(feeds)` through a captured graph per input signature (shapes and dtypes), up to
    `limit` signatures (0: never); past that, or where capture fails, it launches kernel by kernel,
    replaying the launches recorded on the first call with each signature (runtime/replay.py; up to
    SIGNATURES of them, where the recording holds). Without `copy`, replayed outputs are the recording's
    own, overwritten by the next call."""

    def __init__(self, run: Run, counter: LaunchCounter, limit: int = SIGNATURES) -> None:
        self.run = run
        self.counter = counter
        self.limit = limit
        self.captured: dict[tuple, Captured] = {}
        self.recorded: dict[tuple, Recorded | None] = {}  # None: the recording did not hold; run normally
        self.failed: str | None = None
        self.last_launches = 0

    def __call__(self, feeds: Sequence[torch.Tensor], copy: bool = False) -> list[torch.Tensor]:
        """The outputs; with `copy`, tensors of the caller's own rather than the graph's."""
        signature = tuple((tuple(f.shape), f.dtype) for f in feeds)
        entry = self.captured.get(signature)
        if entry is None and self.failed is None and len(self.captured) < self.limit:
            entry = self._capture(signature, feeds)
        if entry is None:
            return self._launch(signature, feeds, copy)
        self.last_launches = entry.launches
        outputs = entry.replay(feeds)
        return [o.clone() for o in outputs] if copy else outputs

    def _launch(self, signature: tuple, feeds: Sequence[torch.Tensor], copy: bool) -> list[torch.Tensor]:
        start = self.counter.count
        recorded = self.recorded.get(signature)
        if recorded is not None:
            outputs = recorded.replay(feeds, self.counter)
        elif signature not in self.recorded and len(self.recorded) < SIGNATURES:
            recorded = Recorded(self.run, feeds)
            self.recorded[signature] = recorded if recorded.refused is None else None
            outputs = recorded.outputs
        else:
            outputs = self.run(list(feeds))
        self.last_launches = self.counter.count - start
        return [o.clone() for o in outputs] if copy and recorded is not None else outputs

    def _capture(self, signature: tuple, feeds: Sequence[torch.Tensor]) -> Captured | None:
        try:
            entry = Captured(self.run, feeds, self.counter)
        except RuntimeError as error:  # NOTE: a driver that refuses capture still gets right answers
            torch.cuda.synchronize()
            self.failed = str(error).splitlines()[0]
            warnings.warn(f"fusegraph: CUDA graph capture failed ({self.failed}); launching kernels one by one",
                          RuntimeWarning, stacklevel=3)
            return None
        self.captured[signature] = entry
        return entry

