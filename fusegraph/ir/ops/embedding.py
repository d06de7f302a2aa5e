"""embedding: gather rows of a (num_embeddings, dim) table by int64 ids; dropout."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..errors import GraphError, InputError
from .base import OpDef, register_op, require_float, require_rank, set_execution, set_traits, set_vjp


def _embedding_rule(types, attrs):
    ids, table = types
    if ids.dtype != "int64":
        raise GraphError(f"embedding ids must be int64 token ids, got {ids.dtype}; declare Input(..., dtype='int64')")
    require_rank(table, 2, "embedding table")
    require_float(table, "embedding table")
    return [table.with_shape((*ids.shape, table.shape[1]))]


def _embedding_reference(inputs, attrs, ctx):
    ids, table = inputs
    if ids.numel() and (int(ids.min()) < 0 or int(ids.max()) >= table.shape[0]):
        raise InputError(
            f"token ids must lie in [0, {table.shape[0]}), got values in [{int(ids.min())}, {int(ids.max())}]"
        )
    return [F.embedding(ids, table)]


def _dropout_rule(types, attrs):
    (x,) = types
    require_float(x)
    if not 0.0 <= attrs["rate"] < 1.0:
        raise GraphError(f"dropout rate must be in [0, 1), got {attrs['rate']}")
    return [x]


def _dropout_reference(inputs, attrs, ctx):
    x = inputs[0]
    if not ctx.training or attrs["rate"] == 0.0:
        return [x]
    generator = torch.Generator().manual_seed(ctx.seed * 1_000_003 + attrs["seed"])
    # per_sample (stochastic depth): one draw per sample, broadcast over the rest of it
    shape = (x.shape[0],) + (1,) * (x.dim() - 1) if attrs.get("per_sample", False) else x.shape
    keep = torch.rand(shape, generator=generator) >= attrs["rate"]
    return [x * keep.to(x.device, x.dtype) / (1.0 - attrs["rate"])]


register_op(OpDef("embedding", 2, _embedding_rule, _embedding_reference, "rows of the table by id"))
set_execution("embedding", index_inputs=lambda node: [(0, node.inputs[1].type.shape[0], "token ids")])
register_op(OpDef("dropout", 1, _dropout_rule, _dropout_reference,
                  "identity at inference; in training a seeded mask scaled by 1/(1-rate); attrs rate, seed, "
                  "per_sample (one draw per sample: stochastic depth)"))
# autodiff marks the dropouts of a training graph (attr training): only those draw a mask
set_execution("dropout", view=lambda node: not node.attrs.get("training", False))
set_traits(("dropout",), "random", "layout_follows")


# -- backward -----------------------------------------------------------------------------------
def _embedding_bwd_rule(types, attrs):
    dy, ids = types
    return [dy.with_shape((attrs["num_embeddings"], dy.shape[-1]))]


def _embedding_bwd_reference(inputs, attrs, ctx):
    dy, ids = inputs
    table = torch.zeros((attrs["num_embeddings"], dy.shape[-1]), dtype=dy.dtype, device=dy.device)
    return [table.index_add_(0, ids.reshape(-1), dy.reshape(-1, dy.shape[-1]))]


def _embedding_vjp(b, node, grads, needs):
    ids, table = node.inputs
    grad = b.op("embedding_bwd", [grads[0], ids], num_embeddings=table.type.shape[0]) if needs[1] else None
    return [None, grad]


register_op(OpDef("embedding_bwd", 2, _embedding_bwd_rule, _embedding_bwd_reference,
                  "scatter-add of row gradients into the table; attrs num_embeddings"))
set_vjp("embedding", _embedding_vjp)
set_vjp("dropout", lambda b, node, grads, needs: [b.op("dropout", [grads[0]], **dict(node.attrs))])
set_traits(("embedding_bwd",), "zero_filled")
