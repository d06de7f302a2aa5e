"""Analytic memory traffic: the bytes each kernel reads and writes, and the minimum any schedule needs.

A node's kernel reads each input once and writes each output once; views (reshape, inference
dropout) move nothing. A scan moves its sequences to time-major and back, runs its body once per
step, and copies its final carries out."""

from __future__ import annotations

from dataclasses import dataclass
from math import prod

from .graph import Graph, Node
from .types import TensorType

ITEMSIZE = {"float32": 4, "float16": 2, "bfloat16": 2, "int64": 8}
VIEW_OPS = ("reshape", "dropout")


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


def node_traffic(node: Node, batch: int) -> Traffic:
    if node.op in VIEW_OPS:
        return Traffic(node, 0, 0, 0)
    if node.op == "scan":
        return _scan_traffic(node, batch)
    read = sum(nbytes(v.type, batch) for v in node.inputs)
    written = sum(nbytes(v.type, batch) for v in node.outputs)
    launches = len(node.inputs) if node.op == "concat" else len(node.outputs) if node.op == "split" else 1
    return Traffic(node, launches, read, written)


def _scan_traffic(node: Node, batch: int) -> Traffic:
    body, num_seqs = node.attrs["body"], node.attrs["num_seqs"]
    steps = node.inputs[0].type.shape[1]
    per_step = graph_traffic(body, batch)
    seqs = sum(nbytes(v.type, batch) for v in node.inputs[:num_seqs])
    outs = sum(nbytes(v.type, batch) for v in node.outputs)
    launches = num_seqs + steps * sum(t.launches for t in per_step) + len(node.outputs)
    read = seqs + steps * sum(t.read for t in per_step) + outs
    written = seqs + steps * sum(t.written for t in per_step) + outs
    return Traffic(node, launches, read, written)


def graph_traffic(graph: Graph, batch: int) -> list[Traffic]:
    return [node_traffic(n, batch) for n in graph.compute_nodes]


def minimum_bytes(graph: Graph, batch: int) -> int:
    """Inputs and weights read once, outputs written once: no schedule moves less."""
    arguments = sum(nbytes(n.outputs[0].type, batch) for n in graph.nodes if n.op in ("input", "parameter"))
    return arguments + sum(nbytes(v.type, batch) for v in graph.outputs)
