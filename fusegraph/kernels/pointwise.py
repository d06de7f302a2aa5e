"""Elementwise kernels generated from a chain of elementwise nodes (one node, unfused).

Each outside operand is either a full tensor (indexed like the output) or a per-channel vector
broadcast along one axis (indexed by `(offset // inner) % channels`, inner the axis's stride in
storage: every operand of a chain is stored alike, so a channels-last chain differs only there); every value the chain makes
that is used outside it is stored.

softmax / log_softmax over the last axis (one row per block lane, max-shifted) and their gradients
have templates of their own here."""

from __future__ import annotations

from math import prod

import triton

from ..ir import GraphError
from ..ir.ops import OPS, channel_inputs, has_trait
from ..passes.kernel_names import kernel_name
from ..passes.templates import CHAIN, Anchor, register_anchor
from .epilogue import Emitter, Tile
from .expr import Names, helpers_for
from .group import argument_roles, group_of
from .registry import KernelSource, register_template
from .source import fill, module_source, node_source
from .target import INTERPRETER_TILE_ELEMENTS

POINTWISE_SOURCE = '''
@triton.jit
def {name}({pointers}, NUMEL, {vector_args}BLOCK: tl.constexpr):
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < NUMEL
    {gate_offsets}
    {body}
'''


# a chain split into gates runs over one gate's elements; gate g of a full-width row sits at g * GATE_W
GATE_OFFSETS = """row = offs // GATE_W
col = offs % GATE_W"""


def gating(group) -> tuple[int, tuple] | None:
    """(gates, one gate's shape) when the chain splits values into gates or joins them back."""
    for node in group.nodes:
        if node.op == "split":
            return len(node.outputs), node.outputs[0].type.shape
        if node.op == "concat":
            return len(node.inputs), node.inputs[0].type.shape
    return None


def render(node):
    group = group_of(node)
    for member in group.nodes:
        if OPS[member.op].math is None and not has_trait(member, "gates"):
            raise GraphError(f"{member.where}: no elementwise kernel for {member.op}")
    vectors = [i for i, v in enumerate(group.inputs) if v.name in group.channel_vectors]
    gates, gate_shape = gating(group) or (1, None)

    def full_width(v) -> bool:
        return gate_shape is not None and v.type.shape != gate_shape

    def address(v, g: int) -> str:
        if not full_width(v):
            return "offs"
        return f"row * {gates} * GATE_W + col" if g == 0 else f"row * {gates} * GATE_W + {g} * GATE_W + col"

    names = Names(POINTWISE_SOURCE + GATE_OFFSETS)
    names.roles.update(argument_roles(group))
    ins, outs = names.arguments(group.inputs), names.arguments(group.outputs)
    tile = Tile(
        load_full=lambda i, v, g: f"tl.load({ins[i]}_ptr + {address(v, g)}, mask=mask, other=0.0).to(tl.float32)",
        load_channel=lambda i, v, g: (f"tl.load({ins[i]}_ptr + (offs // {ins[i]}_inner) % {ins[i]}_channels, mask=mask, "
                                      "other=0.0).to(tl.float32)"),
        gates=gates,
        gate_width=lambda v: gates if full_width(v) else 1,
    )
    emitter = Emitter(tile, group.input_index, names)
    lines = emitter.emit_all(group.nodes)
    for j, out in enumerate(group.outputs):
        for g, expr in enumerate(emitter.operand(out)):
            lines.append(f"    tl.store({outs[j]}_ptr + {address(out, g)}, {expr}.to({outs[j]}_ptr.dtype.element_ty), "
                         "mask=mask)")
    name = kernel_name(node)
    pointers = names.signature(group.inputs, group.outputs)
    vector_args = "".join(f"{ins[i]}_inner, {ins[i]}_channels, " for i in vectors) + ("GATE_W, " if gate_shape else "")
    source = fill(POINTWISE_SOURCE, name=name, pointers=pointers, body=lines, vector_args=vector_args,
                  gate_offsets=GATE_OFFSETS if gate_shape else "")
    return KernelSource(name, module_source(name, helpers_for(source) + "\n\n" + source))


def launch(fn, node, target, inputs, outputs):
    group = group_of(node)
    axis_of = {n.inputs[i].name: n.attrs["axis"] % n.outputs[0].type.rank for n in group.nodes
               for i in channel_inputs(n)}
    shape = outputs[0].shape
    vector_args = []
    for value in group.inputs:
        if value.name in axis_of:
            axis = axis_of[value.name]
            # a channels-last tensor's channels are innermost in storage: the channel axis's stride is 1
            inner = 1 if group.outputs[0].type.channels_last else prod(shape[axis + 1:])
            vector_args += [inner, shape[axis]]
    gated = gating(group)
    if gated is not None:  # the kernel runs over one gate's elements
        numel, vector_args = prod(gated[1][1:]) * outputs[0].shape[0], [*vector_args, gated[1][-1]]
    else:
        numel = outputs[0].numel()
    block = target.tile(numel, gpu=1024, interpreted=16384, large=INTERPRETER_TILE_ELEMENTS)
    fn[(triton.cdiv(numel, block),)](*inputs, *outputs, numel, *vector_args, BLOCK=block)


