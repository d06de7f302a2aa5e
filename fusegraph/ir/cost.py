"""Analytic memory traffic: the bytes each kernel reads and writes, and the minimum any schedule needs;
and the arithmetic: the floating-point operations of a graph's matrix products (convolutions and matmuls,
forward and gradients, scan bodies once per step), counted as torch's FlopCounterMode counts them (2 per
multiply-add; elementwise work not counted), for a roofline.

A node's kernel reads each input once and writes each output once; views (reshape, a dropout
outside training) move nothing; the steps are the schedule's (ir/schedule.py), the ones the runtime runs. A scan
moves its sequences to time-major and back, runs its body once per step, and copies its final
carries out; a persistent scan is one kernel like any other."""

from __future__ import annotations

from dataclasses import dataclass
from math import prod

from .graph import Graph, Node
from .ops import OPS
from .ops.scan import scan_steps
from .schedule import is_view, schedule, strided_body
from .types import TensorType

ITEMSIZE = {"float32": 4, "float16": 2, "bfloat16": 2, "int64": 8, "int8": 1}


def nbytes(t: TensorType, batch: int) -> int:
    return prod(t.concrete(batch)) * ITEMSIZE[t.dtype]


@dataclass(frozen=True)
class Traffic:
    node: Node
    launches: int
    read: int
    written: int

    @property
    def total(self) -> int:
        return self.read + self.written


def node_traffic(node: Node, batch: int, used: set[str] | None = None) -> Traffic:
    """`used`: the values read after this node (graph outputs included); a scan skips the rest."""
    if is_view(node):
        return Traffic(node, 0, 0, 0)
    if node.op == "scan":
        return _scan_traffic(node, batch, {v.name for v in node.outputs} if used is None else used)
    read = sum(nbytes(v.type, batch) for v in node.inputs)
    written = sum(nbytes(v.type, batch) for v in node.outputs)
    op = OPS[node.op]
    launches = op.launches(node) if op.launches is not None else 1
    if "zero_filled" in op.traits:
        launches, written = launches + 1, 2 * written
    return Traffic(node, launches, read, written)


def _scan_traffic(node: Node, batch: int, used: set[str]) -> Traffic:
    if node.attrs.get("persistent", False):  # one kernel: reads its inputs and writes its outputs once
        return Traffic(node, 1, sum(nbytes(v.type, batch) for v in node.inputs),
                       sum(nbytes(v.type, batch) for v in node.outputs))
    body, num_seqs, num_carries = node.attrs["body"], node.attrs["num_seqs"], node.attrs["num_carries"]
    steps = scan_steps(node)
    per_step = graph_traffic(body, batch)
    launches = steps * sum(t.launches for t in per_step)
    read = steps * sum(t.read for t in per_step)
    written = steps * sum(t.written for t in per_step)
    if not strided_body(body):
        first = node.attrs["num_carries"] if node.attrs.get("init_carries", False) else 0
        seqs = sum(nbytes(v.type, batch) for v in node.inputs[first:first + num_seqs])
        outs = [v for v in node.outputs[num_carries:] if v.name in used]
        launches += num_seqs + len(outs)
        moved = seqs + sum(nbytes(v.type, batch) for v in outs)
        read, written = read + moved, written + moved
    carry_is_step = {v.name for v in body.outputs[:num_carries]} & {v.name for v in body.outputs[num_carries:]}
    for carry, out in zip(body.outputs[:num_carries], node.outputs[:num_carries]):
        step_used = any(o.name in used for b, o in zip(body.outputs[num_carries:], node.outputs[num_carries:])
                        if b.name == carry.name)
        if out.name in used and (carry.name in carry_is_step and step_used):
            launches, read, written = launches + 1, read + nbytes(out.type, batch), written + nbytes(out.type, batch)
    return Traffic(node, launches, read, written)


def graph_traffic(graph: Graph, batch: int) -> list[Traffic]:
    """Per step of the graph's schedule (the one the runtime runs), in order."""
    used = {v.name for n in graph.nodes for v in n.inputs} | {v.name for v in graph.outputs}
    return [Traffic(s.node, 0, 0, 0) if s.kind in ("view", "assembled") else node_traffic(s.node, batch, used)
            for s in schedule(graph).steps]


def launch_count(graph: Graph, batch: int) -> int:
    """Kernel launches one run of `graph` makes: what the runtime launches, explain() and the benchmarks report."""
    return sum(t.launches for t in graph_traffic(graph, batch))


def minimum_bytes(graph: Graph, batch: int) -> int:
    """Inputs and weights read once, outputs written once: no schedule moves less."""
    arguments = sum(nbytes(n.outputs[0].type, batch) for n in graph.nodes if n.op in ("input", "parameter"))
    return arguments + sum(nbytes(v.type, batch) for v in graph.outputs)


def _matrix_flops(node: Node, batch: int) -> int:
    """2 x (multiply-adds) of one conv or matmul node (0 for any other op)."""
    op, ins, outs = node.op, node.inputs, node.outputs
    if op in ("conv1d", "conv2d", "conv1d_bwd_input", "conv2d_bwd_input"):
        conv_output = ins[0] if op.endswith("bwd_input") else outs[0]  # the input gradient's dy is shaped so
        return 2 * prod(conv_output.type.concrete(batch)) * prod(ins[1].type.shape[1:])  # each: CG * KH * KW
    if op in ("conv1d_bwd_weight", "conv2d_bwd_weight"):
        return 2 * prod(ins[1].type.concrete(batch)) * prod(outs[0].type.shape[1:])
    if op == "matmul":
        return 2 * prod(outs[0].type.concrete(batch)) * ins[0].type.shape[-1]
    if op == "matmul_tn":
        p = ins[0].type.concrete(batch)
        return 2 * prod(p[:-1]) * p[-1] * ins[1].type.concrete(batch)[-1]
    return 0


def graph_flops(graph: Graph, batch: int) -> int:
    """Floating-point operations of every conv and matmul of `graph` at `batch` (a scan's body once per
    step): the arithmetic any schedule of it must do."""
    total = 0
    for node in graph.nodes:
        if node.op == "scan":
            total += scan_steps(node) * graph_flops(node.attrs["body"], batch)
        else:
            total += _matrix_flops(node, batch)
    return total
