"""A compiled graph: its schedule's steps (kernel launches, loops, views) and memory plan, run on tensors."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import torch

from ..ir import Graph, GraphError, Node, TensorType
from ..ir.cost import nbytes
from ..ir.schedule import schedule
from ..kernels import LaunchCounter, Target, generate, load_kernel
from ..kernels.shape import launch_copy, render_copy
from .plan import MEMORY_FORMAT, TORCH_DTYPE, in_layout, plan_memory, stored_as


class Program:
    """Runs `graph` as kernels. `run(feeds, params, bind)` may direct graph outputs into given tensors."""

    def __init__(self, graph: Graph, target: Target, counter: LaunchCounter) -> None:
        from .scan import ScanStep  # NOTE: scan bodies are Programs themselves

        self.graph = graph
        self.target = target
        self.schedule = schedule(graph)
        self.plan = plan_memory(graph, self.schedule)
        self.copy = load_kernel(render_copy(), counter)
        self.steps: list[tuple[Node, object]] = []
        self.after_step: dict[str, Callable[[], None]] = {}  # node name -> called once its kernels have run
        used = {v.name for n in graph.nodes for v in n.inputs} | {v.name for v in graph.outputs}
        self.placed = self.schedule.placed  # scan outputs written straight into their concat
        self.types = {v.name: v.type for n in graph.nodes for v in n.outputs}
        for step in self.schedule.launched:
            runner = ScanStep(step, target, counter, used) if step.kind == "loop" else generate(step.node, target, counter)
            self.steps.append((step.node, runner))
        self._arenas: dict[int, list[torch.Tensor]] = {}

    @property
    def kernels(self) -> list:
        """Every NodeKernel, scan bodies included, in launch order."""
        found = []
        for _, step in self.steps:
            found.extend(step.body.kernels if hasattr(step, "body") else [step])
        return found

    def _arena(self, batch: int, device: torch.device) -> list[torch.Tensor]:
        key = batch
        if key not in self._arenas:
            self._arenas[key] = [torch.empty(n, dtype=torch.uint8, device=device) for n in self.plan.slot_bytes(batch)]
        return self._arenas[key]

    def _buffer(self, t: TensorType, name: str, batch: int, arena, bind, device, env) -> torch.Tensor:
        if name in bind:
            return bind[name]
        if name in self.placed:
            whole, offset = self.placed[name]
            if whole not in env:
                env[whole] = self._buffer(self.types[whole], whole, batch, arena, bind, device, env)
            return env[whole].narrow(-1, offset, t.shape[-1])
        shape, dtype = t.concrete(batch), TORCH_DTYPE[t.dtype]
        if name in self.plan.slot_of:
            return in_layout(arena[self.plan.slot_of[name]][: nbytes(t, batch)].view(dtype), t, shape)
        return torch.empty(shape, dtype=dtype, device=device, memory_format=MEMORY_FORMAT[t.layout])

    def run(self, feeds: Sequence[torch.Tensor], params: Mapping[str, torch.Tensor],
            bind: Mapping[str, torch.Tensor] | None = None) -> list[torch.Tensor]:
        bind = bind or {}
        batch = next(f.shape[0] for f, v in zip(feeds, self.graph.inputs) if v.type.batched)
        device = feeds[0].device
        arena = self._arena(batch, device)
        env: dict[str, torch.Tensor] = dict(zip((v.name for v in self.graph.inputs), feeds))
        for node in self.graph.param_nodes:
            if node.name not in params:
                raise GraphError(f"parameter %{node.name} has no value")
            env[node.name] = stored_as(params[node.name], node.outputs[0].type)
        steps = iter(self.steps)
        for scheduled in self.schedule.steps:
            node = scheduled.node
            inputs = [env[v.name] for v in node.inputs]
            if scheduled.kind == "view":
                env[node.outputs[0].name] = inputs[0].view(node.outputs[0].type.concrete(batch))
                continue
            if scheduled.kind == "assembled":  # its inputs were written into it
                continue
            _, step = next(steps)
            outputs = [self._buffer(v.type, v.name, batch, arena, bind, device, env) for v in node.outputs]
            step.run(inputs, outputs)
            env.update(zip((v.name for v in node.outputs), outputs))
            after = self.after_step.get(node.name)
            if after is not None:  # the runtime's own hook (a data-parallel gradient bucket going out)
                after()
        results = []
        for v in self.graph.outputs:
            value = env[v.name]
            if v.name in bind and value.data_ptr() != bind[v.name].data_ptr():
                # an output that is an input or a view: no kernel wrote it where it was asked for
                launch_copy(self.copy, self.target, value, bind[v.name])
                value = bind[v.name]
            results.append(value)
        return results
