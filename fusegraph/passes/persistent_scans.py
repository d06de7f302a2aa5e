"""Persistent scans: an RNN layer whose whole time step is one kernel over a narrow hidden state runs
as ONE kernel for the whole sequence. Each program owns a block of batch rows and loops over time
with the carries in registers; no program needs another's rows, so no grid-wide sync.

Assumes: a fused graph (runs after `fuse`). A scan qualifies when its body is a single matmul-anchored
kernel (a forward cell: h W_hh^T and the cell update; a backward one: the cell gradient dz, then
dz W_hh) whose weight operand is a loop constant, every other operand is a carry, a sequence step or
a per-channel constant (a bias), every value is a whole number of gates (the carries' width) wide,
and the carries fit the persistent template's tile (kernels/scan.py MAX_WIDTH: wider cells keep one launch per
step, whose GEMM then spreads over the device).
Guarantees: a verified graph computing the same values; each qualifying scan gets attr
`persistent=True` and its kernel's name, and stops producing per-step outputs nothing reads (they
would cost a store per step); a Decision for every scan, kept or not, with the reason."""

from __future__ import annotations

from ..ir import Graph, Node, verify
from ..ir.ops import channel_inputs, has_trait, ops_with
from .fuse import Decision
from .fusion.joins import ELEMENTWISE
from .kernel_names import persistent_scan_name
from .templates import refusal

CELL_OPS = ELEMENTWISE | ops_with("gates")
KERNEL = "persistent scan"


def persistent_scans_with_report(graph: Graph) -> tuple[Graph, list[Decision]]:
    used = {v.name for n in graph.nodes for v in n.inputs} | {v.name for v in graph.outputs}
    nodes, decisions = [], []
    for node in graph.nodes:
        if node.op == "scan":
            reason = blocker(node)
            if reason is None:
                node = _drop_unread_steps(node, used)
                node = node.replace(attrs={**node.attrs, "persistent": True, "kernel": persistent_scan_name(node)})
                reason = f"{node.attrs['num_carries']} carries in registers over all steps: one launch"
            decisions.append(Decision(KERNEL, (node.name,), node.attrs.get("persistent", False), reason,
                                      pattern="persistent_scan"))
        nodes.append(node)
    return verify(Graph(tuple(nodes), graph.outputs, graph.name)), decisions


def persistent_scans(graph: Graph) -> Graph:
    return persistent_scans_with_report(graph)[0]


def blocker(scan: Node) -> str | None:
    """Why `scan` cannot run as one persistent kernel, or None when it can."""
    body = scan.attrs["body"]
    num_carries, num_seqs = scan.attrs["num_carries"], scan.attrs["num_seqs"]
    kernels = body.compute_nodes
    if len(kernels) != 1 or kernels[0].op != "fused" or kernels[0].attrs["anchor"] != "matmul":
        return f"its step runs {len(kernels)} kernels, not one matmul-anchored kernel"
    cell = kernels[0].attrs["body"]
    compute = cell.compute_nodes
    anchor = next(n for n in compute if has_trait(n, "matmul_anchor"))
    role = {v.name: ("carry" if i < num_carries else "step" if i < num_carries + num_seqs else "constant")
            for i, v in enumerate(body.inputs)}
    if role.get(anchor.inputs[1].name) != "constant":
        return "the step's matmul weight changes from step to step"
    width = body.inputs[0].type.shape[-1]
    too_wide = refusal("persistent_scan", scan)  # the template's tile limit
    if too_wide:
        return too_wide
    if any(v.type.shape[-1] != width for v in body.inputs[:num_carries]):
        return "its carries differ in width"
    if any(v.type.shape[-1] % width for v in anchor.inputs[:1] + anchor.outputs):
        return "the step's matmul is not a whole number of gates wide"
    for node in compute:
        if node is anchor:
            continue
        if node.op not in CELL_OPS:
            return f"%{node.name} ({node.op}) is not an elementwise cell op"
        vectors = channel_inputs(node)
        tiles = tuple(v for i, v in enumerate(node.inputs) if i not in vectors)  # not bias vectors
        if any(v.type.shape[-1] % width for v in (*tiles, *node.outputs)):
            return f"%{node.name} works on a width other than whole gates"
        if any(role.get(v.name) == "constant" for v in tiles):
            return f"%{node.name} reads a loop constant element by element"
    return None


def _drop_unread_steps(scan: Node, used: set[str]) -> Node:
    """`scan` without the per-step outputs nothing reads."""
    body, num_carries = scan.attrs["body"], scan.attrs["num_carries"]
    keep = [i for i, v in enumerate(scan.outputs) if i < num_carries or v.name in used]
    if len(keep) == len(scan.outputs):
        return scan
    new_body = Graph(body.nodes, tuple(body.outputs[i] for i in keep), body.name)
    attrs = {k: v for k, v in scan.attrs.items() if k != "carry_steps"}  # autodiff's, read before this pass
    return scan.replace(outputs=tuple(scan.outputs[i] for i in keep), attrs={**attrs, "body": new_body})
