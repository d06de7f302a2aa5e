"""Split a graph with its reverse pass (autodiff.vjp_graph) into the forward a call runs and the
backward that runs later, when the output gradients are known (torch.autograd's two halves).

Assumes: a verified graph whose backward nodes have `role.backward` and whose output-gradient inputs
are named in `seeds`; its outputs are the forward's first (`forward_outputs` of them, then the
gradients, then forward values such as new running statistics).
Guarantees: `forward` computes the forward outputs, then the forward values the graph outputs after
the gradients, then `saved`: every forward value (a graph input included) a backward node reads;
`backward` takes `saved` then the seeds as its inputs (same names and types) and outputs the
gradients; the parameters each reads are its own parameter nodes. Each call's saved values are
outputs of its forward (fresh tensors), so a second forward cannot overwrite the first's."""

from __future__ import annotations

from ..ir import Graph, Node, verify
from .rewrite import input_node


def split_backward(graph: Graph, seeds: set[str], forward_outputs: int,
                   gradients: int) -> tuple[Graph, Graph, list[str]]:
    backward_nodes = [n for n in graph.nodes if n.role.backward]
    forward_nodes = [n for n in graph.nodes if not n.role.backward and n.name not in seeds]
    defined_forward = {v.name: v for n in forward_nodes for v in n.outputs}
    params = {n.name: n for n in graph.param_nodes}
    grads = graph.outputs[forward_outputs:forward_outputs + gradients]
    saved, seen = [], set()
    for value in [v for n in backward_nodes for v in n.inputs] + list(grads):
        if value.name in defined_forward and value.name not in params and value.name not in seen:
            seen.add(value.name)
            saved.append(defined_forward[value.name])
    kept = [*graph.outputs[:forward_outputs], *graph.outputs[forward_outputs + gradients:]]
    forward = verify(Graph(tuple(forward_nodes), (*kept, *saved), f"{graph.name}_forward"))
    used_params = {v.name for n in backward_nodes for v in n.inputs if v.name in params}
    seed_nodes = [n for n in graph.nodes if n.name in seeds]
    nodes: list[Node] = [*(input_node(v) for v in saved), *seed_nodes,
                         *(params[name] for name in params if name in used_params), *backward_nodes]
    backward = verify(Graph(tuple(nodes), tuple(grads), f"{graph.name}_backward"))
    return forward, backward, [v.name for v in saved]
