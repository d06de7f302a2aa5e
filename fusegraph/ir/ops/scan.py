"""scan: a loop over time whose body is a sub-graph (the recurrent cell).

Inputs:  `num_seqs` sequences (batch, time, ...) then constants (the cell's weights).
Body:    inputs (carries..., one time step of each sequence..., constants...);
         outputs (new carries..., per-step outputs...).
Outputs: the carries after the last step, then each per-step output stacked over time.
Carries start at zero, like Keras and PyTorch without an initial state. With `reverse=True` the
loop runs from the last step to the first and per-step outputs stay at their time index.
"""

from __future__ import annotations

import torch

from ..errors import GraphError
from ..types import BATCH
from .base import OpDef, register_op, shape_str


def _scan_rule(types, attrs):
    body = attrs["body"]
    num_carries, num_seqs = attrs["num_carries"], attrs["num_seqs"]
    body_inputs = [v.type for v in body.inputs]
    body_outputs = [v.type for v in body.outputs]
    if num_seqs < 1 or len(types) < num_seqs:
        raise GraphError(f"scan needs at least one sequence input, got {len(types)} inputs for num_seqs={num_seqs}")
    if len(body_inputs) != num_carries + len(types):
        raise GraphError(
            f"scan body takes {len(body_inputs)} inputs but the scan provides {num_carries} carries + {len(types)} inputs"
        )
    seqs, consts = types[:num_seqs], types[num_seqs:]
    for seq in seqs:
        if seq.rank < 3 or not seq.batched:
            raise GraphError(
                f"an RNN needs a sequence (batch, time, features), got {shape_str(seq)}; "
                "feed it the output of an Embedding, an RNN with return_sequences=True, or an Input((time, features))"
            )
    steps = {seq.shape[1] for seq in seqs}
    if len(steps) != 1:
        raise GraphError(f"scan sequences have different lengths {sorted(steps)}")
    carries = body_inputs[:num_carries]
    for carry in carries:
        if not carry.batched:
            raise GraphError(f"scan carry {carry} must have the batch dimension first")
    for seq, step in zip(seqs, body_inputs[num_carries:num_carries + num_seqs]):
        expected = seq.with_shape((seq.shape[0], *seq.shape[2:]))
        if step != expected:
            raise GraphError(f"scan body takes a step of type {step} but the sequence {seq} gives {expected}")
    for const, param in zip(consts, body_inputs[num_carries + num_seqs:]):
        if const != param:
            raise GraphError(f"scan body expects {param} but is given {const}")
    if len(body_outputs) < num_carries or body_outputs[:num_carries] != carries:
        raise GraphError(
            f"scan body must return its carries {[str(c) for c in carries]} unchanged in type first, "
            f"got {[str(t) for t in body_outputs[:num_carries]]}"
        )
    (time,) = steps
    per_step = [t.with_shape((BATCH, time, *t.shape[1:])) for t in body_outputs[num_carries:]]
    return [*carries, *per_step]


def _scan_reference(inputs, attrs, ctx):
    body = attrs["body"]
    num_carries, num_seqs = attrs["num_carries"], attrs["num_seqs"]
    seqs, consts = inputs[:num_seqs], inputs[num_seqs:]
    batch, time = seqs[0].shape[:2]
    carries = [
        torch.zeros((batch, *v.type.shape[1:]), dtype=seqs[0].dtype if v.type.is_float else torch.int64,
                    device=seqs[0].device)
        for v in body.inputs[:num_carries]
    ]
    outputs: list[list[torch.Tensor | None]] = [[None] * time for _ in body.outputs[num_carries:]]
    steps = range(time - 1, -1, -1) if attrs.get("reverse", False) else range(time)
    for t in steps:
        results = ctx.run_graph(body, [*carries, *(s[:, t] for s in seqs), *consts])
        carries = results[:num_carries]
        for slot, y in zip(outputs, results[num_carries:]):
            slot[t] = y
    return [*carries, *(torch.stack(slot, dim=1) for slot in outputs)]  # type: ignore[arg-type]


register_op(OpDef("scan", None, _scan_rule, _scan_reference, "attrs body, num_carries, num_seqs, reverse"))
