"""Per-step matmuls whose only use is a per-step output leave the loop: one GEMM after it.

Assumes: a verified graph. Finds scans whose body returns, as a per-step output only, `matmul(v, W)`
with `W` a loop constant and `v` a value the body computes (a backward RNN step's input gradient
dx_t = dz_t W_ih). Stacked over time that output is `matmul(stacked v, W)`. Rewrites: the body returns
`v` per step instead (or reuses its existing per-step output), the scan no longer takes `W` if nothing
else in the body reads it, and one matmul over the stacked sequence follows the scan. Guarantees: a
verified graph computing the same values (the same outputs, by the same names); every other node
unchanged."""

from __future__ import annotations

from ..ir import BATCH, Graph, Node, Value, verify
from ..ir.ops.scan import initial_carry_count
from .rewrite import fresh_name, value_names


def sink_scan_projections(graph: Graph) -> Graph:
    taken = value_names(graph)
    nodes: list[Node] = []
    for node in graph.nodes:
        nodes.extend(_sink(node, taken) if node.op == "scan" else [node])
    return verify(Graph(tuple(nodes), graph.outputs, graph.name))


def _sinkable(body: Graph, num_carries: int, consts: set[str]) -> list[int]:
    """Positions (among the per-step outputs) of matmuls by a constant that only feed that output."""
    producers, users = body.producers(), body.users()
    carried = {v.name for v in body.outputs[:num_carries]}
    computed = {v.name for n in body.compute_nodes for v in n.outputs}
    found = []
    for k, value in enumerate(body.outputs[num_carries:]):
        node = producers.get(value.name)
        if (node is not None and node.op == "matmul" and node.inputs[1].name in consts
                and node.inputs[0].name in computed and not users.get(value.name) and value.name not in carried
                and [v.name for v in body.outputs].count(value.name) == 1):
            found.append(k)
    return found


def _sink(scan: Node, taken: set[str]) -> list[Node]:
    body, num_carries = scan.attrs["body"], scan.attrs["num_carries"]
    first = initial_carry_count(scan.attrs)
    first_const = num_carries + scan.attrs["num_seqs"]
    consts = {v.name for v in body.inputs[first_const:]}
    sinkable = _sinkable(body, num_carries, consts)
    if not sinkable:
        return [scan]
    outer_of = {v.name: scan.inputs[first + i - num_carries] for i, v in enumerate(body.inputs) if i >= num_carries}
    producers = body.producers()
    time = scan.outputs[num_carries].type.shape[1]
    step_values = list(body.outputs[num_carries:])
    step_outputs = list(scan.outputs[num_carries:])
    after: list[Node] = []
    dropped: set[int] = set()
    for k in sinkable:
        matmul = producers[step_values[k].name]
        v = matmul.inputs[0]
        names = [x.name for x in step_values]
        if v.name in names:
            stacked = step_outputs[names.index(v.name)]
        else:
            stacked = Value(fresh_name(taken, f"{scan.outputs[0].name}.{v.name}_steps"),
                            v.type.with_shape((BATCH, time, *v.type.shape[1:])))
            step_values.append(v)
            step_outputs.append(stacked)
        after.append(Node("matmul", (stacked, outer_of[matmul.inputs[1].name]), (step_outputs[k],), matmul.attrs,
                          scan.layer, scan.role))
        dropped.add(id(matmul))
    keep = [k for k in range(len(step_values)) if k not in set(sinkable)]
    body_nodes = [n for n in body.compute_nodes if id(n) not in dropped]
    used = {v.name for n in body_nodes for v in n.inputs} | {v.name for v in body.outputs}
    inputs = [v for i, v in enumerate(body.inputs) if i < first_const or v.name in used]
    kept_inputs = {v.name for v in inputs}
    new_body = Graph((*(n for n in body.nodes if n.op == "input" and n.outputs[0].name in kept_inputs), *body_nodes),
                     (*body.outputs[:num_carries], *(step_values[k] for k in keep)), body.name)
    attrs = {k: v for k, v in scan.attrs.items() if k != "carry_steps"}  # autodiff's, read before this pass
    new_scan = scan.replace(inputs=(*scan.inputs[:first], *(outer_of[v.name] for v in inputs[num_carries:])),
                            outputs=(*scan.outputs[:num_carries], *(step_outputs[k] for k in keep)),
                            attrs={**attrs, "body": new_body})
    return [new_scan, *after]