SOFTMAX_SOURCE = '''
@triton.jit
def {name}(x_ptr, out_ptr, R, L, LOG: tl.constexpr, BLOCK_R: tl.constexpr, BLOCK_L: tl.constexpr):
    rows = tl.program_id(0) * BLOCK_R + tl.arange(0, BLOCK_R)
    cols = tl.arange(0, BLOCK_L)
    row_ok = rows < R
    mask = row_ok[:, None] & (cols[None, :] < L)
    offs = rows[:, None] * L + cols[None, :]
    x = tl.load(x_ptr + offs, mask=mask, other=float("-inf")).to(tl.float32)
    # rows past the end are all padding: give them a harmless max and sum instead of NaNs
    shifted = x - tl.where(row_ok, tl.max(x, axis=1), 0.0)[:, None]
    e = tl.exp(shifted)
    total = tl.where(row_ok, tl.sum(e, axis=1), 1.0)
    if LOG:
        y = shifted - tl.log(total)[:, None]
    else:
        y = e / total[:, None]
    tl.store(out_ptr + offs, y.to(out_ptr.dtype.element_ty), mask=mask)
'''


def render_softmax(node):
    axis = node.attrs.get("axis", -1)
    if axis % node.outputs[0].type.rank != node.outputs[0].type.rank - 1:
        raise GraphError(f"{node.where}: the {node.op} kernel reduces the last axis only, got axis {axis}; "
                         "move the axis last before the softmax")
    name = kernel_name(node)
    return KernelSource(name, module_source(node.op, fill(SOFTMAX_SOURCE, {"LOG": node.op == "log_softmax"}, name=name)))


def launch_softmax(fn, node, target, inputs, outputs):
    (x,), (out,) = inputs, outputs
    length = x.shape[-1]
    rows = x.numel() // length
    block_l = triton.next_power_of_2(length)
    block_r = max(1, min(triton.next_power_of_2(rows), (4096 if target.interpreted else 2048) // block_l))
    fn[(triton.cdiv(rows, block_r),)](x, out, rows, length, LOG=node.op == "log_softmax",
                                      BLOCK_R=block_r, BLOCK_L=block_l)


SOFTMAX_BWD_SOURCE = '''
@triton.jit
def {name}(dy_ptr, y_ptr, dx_ptr, R, L, LOG: tl.constexpr, BLOCK_R: tl.constexpr, BLOCK_L: tl.constexpr):
    rows = tl.program_id(0) * BLOCK_R + tl.arange(0, BLOCK_R)
    cols = tl.arange(0, BLOCK_L)
    mask = (rows[:, None] < R) & (cols[None, :] < L)
    offs = rows[:, None] * L + cols[None, :]
    dy = tl.load(dy_ptr + offs, mask=mask, other=0.0).to(tl.float32)
    y = tl.load(y_ptr + offs, mask=mask, other=0.0).to(tl.float32)
    if LOG:
        dx = dy - tl.exp(y) * tl.sum(dy, axis=1)[:, None]
    else:
        dx = y * (dy - tl.sum(dy * y, axis=1)[:, None])
    tl.store(dx_ptr + offs, dx.to(dx_ptr.dtype.element_ty), mask=mask)
'''


def launch_softmax_bwd(fn, node, target, inputs, outputs):
    dy, y = inputs
    (dx,) = outputs
    length = dy.shape[-1]
    rows = dy.numel() // length
    block_l = triton.next_power_of_2(length)
    block_r = max(1, min(triton.next_power_of_2(rows), (4096 if target.interpreted else 2048) // block_l))
    fn[(triton.cdiv(rows, block_r),)](dy, y, dx, rows, length, LOG=node.op == "log_softmax_bwd",
                                      BLOCK_R=block_r, BLOCK_L=block_l)


for _op in (name for name, op in OPS.items() if op.math is not None):
    register_template(_op, render, launch)
register_template(CHAIN, render, launch)
register_anchor((CHAIN,), Anchor("elementwise chain", gates=True, chain=True))
for _op in ("softmax", "log_softmax"):
    register_template(_op, render_softmax, launch_softmax)
    register_template(f"{_op}_bwd", node_source(SOFTMAX_BWD_SOURCE, "softmax gradient",
                                                lambda node: {"LOG": node.op == "log_softmax_bwd"}), launch_softmax_bwd)
