"""Fold an evaluation batch norm into the conv or dense layer before it.

BN(conv(x, w) + b) = conv(x, w * s) + (b - mean) * s + beta, with s = gamma / sqrt(var + eps) per
output channel: the batch norm disappears and the layer's epilogue loads one bias instead of four
vectors. The folded weight and bias are new parameters whose `folded` attr is the recipe (the
parameters it reads); the runtime computes them from the current weights (`fold`), so the graph
never holds values.

Assumes: a verified graph (runs before the layout pass and fusion). Guarantees: every `batch_norm`
whose input is a conv's or a matmul's output channels (optionally through a bias_add), used only
there, with all its operands parameters, is replaced by the layer writing the same value (the
batch norm's output keeps its name); other batch norms stay (they still fuse as epilogues); the
graph computes the same function."""

from __future__ import annotations

from collections.abc import Mapping

import torch

from ..ir import Graph, Node, Value, verify
from ..ir.ops import has_trait
from .rewrite import fresh_name


def fold_batch_norms(graph: Graph) -> Graph:
    producers, users = graph.producers(), graph.users()
    params = {n.name for n in graph.param_nodes}
    outputs = {v.name for v in graph.outputs}
    taken = {v.name for n in graph.nodes for v in n.outputs}
    replaced: dict[int, list[Node]] = {}  # id of a node -> what it becomes ([] = removed)
    added: list[Node] = []
    for norm in graph.nodes:
        chain = _foldable(norm, producers, users, params, outputs)
        if chain is None:
            continue
        anchor, bias_add = chain
        x, mean, var, gamma, beta = norm.inputs
        weight = anchor.inputs[1]
        bias = bias_add.inputs[1] if bias_add is not None else None
        recipe = {"weight": weight.name, "bias": bias.name if bias is not None else None, "mean": mean.name,
                  "var": var.name, "gamma": gamma.name, "beta": beta.name, "eps": float(norm.attrs["eps"])}
        new_weight = Value(fresh_name(taken, f"{weight.name}.folded"), weight.type)
        new_bias = Value(fresh_name(taken, f"{norm.name}.folded_bias"), gamma.type)
        added += [_derived(new_weight, "weight", recipe, anchor.layer), _derived(new_bias, "bias", recipe, norm.layer)]
        conv_out = anchor.outputs[0]
        axis = 1 if has_trait(anchor, "conv_anchor") else conv_out.type.rank - 1
        replaced[id(anchor)] = [anchor.replace(inputs=(anchor.inputs[0], new_weight))]
        if bias_add is not None:
            replaced[id(bias_add)] = []
        replaced[id(norm)] = [Node("bias_add", (conv_out, new_bias), norm.outputs, {"axis": axis}, norm.layer, norm.role)]
    if not added:
        return graph
    nodes = [*(n for n in graph.nodes if n.op in ("input", "parameter")), *added]
    for node in graph.nodes:
        if node.op not in ("input", "parameter"):
            nodes += replaced.get(id(node), [node])
    return verify(Graph(tuple(nodes), graph.outputs, graph.name))


def _foldable(norm: Node, producers, users, params: set[str], outputs: set[str]) -> tuple[Node, Node | None] | None:
    """(the conv or matmul, the bias_add between, if any) a batch norm folds into, or None."""
    if norm.op != "batch_norm" or any(v.name not in params for v in norm.inputs[1:]):
        return None
    source = producers.get(norm.inputs[0].name)
    bias_add = source if source is not None and source.op == "bias_add" else None
    anchor = producers.get(bias_add.inputs[0].name) if bias_add is not None else source
    if anchor is None or not (has_trait(anchor, "conv_anchor") or
                              (anchor.op == "matmul" and anchor.attrs.get("transpose_b", False))):
        return None
    channel_axis = 1 if has_trait(anchor, "conv_anchor") else anchor.outputs[0].type.rank - 1
    if channel_axis != 1 or anchor.inputs[1].name not in params:  # a matmul's channels are axis 1 only at rank 2
        return None
    between = [anchor.outputs[0]] + ([bias_add.outputs[0]] if bias_add is not None else [])
    if any(len(users.get(v.name, [])) != 1 or v.name in outputs for v in between):
        return None
    if bias_add is not None and (bias_add.inputs[1].name not in params or bias_add.attrs["axis"] % 2 != 1):
        return None
    return anchor, bias_add


def _derived(value: Value, what: str, recipe: dict, layer: str | None) -> Node:
    return Node("parameter", (), (value,), {"type": value.type, "init": "zeros", "trainable": False,
                                            "folded": (what, tuple(sorted(recipe.items())))}, layer)


def derived_parameters(graph: Graph) -> list[tuple[str, tuple]]:
    """(name, recipe) of every parameter the graph computes from others (a folded batch norm)."""
    return [(n.name, n.attrs["folded"]) for n in graph.param_nodes if "folded" in n.attrs]


def fold(recipe: tuple, params: Mapping[str, torch.Tensor]) -> torch.Tensor:
    """A folded parameter's value from the current weights."""
    what, items = recipe
    r = dict(items)
    scale = params[r["gamma"]] * torch.rsqrt(params[r["var"]] + r["eps"])
    if what == "weight":
        weight = params[r["weight"]]
        return weight * scale.reshape([-1] + [1] * (weight.dim() - 1))
    bias = params[r["bias"]] if r["bias"] is not None else torch.zeros_like(scale)
    return (bias - params[r["mean"]]) * scale + params[r["beta"]]
