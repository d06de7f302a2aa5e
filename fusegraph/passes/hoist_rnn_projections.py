"""Hoist each scan's input projection out of the time loop.

Assumes: a verified graph. Finds scans whose body uses a sequence step `x` in `matmul(x, W)`
(optionally followed by `bias_add(·, b)` as that matmul's only consumer) with `W` (and `b`) loop
constants. Rewrites: one matmul (+ bias_add) over the whole sequence before the scan, whose output
becomes a sequence of the scan; the body reads the projected step instead of computing it and no
longer takes `W` (and `b`). Where the body uses `x` for more (a backward GRU step reads h_(t-1)
itself too), it keeps `x` and takes the projection as one more sequence. Guarantees: a verified
graph computing the same values; every other node unchanged."""

from __future__ import annotations

from ..ir import Graph, Node, Value, verify
from ..ir.ops import has_trait
from ..ir.ops.scan import initial_carry_count
from .rewrite import fresh_name, input_node, substitute, value_names


def hoist_rnn_projections(graph: Graph) -> Graph:
    taken = value_names(graph)
    nodes: list[Node] = []
    for node in graph.nodes:
        if node.op == "scan":
            nodes.extend(_hoist(node, taken))
        else:
            nodes.append(node)
    return verify(Graph(tuple(nodes), graph.outputs, graph.name))


def _projection(body: Graph, step: Value, consts: set[str]) -> tuple[Node, Node | None, bool] | None:
    """(the projection's matmul, its bias_add or None, whether the body uses the step for more)."""
    users = body.users()
    uses = users.get(step.name, [])
    projections = [u for u in uses if u.op == "matmul" and u.inputs[0].name == step.name and u.inputs[1].name in consts]
    if len(projections) != 1:
        return None
    matmul = projections[0]
    keep_step = len(uses) > 1 or step.name in {v.name for v in body.outputs}
    after = users.get(matmul.outputs[0].name, [])
    bias = after[0] if len(after) == 1 and has_trait(after[0], "per_channel") else None
    if bias is not None and (bias.inputs[1].name not in consts or bias.attrs["axis"] % 2 != 1 or
                             matmul.outputs[0].name in {v.name for v in body.outputs}):
        bias = None
    return matmul, bias, keep_step


def _hoist(scan: Node, taken: set[str]) -> list[Node]:
    body, num_carries, num_seqs = scan.attrs["body"], scan.attrs["num_carries"], scan.attrs["num_seqs"]
    body_inputs = list(body.inputs)
    inits = list(scan.inputs[:initial_carry_count(scan.attrs)])
    outer_inputs = list(scan.inputs[len(inits):])
    consts = {v.name for v in body_inputs[num_carries + num_seqs:]}
    outer_of = {b.name: o for b, o in zip(body_inputs[num_carries:], outer_inputs)}
    base = scan.outputs[0].name.rsplit(".", 1)[0]
    hoisted: list[Node] = []
    body_nodes = [n for n in body.nodes if n.op != "input"]
    added = 0  # projections taken as extra sequences, after the scan's own
    for s in range(num_seqs):
        step = body_inputs[num_carries + s]
        found = _projection(body, step, consts)
        if found is None:
            continue
        matmul, bias, keep_step = found
        last = bias or matmul
        seq = outer_inputs[s]
        width = matmul.outputs[0].type.shape[-1]
        proj = Value(fresh_name(taken, f"{base}.{step.name}_proj"), seq.type.with_shape((*seq.type.shape[:2], width)))
        # NOTE: the scan's role, not the cell matmul's: a backward loop's recomputed projection is backward work
        hoisted.append(Node("matmul", (seq, outer_of[matmul.inputs[1].name]), (proj,), matmul.attrs, scan.layer,
                            scan.role))
        if bias is not None:
            biased = Value(fresh_name(taken, f"{base}.{step.name}_proj_bias"), proj.type)
            hoisted.append(Node("bias_add", (proj, outer_of[bias.inputs[1].name]), (biased,), {"axis": 2}, scan.layer,
                                scan.role))
            proj = biased
        projected_step = Value(f"{step.name}_proj", last.outputs[0].type)
        if keep_step:
            body_inputs.insert(num_carries + num_seqs + added, projected_step)
            outer_inputs.insert(num_seqs + added, proj)
            added += 1
        else:
            body_inputs[num_carries + s] = projected_step
            outer_inputs[s] = proj
        dropped = {id(matmul), id(bias)}
        body_nodes = [substitute(n, {last.outputs[0].name: projected_step}) for n in body_nodes if id(n) not in dropped]
    if not hoisted:
        return [scan]
    used = {v.name for n in body_nodes for v in n.inputs} | {v.name for v in body.outputs}
    keep = [i for i, v in enumerate(body_inputs) if i < num_carries + num_seqs + added or v.name in used]
    new_body = Graph((*(input_node(body_inputs[i]) for i in keep), *body_nodes), body.outputs, body.name)
    new_inputs = tuple(outer_inputs[i - num_carries] for i in keep if i >= num_carries)
    attrs = {**scan.attrs, "body": new_body, "num_seqs": num_seqs + added}
    return [*hoisted, scan.replace(inputs=(*inits, *new_inputs), attrs=attrs)]
