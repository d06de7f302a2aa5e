"""scan: a loop over time whose body is a sub-graph (the recurrent cell).

Inputs:  with `init_carries`, the initial carries first; then `num_seqs` sequences (batch, time,
         ...), then constants (the cell's weights).
Body:    inputs (carries..., one time step of each sequence..., constants...);
         outputs (new carries..., per-step outputs...).
Outputs: the carries after the last step, then each per-step output stacked over time.
Without `init_carries`, carries start at zero, like Keras and PyTorch without an initial state. With `reverse=True` the
loop runs from the last step to the first and per-step outputs stay at their time index.
"""

from __future__ import annotations

import torch

from ..errors import GraphError
from ..types import BATCH
from .base import OpDef, register_op, set_traits, set_vjp, shape_str


def _scan_rule(types, attrs):
    body = attrs["body"]
    num_carries, num_seqs = attrs["num_carries"], attrs["num_seqs"]
    body_inputs = [v.type for v in body.inputs]
    body_outputs = [v.type for v in body.outputs]
    inits = list(types[:num_carries]) if attrs.get("init_carries", False) else []
    types = types[len(inits):]
    if num_seqs < 1 or len(types) < num_seqs:
        raise GraphError(f"scan needs at least one sequence input, got {len(types)} inputs for num_seqs={num_seqs}")
    if len(body_inputs) != num_carries + len(types):
        raise GraphError(
            f"scan body takes {len(body_inputs)} inputs but the scan provides {num_carries} carries + {len(types)} inputs"
        )
    if inits and inits != body_inputs[:num_carries]:
        raise GraphError(f"initial carries {[str(t) for t in inits]} do not match the body's "
                         f"{[str(t) for t in body_inputs[:num_carries]]}")
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
    inits = list(inputs[:num_carries]) if attrs.get("init_carries", False) else []
    inputs = inputs[len(inits):]
    seqs, consts = inputs[:num_seqs], inputs[num_seqs:]
    batch, time = seqs[0].shape[:2]
    carries = inits or [
        torch.zeros((batch, *v.type.shape[1:]), dtype=seqs[0].dtype, device=seqs[0].device)
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


register_op(OpDef("scan", None, _scan_rule, _scan_reference,
                  "attrs body, num_carries, num_seqs, reverse, init_carries"))


def initial_carry_count(attrs) -> int:
    """How many of a scan's inputs are initial carries (the rest: sequences, then constants)."""
    return attrs["num_carries"] if attrs.get("init_carries", False) else 0


def scan_steps(node) -> int:
    """The number of time steps a scan node runs."""
    return node.inputs[initial_carry_count(node.attrs)].type.shape[1]


# -- time_shift: the carries each step of a scan started from ------------------------------------
def _time_shift_rule(types, attrs):
    (seq,) = types
    if seq.rank < 3 or not seq.batched:
        raise GraphError(f"time_shift takes a sequence (batch, time, ...), got {shape_str(seq)}")
    return [seq]


def _time_shift_reference(inputs, attrs, ctx):
    seq = inputs[0]
    zero = torch.zeros_like(seq[:, :1])
    if attrs.get("reverse", False):
        return [torch.cat([seq[:, 1:], zero], dim=1)]
    return [torch.cat([zero, seq[:, :-1]], dim=1)]


register_op(OpDef("time_shift", 1, _time_shift_rule, _time_shift_reference,
                  "out[:, t] = seq[:, t - 1] (seq[:, t + 1] with reverse), zero where there is none"))


# -- backpropagation through time -----------------------------------------------------------------
def _gradient_terms(producers, value) -> list:
    """A loop constant's per-step gradient as a sum of matmul_tn / bias_grad terms of per-step values,
    so the sum over time becomes one op over the stacked sequences after the loop."""
    node = producers.get(value.name)
    if node is not None and node.op == "add":
        return _gradient_terms(producers, node.inputs[0]) + _gradient_terms(producers, node.inputs[1])
    if node is not None and node.op in ("matmul_tn", "bias_grad"):
        return [node]
    raise GraphError(f"the gradient of a scan constant is computed by {node.op if node else 'an input'}, which "
                     "cannot be summed over time after the loop (only matmul and bias_add use constants in cells)")


def _scan_vjp(b, node, grads, needs):
    """The gradient of a scan is a scan too, run the other way: its cell is the VJP of the forward cell,
    recomputed from the carries the forward stored (`carry_steps`); it carries the carries' gradients
    and emits each step's input gradients, and a loop constant's gradient (a weight's) is summed over
    the steps after it (`_constant_gradients`). The carries it ends with are the gradients of the
    initial carries, where the scan was given them."""
    attrs, body = node.attrs, node.attrs["body"]
    carries, num_seqs = attrs["num_carries"], attrs["num_seqs"]
    if "carry_steps" not in attrs:
        raise GraphError(f"{node.where}: only scans that expose their carries at every step can be differentiated")
    first = initial_carry_count(attrs)
    starts = node.inputs[:first] or [None] * carries
    seqs, consts = node.inputs[first:first + num_seqs], node.inputs[first + num_seqs:]
    needs = needs[first:]
    reverse = attrs.get("reverse", False)
    step_grads = grads[carries:]
    with_grad = [k for k, d in enumerate(step_grads) if d is not None]
    carry_in = [_carries_started_from(b, node.outputs[carries + k], start, reverse)
                for k, start in zip(attrs["carry_steps"], starts)]
    cell = _GradientCell(b, body, carries, num_seqs, with_grad, needs)
    inits = [d if d is not None else b.op("zeros", [v]) for d, v in zip(grads[:carries], node.outputs[:carries])]
    dy_seqs = [step_grads[k] for k in with_grad]
    outs = b.op("scan", [*inits, *carry_in, *seqs, *dy_seqs, *consts], body=cell.graph, num_carries=carries,
                num_seqs=carries + num_seqs + len(dy_seqs), reverse=not reverse, init_carries=True)
    stacked = list(outs[carries:]) if isinstance(outs, tuple) else []
    initial = list(outs[:carries]) if first else []  # NOTE: outs is a tuple: a scan has a carry and a sequence
    result = [stacked[cell.seq_slots[i]] if i in cell.seq_slots else None for i in range(num_seqs)]
    return initial + result + [_constant_gradients(b, cell.const_terms.get(i, []), stacked) for i in range(len(consts))]


def _carries_started_from(b, steps, start, reverse: bool):
    """The carry each step started from, (batch, time, ...): the carries after each step (`steps`) shifted
    one step, the first step's being `start` (zero where the scan was given none)."""
    if start is None:
        return b.op("time_shift", [steps], reverse=reverse)
    time = steps.type.shape[1]
    first = b.op("reshape", [start], shape=(start.type.shape[0], 1, *start.type.shape[1:]))
    if time == 1:
        return first
    sizes = (1, time - 1) if reverse else (time - 1, 1)
    earlier, later = b.op("split", [steps], axis=1, sizes=sizes)
    return b.op("concat", [later, first] if reverse else [first, earlier], axis=1)

class _GradientCell:
    """The backward scan's cell: inputs (carry gradients, stored carries, sequences, step gradients,
    constants), the forward cell recomputed on them, its VJP; outputs the new carry gradients, then one
    per-step output per value a gradient needs (`seq_slots`: a sequence's gradient; `const_terms`: each
    constant's gradient as terms over per-step outputs)."""

    def __init__(self, b, body, carries: int, num_seqs: int, with_grad: list[int], needs: list[bool]) -> None:
        inner = b.builder(f"d_{body.name}")
        step_values = body.outputs[carries:]
        d_carry = [inner.input(f"d_{v.name}", v.type) for v in body.inputs[:carries]]
        c_in = [inner.input(f"in_{v.name}", v.type) for v in body.inputs[:carries]]
        x_in = [inner.input(f"in_{v.name}", v.type) for v in body.inputs[carries:carries + num_seqs]]
        dy_in = [inner.input(f"d_step{k}", step_values[k].type) for k in with_grad]
        const_in = [inner.input(f"in_{v.name}", v.type) for v in body.inputs[carries + num_seqs:]]
        mapping = {v.name: new for v, new in zip(body.inputs, [*c_in, *x_in, *const_in])}
        recomputed = [inner.copy_of(n, mapping) for n in body.compute_nodes]  # its internals, recomputed
        seeds: dict = {}
        for value, grad in [*zip(body.outputs[:carries], d_carry), *((step_values[k], d) for k, d in zip(with_grad, dy_in))]:
            name = mapping.get(value.name, value).name
            seeds[name] = inner.op("add", [seeds[name], grad], name="d_sum") if name in seeds else grad
        wanted = {v.name for v in c_in}
        wanted |= {v.name for v, need in zip(x_in, needs[:num_seqs]) if need}
        wanted |= {v.name for v, need in zip(const_in, needs[num_seqs:]) if need}
        inner_grads = b.differentiate(inner, recomputed, seeds, wanted)
        new_carries = [inner_grads.get(v.name) or inner.op("zeros", [v], name="d_none") for v in c_in]
        self.per_step: list = []
        self.seq_slots: dict[int, int] = {}
        for i, (v, need) in enumerate(zip(x_in, needs[:num_seqs])):
            if need:
                self.seq_slots[i] = len(self.per_step)
                self.per_step.append(inner_grads.get(v.name) or inner.op("zeros", [v], name="d_none"))
        producers = {v.name: n for n in inner.nodes for v in n.outputs}
        self._slot_of: dict[str, int] = {}
        self.const_terms: dict[int, list] = {
            i: [(term, [self._slot(x) for x in term.inputs]) for term in _gradient_terms(producers, inner_grads[v.name])]
            for i, (v, need) in enumerate(zip(const_in, needs[num_seqs:])) if need and v.name in inner_grads}
        self.graph = inner.build([*new_carries, *self.per_step])

    def _slot(self, value) -> int:
        """One per-step output per value, however many terms read it."""
        if value.name not in self._slot_of:
            self._slot_of[value.name] = len(self.per_step)
            self.per_step.append(value)
        return self._slot_of[value.name]


def _constant_gradients(b, terms: list, stacked: list):
    """A loop constant's gradient: each term (a weight's matmul_tn, a bias's bias_grad) over every step
    at once, from the per-step values the backward scan stacked, summed; None without terms."""
    total = None
    for term, slots in terms:
        if term.op == "matmul_tn":
            part = b.op("matmul_tn", [stacked[slots[0]], stacked[slots[1]]])
        else:
            part = b.op("bias_grad", [stacked[slots[0]]], axis=stacked[slots[0]].type.rank - 1)
        total = part if total is None else b.op("add", [total, part])
    return total


set_vjp("scan", _scan_vjp)
set_traits(("scan",), "autocast_half")  # a recurrent layer's cell: torch.autocast runs nn.LSTM/GRU/RNN in half
