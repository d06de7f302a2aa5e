"""Launch replay: a program's launches recorded once per input signature, then issued again directly.

Launching kernel by kernel (no CUDA graph) costs host time per launch: walking the graph, finding
buffers, computing grids and argument lists. None of it changes between calls with the same input
signature, so the first such call records every launch (jit function, grid, arguments) and the
in-place torch ops between them (zero fills, copies); later calls copy their inputs into the recorded
input tensors and issue the same launches, as bare Triton launches. A torch op during recording that
makes a new value each call (anything but views, allocations and those in-place ops) would leave a
launch reading a stale tensor, so that signature runs normally instead, every call."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch.utils._python_dispatch import TorchDispatchMode

from ..kernels import LaunchCounter, inside_launch, recording_launches

aten = torch.ops.aten
# NOTE: ops that only describe memory (views) or allocate it: recorded tensors keep that memory alive
SHAPING = {aten.view, aten._unsafe_view, aten.slice, aten.select, aten.permute, aten.transpose, aten.t,
           aten.unsqueeze, aten.squeeze, aten.expand, aten.as_strided, aten.alias, aten.narrow, aten.detach,
           aten.empty, aten.empty_strided, aten.empty_like, aten.unfold, aten.split, aten.unbind, aten.diagonal}
IN_PLACE = {aten.zero_, aten.fill_, aten.copy_}
ALLOCATE_ZEROED = {aten.zeros, aten.zeros_like}


class _HostOps(TorchDispatchMode):
    """Lists the in-place torch ops a run makes outside kernel launches, in order, and notices any other."""

    def __init__(self, launches: list) -> None:
        super().__init__()
        self.launches = launches
        self.refused: str | None = None

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        result = func(*args, **kwargs)
        if inside_launch():  # Triton's interpreter moving a launch's arguments: part of the launch
            return result
        packet = func.overloadpacket
        if packet in IN_PLACE:
            self.launches.append(("host", func, args, kwargs))
        elif packet in ALLOCATE_ZEROED:
            self.launches.append(("host", aten.zero_.default, (result,), {}))  # kernels may accumulate into it
        elif packet not in SHAPING and self.refused is None:
            self.refused = str(func)
        return result


class Recorded:
    """One signature's launches: static inputs, the ops in order, and the outputs they write."""

    def __init__(self, run: Callable[[list[torch.Tensor]], list[torch.Tensor]], feeds: Sequence[torch.Tensor]) -> None:
        self.inputs = [f.clone() for f in feeds]
        with recording_launches() as launches:
            mode = _HostOps(launches)
            with mode:
                self.outputs = run(self.inputs)
        self.refused = mode.refused
        # a launch is listed as (jit function, grid, args, kwargs), a host op as ("host", op, args, kwargs)
        self.ops = [(entry[1], entry[2], entry[3]) if entry[0] == "host" else (entry[0][entry[1]], entry[2], entry[3])
                    for entry in launches]
        self.launches = sum(1 for entry in launches if entry[0] != "host")

    def replay(self, feeds: Sequence[torch.Tensor], counter: LaunchCounter) -> list[torch.Tensor]:
        for static, tensor in zip(self.inputs, feeds):
            static.copy_(tensor)
        for call, args, kwargs in self.ops:
            call(*args, **kwargs)
        counter.count += self.launches
        return self.outputs
