"""The schedule: what running a graph does at each node, decided once.

Each compute node is one step: a `kernel` (one template's launches), a `loop` (a scan that is not
persistent: its body's own schedule once per time step), a `view` (no launch: its output views its
input, as the op says), or `assembled` (a concat its producers wrote into, slice by slice). The
runtime builds and runs its steps, and the cost model, explain() and the benchmarks count launches
and bytes over the same steps, so what they report is what runs."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from .graph import Graph, Node
from .ops import OPS

StepKind = Literal["kernel", "loop", "view", "assembled"]


@dataclass(frozen=True)
class Step:
    node: Node
    kind: StepKind
    body: Schedule | None = None  # a loop's body
    strided: bool = False  # a loop whose body reads and writes the sequences' strided rows in place


@dataclass(frozen=True)
class Schedule:
    graph: Graph
    steps: tuple[Step, ...]
    placed: dict[str, tuple[str, int]]  # value -> (the concat output it is written into, offset on the last axis)

    @property
    def launched(self) -> tuple[Step, ...]:
        """The steps that launch kernels (kernels and loops), in order."""
        return tuple(s for s in self.steps if s.kind in ("kernel", "loop"))


def schedule(graph: Graph) -> Schedule:
    placed = in_place_concats(graph)
    steps = []
    for node in graph.compute_nodes:
        if is_view(node):
            steps.append(Step(node, "view"))
        elif node.op == "concat" and node.inputs[0].name in placed:
            steps.append(Step(node, "assembled"))
        elif node.op == "scan" and not node.attrs.get("persistent", False):
            body = node.attrs["body"]
            steps.append(Step(node, "loop", schedule(body), strided_body(body)))
        else:
            steps.append(Step(node, "kernel"))
    return Schedule(graph, tuple(steps), placed)


def is_view(node: Node) -> bool:
    """Launches nothing: its output is a view of its input (the op says when: `OpDef.view`)."""
    view = OPS[node.op].view
    return view is not None and view(node)


def strided_body(body: Graph) -> bool:
    """Whether every kernel of a scan body reads and writes strided rows (a matmul-anchored cell)."""
    steps = [n for n in body.compute_nodes if not is_view(n)]
    return bool(steps) and len(steps) == len(body.compute_nodes) and all(
        n.op == "matmul" or (n.op == "fused" and n.attrs["anchor"] == "matmul") for n in steps)


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
