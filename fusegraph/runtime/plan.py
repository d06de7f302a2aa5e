"""Memory planning: which buffer each intermediate value lives in, reusing buffers whose values are dead.

Views (the schedule's view steps: a reshape, a dropout outside training) share their source's
buffer and extend its lifetime. Graph outputs get fresh tensors each call so callers may keep them;
inputs and parameters are never written. A buffer is handed to a new value only after the step of its last use, so no kernel
writes a buffer it is still reading."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from ..ir import Graph, TensorType
from ..ir.cost import nbytes
from ..ir.schedule import Schedule

TORCH_DTYPE = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16, "int64": torch.int64,
               "int8": torch.int8}


MEMORY_FORMAT = {"contiguous": torch.contiguous_format, "channels_last": torch.channels_last}


def in_layout(storage: torch.Tensor, t: TensorType, shape: tuple[int, ...]) -> torch.Tensor:
    """`storage` (one flat run of t's dtype) as a `shape` tensor stored in t's layout."""
    if not t.channels_last:
        return storage.view(shape)
    n, c, h, w = shape
    return storage.view(n, h, w, c).permute(0, 3, 1, 2)


def stored_as(tensor: torch.Tensor, t: TensorType) -> torch.Tensor:
    """`tensor` itself when it is stored in t's layout and dtype, else a copy that is (a parameter packed
    for a graph that stores it otherwise than the model does, a float32 batch fed to a half-precision
    graph)."""
    layout, dtype = MEMORY_FORMAT[t.layout], TORCH_DTYPE[t.dtype]
    if tensor.dtype == dtype and tensor.is_contiguous(memory_format=layout):
        return tensor
    return tensor.to(dtype, memory_format=layout, copy=True)  # NOTE: without copy, .to() may hand back tensor


@dataclass
class MemoryPlan:
    slot_of: dict[str, int] = field(default_factory=dict)
    slot_values: list[list[TensorType]] = field(default_factory=list)
    fresh: set[str] = field(default_factory=set)  # values allocated per call (graph outputs)

    def slot_bytes(self, batch: int) -> list[int]:
        return [max(nbytes(t, batch) for t in types) for types in self.slot_values]

    def peak_bytes(self, batch: int) -> int:
        """Bytes of intermediate buffers the plan holds at `batch` (graph outputs not included)."""
        return sum(self.slot_bytes(batch))

    def unplanned_bytes(self, batch: int, graph: Graph) -> int:
        """What the same values would take with one buffer each: the reuse baseline."""
        names = set(self.slot_of)
        return sum(nbytes(v.type, batch) for n in graph.nodes for v in n.outputs if v.name in names)


def plan_memory(graph: Graph, scheduled: Schedule) -> MemoryPlan:
    """Slots for every intermediate value. A value written into a slice of a later concat (see
    its schedule's `placed`) lives in the concat's buffer, which is therefore born with its first slice."""
    plan = MemoryPlan()
    root: dict[str, str] = {}
    arguments = {v.name for n in graph.nodes if n.op in ("input", "parameter") for v in n.outputs}
    steps = [s.node for s in scheduled.steps]
    views = {id(s.node) for s in scheduled.steps if s.kind == "view"}
    placed = scheduled.placed
    for node in steps:
        for v in node.outputs:
            if v.name in placed:
                root[v.name] = placed[v.name][0]
            elif id(node) in views:
                root[v.name] = root.get(node.inputs[0].name, node.inputs[0].name)
            else:
                root[v.name] = v.name
    types = {v.name: v.type for n in steps for v in n.outputs}
    born: dict[str, int] = {}
    for i, node in enumerate(steps):
        if id(node) not in views:
            for v in node.outputs:
                born.setdefault(root[v.name], i)
    plan.fresh = {root.get(v.name, v.name) for v in graph.outputs}
    last_use: dict[str, int] = {}
    for i, node in enumerate(steps):
        for v in (*node.inputs, *node.outputs):
            last_use[root.get(v.name, v.name)] = i
    free: list[int] = []
    for i in range(len(steps)):
        for name in [r for r, at in born.items() if at == i]:
            if name in plan.fresh or name in arguments:
                continue
            slot = _take(free, plan, types[name])
            plan.slot_of[name] = slot
            plan.slot_values[slot].append(types[name])
        for name, last in last_use.items():
            if last == i and name in plan.slot_of and plan.slot_of[name] not in free:
                free.append(plan.slot_of[name])
    return plan


def _take(free: list[int], plan: MemoryPlan, t: TensorType) -> int:
    """A free slot, preferring the one closest in size; a new slot if none is free."""
    if not free:
        plan.slot_values.append([])
        return len(plan.slot_values) - 1
    need = nbytes(t, 1)
    best = min(free, key=lambda s: abs(max(nbytes(x, 1) for x in plan.slot_values[s]) - need))
    free.remove(best)
    return best


