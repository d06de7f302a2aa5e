"""Ops that move data without arithmetic: reshape (a view), transpose, concat and split along an axis."""

from __future__ import annotations

from math import prod

import torch

from ..errors import GraphError
from ..types import BATCH
from .base import OpDef, normalize_axis, register_op, require_same_dtype, set_execution, set_traits, set_vjp, shape_str


def _reshape_rule(types, attrs):
    (x,) = types
    shape = tuple(attrs["shape"])
    if x.batched != (bool(shape) and shape[0] == BATCH):
        raise GraphError(f"reshape of {shape_str(x)} to {shape} must keep the batch dimension first")
    if prod(x.feature_shape) != prod(d for d in shape if d != BATCH):
        raise GraphError(f"reshape of {shape_str(x)} to {shape} changes the number of elements")
    return [x.with_shape(shape)]


def _reshape_reference(inputs, attrs, ctx):
    x = inputs[0]
    return [x.reshape([x.shape[0] if d == BATCH else d for d in attrs["shape"]])]


def _concat_rule(types, attrs):
    if len(types) < 2:
        raise GraphError(f"concat needs at least 2 inputs, got {len(types)}")
    require_same_dtype(types)
    first = types[0]
    axis = normalize_axis(attrs["axis"], first.rank)
    if first.batched and axis == 0:
        raise GraphError("concat along the batch axis 0 is not supported; concatenate features (axis >= 1)")
    for t in types[1:]:
        if t.rank != first.rank or any(a != b for i, (a, b) in enumerate(zip(t.shape, first.shape)) if i != axis):
            raise GraphError(
                f"cannot concatenate {shape_str(first)} and {shape_str(t)} along axis {axis}: "
                "every other dimension must match"
            )
    size = sum(t.shape[axis] for t in types)
    return [first.with_shape((*first.shape[:axis], size, *first.shape[axis + 1:]))]


def _split_rule(types, attrs):
    (x,) = types
    axis = normalize_axis(attrs["axis"], x.rank)
    sizes = tuple(attrs["sizes"])
    if sum(sizes) != x.shape[axis] or any(s <= 0 for s in sizes):
        raise GraphError(f"split sizes {sizes} must be positive and add up to axis {axis} of {shape_str(x)}")
    return [x.with_shape((*x.shape[:axis], s, *x.shape[axis + 1:])) for s in sizes]


def _transpose_rule(types, attrs):
    (x,) = types
    perm = tuple(attrs["perm"])
    if sorted(perm) != list(range(x.rank)):
        raise GraphError(f"transpose perm {perm} is not a permutation of the {x.rank} axes of {shape_str(x)}")
    if x.batched and perm[0] != 0:
        raise GraphError(f"transpose perm {perm} must keep the batch axis 0 first")
    return [x.with_shape(tuple(x.shape[p] for p in perm))]


def keeps_memory_order(perm: tuple[int, ...], shape: tuple) -> bool:
    """Whether permuting `shape` by `perm` leaves every element where it was (only size-1 axes move):
    then the transpose is a view, like a reshape."""
    moved = [p for p in perm if shape[p] != 1]
    return moved == sorted(moved)


register_op(OpDef("reshape", 1, _reshape_rule, _reshape_reference, "a view; attrs shape (batch first)"))
register_op(OpDef("transpose", 1, _transpose_rule,
                  lambda inputs, attrs, ctx: [inputs[0].permute(*attrs["perm"]).contiguous()],
                  "axes reordered: output axis i is input axis perm[i]; attrs perm (batch axis 0 stays first)"))
register_op(OpDef("concat", None, _concat_rule,
                  lambda inputs, attrs, ctx: [torch.cat(inputs, attrs["axis"])], "attrs axis"))
register_op(OpDef("split", 1, _split_rule,
                  lambda inputs, attrs, ctx: list(torch.split(inputs[0], list(attrs["sizes"]), attrs["axis"])),
                  "attrs axis, sizes"))
set_execution("reshape", view=lambda node: True)
# a transpose that only moves size-1 axes keeps every element where it was
set_execution("transpose", view=lambda node: keeps_memory_order(node.attrs["perm"], node.inputs[0].type.shape))
set_execution("concat", launches=lambda node: len(node.inputs))  # one strided copy per input
set_execution("split", launches=lambda node: len(node.outputs))
set_traits(("split", "concat"), "gates")  # in a fused group; on their own they are copies


# -- backward -----------------------------------------------------------------------------------
register_op(OpDef("zeros", 1, lambda types, attrs: [types[0]],
                  lambda inputs, attrs, ctx: [torch.zeros_like(inputs[0])], "zeros shaped like its input"))
set_traits(("zeros",), "layout_follows")


def _reshape_vjp(b, node, grads, needs):
    return [b.op("reshape", [grads[0]], shape=node.inputs[0].type.shape)]


def _concat_vjp(b, node, grads, needs):
    sizes = tuple(v.type.shape[node.attrs["axis"] % v.type.rank] for v in node.inputs)
    parts = b.op("split", [grads[0]], axis=node.attrs["axis"], sizes=sizes)
    parts = parts if isinstance(parts, tuple) else (parts,)
    return [p if need else None for p, need in zip(parts, needs)]


def _split_vjp(b, node, grads, needs):
    pieces = [g if g is not None else b.op("zeros", [v]) for g, v in zip(grads, node.outputs)]
    return [b.op("concat", pieces, axis=node.attrs["axis"]) if len(pieces) > 1 else pieces[0]]


def _transpose_vjp(b, node, grads, needs):
    perm = node.attrs["perm"]
    return [b.op("transpose", [grads[0]], perm=tuple(perm.index(i) for i in range(len(perm))))]


set_vjp("reshape", _reshape_vjp)
set_vjp("transpose", _transpose_vjp)
set_vjp("concat", _concat_vjp)
set_vjp("split", _split_vjp)


# -- channel shuffle (ShuffleNet): x.view(N, g, C // g, ...).transpose(1, 2).reshape(N, C, ...) ---------
def _shuffle_rule(types, attrs):
    (x,) = types
    groups = attrs["groups"]
    if x.rank < 3 or not isinstance(groups, int) or groups < 1 or x.shape[1] % groups:
        raise GraphError(f"channel_shuffle of {shape_str(x)} in {groups!r} groups: the groups must divide its channels")
    return [x]


def _shuffle_reference(inputs, attrs, ctx):
    x, groups = inputs[0], attrs["groups"]
    n, c = x.shape[:2]
    return [x.reshape(n, groups, c // groups, *x.shape[2:]).transpose(1, 2).reshape(x.shape)]


def _shuffle_vjp(b, node, grads, needs):
    # the inverse permutation is the shuffle in the other grouping
    return [b.op("channel_shuffle", [grads[0]], groups=node.inputs[0].type.shape[1] // node.attrs["groups"])]


register_op(OpDef("channel_shuffle", 1, _shuffle_rule, _shuffle_reference,
                  "channels in `groups` groups interleaved (ShuffleNet's channel shuffle); attr groups"))
set_vjp("channel_shuffle", _shuffle_vjp)
