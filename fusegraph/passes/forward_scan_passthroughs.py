"""Per-step scan outputs that only hand back a sequence step: read the sequence instead.

Assumes: a verified graph. Finds scans whose body returns one of its sequence-step inputs unchanged
as a per-step output (autodiff's backward scans return x_t and h_{t-1} so that the weight gradients
are taken once, after the loop). Stacked over time, such an output is the input sequence itself,
whichever way the loop runs. Rewrites: the scan stops producing it (no copy per step) and its users
read the sequence. Guarantees: a verified graph computing the same values; every other node unchanged."""

from __future__ import annotations

from ..ir import Graph, Node, Value, verify
from ..ir.ops.scan import initial_carry_count
from .rewrite import substitute


def forward_scan_passthroughs(graph: Graph) -> Graph:
    replaced: dict[str, Value] = {}
    nodes: list[Node] = []
    for node in graph.nodes:
        node = substitute(node, replaced)
        if node.op == "scan":
            node, found = _drop_passthroughs(node)
            replaced.update(found)
        nodes.append(node)
    outputs = tuple(replaced.get(v.name, v) for v in graph.outputs)
    return verify(Graph(tuple(nodes), outputs, graph.name))


def _drop_passthroughs(scan: Node) -> tuple[Node, dict[str, Value]]:
    body, num_carries, num_seqs = scan.attrs["body"], scan.attrs["num_carries"], scan.attrs["num_seqs"]
    first_seq = initial_carry_count(scan.attrs)
    sequence_of = {body.inputs[num_carries + s].name: scan.inputs[first_seq + s] for s in range(num_seqs)}
    body_outputs, scan_outputs = list(body.outputs[:num_carries]), list(scan.outputs[:num_carries])
    found: dict[str, Value] = {}
    for body_output, scan_output in zip(body.outputs[num_carries:], scan.outputs[num_carries:]):
        sequence = sequence_of.get(body_output.name)
        if sequence is not None and sequence.type == scan_output.type:
            found[scan_output.name] = sequence
        else:
            body_outputs.append(body_output)
            scan_outputs.append(scan_output)
    if not found:
        return scan, {}
    new_body = Graph(body.nodes, tuple(body_outputs), body.name)
    return scan.replace(outputs=tuple(scan_outputs), attrs={**scan.attrs, "body": new_body}), found
