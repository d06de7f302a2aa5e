"""The scan step: a time loop launching the body's kernels once per step.

When every body kernel reads and writes strided rows (a matmul-anchored cell), each step reads
`seq[:, t]` in place and writes its per-step outputs straight into `out[:, t]`: no copies, one
launch per step for a fused cell. Otherwise sequences are copied time-major first. Carries start
from a cached zero state that is never written and alternate between two buffers, so no kernel
reads the buffer it writes; the last step writes each used final carry straight into its output."""

from __future__ import annotations

import torch

from ..ir.ops.scan import initial_carry_count
from ..ir.schedule import Step
from ..kernels import LaunchCounter, Target, load_kernel
from ..kernels.shape import launch_copy, render_copy
from .plan import TORCH_DTYPE


class ScanStep:
    def __init__(self, step: Step, target: Target, counter: LaunchCounter, used: set[str]) -> None:
        from .program import Program

        self.node = node = step.node
        self.target = target
        self.body = Program(node.attrs["body"], target, counter)
        self.copy = load_kernel(render_copy(), counter)
        self.used = [v.name in used for v in node.outputs]
        self.strided = step.strided
        self._state: dict[tuple, list] = {}

    def _carry_buffers(self, batch: int, device) -> list[list[torch.Tensor]]:
        """Per carry: [zero state, buffer A, buffer B], cached per batch size."""
        key = (batch, str(device))
        if key not in self._state:
            types = [v.type for v in self.body.graph.inputs[: self.node.attrs["num_carries"]]]
            self._state[key] = [[torch.zeros(t.concrete(batch), dtype=TORCH_DTYPE[t.dtype], device=device)
                                 for _ in range(3)] for t in types]
        return self._state[key]

    def run(self, inputs: list[torch.Tensor], outputs: list[torch.Tensor]) -> None:
        attrs, body = self.node.attrs, self.body.graph
        num_carries, num_seqs = attrs["num_carries"], attrs["num_seqs"]
        inits = inputs[:initial_carry_count(attrs)]
        inputs = inputs[len(inits):]
        seqs, consts = inputs[:num_seqs], inputs[num_seqs:]
        batch, time = seqs[0].shape[:2]
        device = seqs[0].device
        carry_outputs, step_outputs = body.outputs[:num_carries], body.outputs[num_carries:]
        used_steps = self.used[num_carries:]
        if self.strided:
            steps_in = seqs
            step_targets = [out if used else None for out, used in zip(outputs[num_carries:], used_steps)]
        else:
            steps_in = [self._time_major(seq) for seq in seqs]
            step_targets = [torch.empty((time, *v.type.concrete(batch)), dtype=TORCH_DTYPE[v.type.dtype],
                                        device=device) if used else None for v, used in zip(step_outputs, used_steps)]
        buffers = self._carry_buffers(batch, device)
        carries = list(inits) or [b[0] for b in buffers]  # NOTE: never written: outputs alternate in A / B
        order = range(time - 1, -1, -1) if attrs.get("reverse", False) else range(time)
        for i, t in enumerate(order):
            bind: dict[str, torch.Tensor] = {}
            for value, target in zip(step_outputs, step_targets):
                if target is not None:
                    bind.setdefault(value.name, target[:, t] if self.strided else target[t])
            last = i == time - 1
            for j, value in enumerate(carry_outputs):
                if last and self.used[j]:
                    bind.setdefault(value.name, outputs[j])
                bind.setdefault(value.name, buffers[j][1 + i % 2])
            steps = [s[:, t] for s in steps_in] if self.strided else [s[t] for s in steps_in]
            results = self.body.run([*carries, *steps, *consts], {}, bind)
            carries = results[:num_carries]
            for target, result in zip(step_targets, results[num_carries:]):
                # a value listed twice as a per-step output was written to its first target only
                slot = None if target is None else (target[:, t] if self.strided else target[t])
                if slot is not None and slot.data_ptr() != result.data_ptr():
                    launch_copy(self.copy, self.target, result, slot)
        for j, (carry, out) in enumerate(zip(carries, outputs[:num_carries])):
            if self.used[j] and carry.data_ptr() != out.data_ptr():
                launch_copy(self.copy, self.target, carry, out)
        if not self.strided:
            for stacked, out in zip(step_targets, outputs[num_carries:]):
                if stacked is not None:
                    launch_copy(self.copy, self.target, stacked.transpose(0, 1), out)

    def _time_major(self, seq: torch.Tensor) -> torch.Tensor:
        buffer = torch.empty((seq.shape[1], seq.shape[0], *seq.shape[2:]), dtype=seq.dtype, device=seq.device)
        launch_copy(self.copy, self.target, seq.transpose(0, 1), buffer)
        return buffer
