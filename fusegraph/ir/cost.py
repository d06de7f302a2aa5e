"""Analytic memory traffic: the bytes each kernel reads and writes, and the minimum any schedule needs.

A node's kernel reads each input once and writes each output once; views (reshape, a dropout
outside training) move nothing: `is_view` is the one definition the runtime launches by too. A scan
moves its sequences to time-major and back, runs its body once per step, and copies its final
carries out; a persistent scan is one kernel like any other."""

from __future__ import annotations

from dataclasses import dataclass
from math import prod

from .graph import Graph, Node
from .ops.scan import scan_steps
from .ops.shape import keeps_memory_order
from .types import TensorType

ITEMSIZE = {"float32": 4, "float16": 2, "bfloat16": 2, "int64": 8, "int8": 1}


def is_view(node: Node) -> bool:
    """Launches nothing: a reshape, a transpose that only moves size-1 axes, or a dropout that is not
    training (autodiff marks the training ones)."""
    if node.op == "transpose":
        return keeps_memory_order(node.attrs["perm"], node.inputs[0].type.shape)
    return node.op == "reshape" or (node.op == "dropout" and not node.attrs.get("training", False))


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
    launches = len(node.inputs) if node.op == "concat" else len(node.outputs) if node.op == "split" else 1
    if node.op == "embedding_bwd":  # NOTE: its template zero-fills the table gradient, then scatter-adds rows into it
        launches, written = 2, 2 * written
    return Traffic(node, launches, read, written)


def strided_body(body: Graph) -> bool:
    """Whether every kernel of a scan body reads and writes strided rows (a matmul-anchored cell)."""
    steps = [n for n in body.compute_nodes if not is_view(n)]
    return bool(steps) and len(steps) == len(body.compute_nodes) and all(
        n.op == "matmul" or (n.op == "fused" and n.attrs["anchor"] == "matmul") for n in steps)


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


def in_place_concats(graph: Graph) -> dict[str, tuple[str, int]]:
    """Outputs of strided scans (per-step sequences, or final carries) written straight into their slice
    of the concat that joins them (a bidirectional RNN's two directions): value -> (concat output, offset
    on the last axis). Only concats whose every input qualifies: such a concat launches nothing."""
    users, producers = graph.users(), graph.producers()
    outputs = {v.name for v in graph.outputs}
    placed: dict[str, tuple[str, int]] = {}
    for node in graph.nodes:
        t = node.outputs[0].type if node.outputs else None
        if node.op != "concat" or t.rank < 2 or node.attrs["axis"] % t.rank != t.rank - 1:
            continue
        slices, offset = {}, 0
        for v in node.inputs:
            scan = producers.get(v.name)
            if (scan is None or scan.op != "scan" or not strided_body(scan.attrs["body"]) or v.name in slices
                    or v.name in outputs or len(users.get(v.name, [])) != 1):
                break
            slices[v.name] = offset
            offset += v.type.shape[-1]
        else:
            placed.update({name: (node.outputs[0].name, at) for name, at in slices.items()})
    return placed


def graph_traffic(graph: Graph, batch: int) -> list[Traffic]:
    used = {v.name for n in graph.nodes for v in n.inputs} | {v.name for v in graph.outputs}
    placed = in_place_concats(graph)
    return [Traffic(n, 0, 0, 0) if n.op == "concat" and n.inputs[0].name in placed else node_traffic(n, batch, used)
            for n in graph.compute_nodes]


def launch_count(graph: Graph, batch: int) -> int:
    """Kernel launches one run of `graph` makes: what the runtime launches, explain() and the benchmarks report."""
    return sum(t.launches for t in graph_traffic(graph, batch))


def minimum_bytes(graph: Graph, batch: int) -> int:
    """Inputs and weights read once, outputs written once: no schedule moves less."""
    arguments = sum(nbytes(n.outputs[0].type, batch) for n in graph.nodes if n.op in ("input", "parameter"))
    return arguments + sum(nbytes(v.type, batch) for v in graph.outputs)
