"""The scan step: a time loop launching the body's kernels once per step.

Sequences are copied time-major once, so each step reads a contiguous slice; each step's outputs
are written straight into a time-major result, and carries alternate between two buffers so no
kernel reads the buffer it writes."""

from __future__ import annotations

import torch

from ..ir import Node
from ..kernels import LaunchCounter, Target, load_kernel
from ..kernels.memory import launch_copy, render_copy
from .plan import TORCH_DTYPE


class ScanStep:
    def __init__(self, node: Node, target: Target, counter: LaunchCounter) -> None:
        from .program import Program

        self.node = node
        self.target = target
        self.body = Program(node.attrs["body"], target, counter)
        self.copy = load_kernel(render_copy(), counter)

    def run(self, inputs: list[torch.Tensor], outputs: list[torch.Tensor]) -> None:
        attrs, body = self.node.attrs, self.body.graph
        num_carries, num_seqs = attrs["num_carries"], attrs["num_seqs"]
        seqs, consts = inputs[:num_seqs], inputs[num_seqs:]
        batch, time = seqs[0].shape[:2]
        device = seqs[0].device
        time_major = []
        for seq in seqs:
            buffer = torch.empty((time, batch, *seq.shape[2:]), dtype=seq.dtype, device=device)
            launch_copy(self.copy, self.target, seq.transpose(0, 1), buffer)
            time_major.append(buffer)
        per_step = [torch.empty((time, *v.type.concrete(batch)), dtype=TORCH_DTYPE[v.type.dtype], device=device)
                    for v in body.outputs[num_carries:]]
        carry_types = [v.type for v in body.inputs[:num_carries]]
        double = [[torch.zeros(t.concrete(batch), dtype=TORCH_DTYPE[t.dtype], device=device) for _ in range(2)]
                  for t in carry_types]
        carries = [pair[0] for pair in double]
        order = range(time - 1, -1, -1) if attrs.get("reverse", False) else range(time)
        for i, t in enumerate(order):
            bind: dict[str, torch.Tensor] = {}
            for j, v in enumerate(body.outputs[num_carries:]):
                bind.setdefault(v.name, per_step[j][t])
            for j, v in enumerate(body.outputs[:num_carries]):
                bind.setdefault(v.name, double[j][(i + 1) % 2])
            results = self.body.run([*carries, *(s[t] for s in time_major), *consts], self._params(consts), bind)
            carries = results[:num_carries]
        for carry, out in zip(carries, outputs[:num_carries]):
            launch_copy(self.copy, self.target, carry, out)
        for stacked, out in zip(per_step, outputs[num_carries:]):
            launch_copy(self.copy, self.target, stacked.transpose(0, 1), out)

    @staticmethod
    def _params(consts):
        return {}
