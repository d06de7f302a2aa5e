"""Gradient kernels other than the convolution's: pooling, bias, softmax rows, the embedding
scatter-add, and zero fills (for outputs no gradient reaches)."""

from __future__ import annotations

from math import prod

import triton

from ..ir import GraphError
from ..ir.ops import has_trait
from ..passes.kernel_names import kernel_name
from ..passes.templates import Anchor, register_anchor
from .epilogue import Emitter, Tile
from .expr import Names, helpers_for
from .group import argument_roles, group_of
from .layout import channels_last
from .registry import INTERPRETER_TILE_ELEMENTS, KernelSource, lifter, module_source, register_template

POOL_BWD_SOURCE = '''
@triton.jit
def {name}(
    {pointers}, TOTAL, C, H, W, PH, PW, STRIDE_H, STRIDE_W, PAD_H, PAD_W,
    KH: tl.constexpr, KW: tl.constexpr, REACH_H: tl.constexpr, REACH_W: tl.constexpr,
    IS_MAX: tl.constexpr, FROM_POSITIONS: tl.constexpr, CHANNELS_LAST: tl.constexpr, BLOCK: tl.constexpr,
):
    # one lane per input element, in storage order: gather from every window that covers it (no atomics,
    # deterministic); the output gradient, the saved input or positions are stored alike
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    valid = offs < TOTAL
    n, c, ih, iw = _nchw_of(offs, C, H, W, CHANNELS_LAST)
    grad = tl.zeros((BLOCK,), tl.float32)
    for dh in tl.static_range(REACH_H):
        for dw in tl.static_range(REACH_W):
            ph = (ih + PAD_H) // STRIDE_H - dh
            pw = (iw + PAD_W) // STRIDE_W - dw
            h0 = ph * STRIDE_H - PAD_H
            w0 = pw * STRIDE_W - PAD_W
            covers = valid & (ph >= 0) & (ph < PH) & (pw >= 0) & (pw < PW) & (ih < h0 + KH) & (iw < w0 + KW)
            window = _nchw_at(n, c, ph, pw, C, PH, PW, CHANNELS_LAST)
            g = tl.load({dy} + window, mask=covers, other=0.0).to(tl.float32)
{prologue}
            if FROM_POSITIONS:
                # {saved} holds each window's saved maximum position (int8, row-major in the window)
                at = tl.load({saved} + window, mask=covers, other=-1).to(tl.int32)
                grad += tl.where(covers & (at == (ih - h0) * KW + (iw - w0)), g, 0.0)
            elif IS_MAX:
                # as PyTorch: the window's first maximum in row-major order takes the gradient, or its last NaN
                best = tl.full((BLOCK,), float("-inf"), tl.float32)
                best_at = tl.full((BLOCK,), -1, tl.int32)
                for kh in tl.static_range(KH):
                    for kw in tl.static_range(KW):
                        hh = h0 + kh
                        ww = w0 + kw
                        inside = covers & (hh >= 0) & (hh < H) & (ww >= 0) & (ww < W)
                        v = tl.load({saved} + _nchw_at(n, c, hh, ww, C, H, W, CHANNELS_LAST), mask=inside,
                                    other=float("-inf")).to(tl.float32)
                        better = inside & ((v > best) | (v != v))
                        best = tl.where(better, v, best)
                        best_at = tl.where(better, hh * W + ww, best_at)
                grad += tl.where(covers & (best_at == ih * W + iw), g, 0.0)
            else:
                count = (tl.minimum(h0 + KH, H) - tl.maximum(h0, 0)) * (tl.minimum(w0 + KW, W) - tl.maximum(w0, 0))
                grad += tl.where(covers, g / tl.maximum(count, 1).to(tl.float32), 0.0)
{epilogue}
'''

BROADCAST_SOURCE = '''
@triton.jit
def {name}(dy_ptr, dx_ptr, TOTAL, C, L, CHANNELS_LAST: tl.constexpr, BLOCK: tl.constexpr):
    # dx in storage order, its L pixels as one (1, L) plane; dy is (N, C)
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < TOTAL
    n, c, _, _ = _nchw_of(offs, C, 1, L, CHANNELS_LAST)
    g = tl.load(dy_ptr + n * C + c, mask=mask, other=0.0).to(tl.float32)
    tl.store(dx_ptr + offs, (g / L).to(dx_ptr.dtype.element_ty), mask=mask)
'''

BIAS_GRAD_SOURCE = '''
@triton.jit
def {name}(dy_ptr, db_ptr, OUTER, C, INNER, BLOCK_J: tl.constexpr, BLOCK_C: tl.constexpr):
    # dy viewed as (OUTER, C, INNER); sums every (outer, inner) pair for a block of channels
    cols = tl.program_id(0) * BLOCK_C + tl.arange(0, BLOCK_C)
    col_ok = cols < C
    acc = tl.zeros((BLOCK_J, BLOCK_C), tl.float32)
    for j0 in range(0, OUTER * INNER, BLOCK_J):
        js = j0 + tl.arange(0, BLOCK_J)
        offs = _channel_view_at(js, cols, C, INNER)
        acc += tl.load(dy_ptr + offs, mask=(js < OUTER * INNER)[:, None] & col_ok[None, :], other=0.0).to(tl.float32)
    tl.store(db_ptr + cols, tl.sum(acc, axis=0).to(db_ptr.dtype.element_ty), mask=col_ok)
'''

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

FILL_SOURCE = '''
@triton.jit
def {name}(out_ptr, TOTAL, BLOCK: tl.constexpr):
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    tl.store(out_ptr + offs, tl.zeros((BLOCK,), tl.float32).to(out_ptr.dtype.element_ty), mask=offs < TOTAL)
'''

SCATTER_SOURCE = '''
@triton.jit
def {name}(dy_ptr, ids_ptr, table_ptr, R, D, BLOCK_R: tl.constexpr, BLOCK_D: tl.constexpr):
    # rows with the same id meet in the table: atomic adds sum them
    rows = tl.program_id(0) * BLOCK_R + tl.arange(0, BLOCK_R)
    cols = tl.program_id(1) * BLOCK_D + tl.arange(0, BLOCK_D)
    row_ok = rows < R
    mask = row_ok[:, None] & (cols[None, :] < D)
    ids = tl.load(ids_ptr + rows, mask=row_ok, other=0)
    g = tl.load(dy_ptr + rows[:, None] * D + cols[None, :], mask=mask, other=0.0)
    tl.atomic_add(table_ptr + ids[:, None] * D + cols[None, :], g, mask=mask)
'''


def _source(name: str, template: str, what: str) -> KernelSource:
    source = template.format(name=name)
    return KernelSource(name, module_source(what, helpers_for(source) + "\n\n" + source))


def _node_source(template: str, what: str):
    """render(node) for a template whose kernel is named for its node."""
    return lambda node: _source(kernel_name(node), template, what)


def render_pool_bwd(node):
    group = group_of(node)
    anchor = group.anchor
    kind = "max" if has_trait(anchor, "max_pool") else "avg"
    name = kernel_name(node)
    names = Names(POOL_BWD_SOURCE)
    names.roles.update(argument_roles(group))
    ins, outs = names.arguments(group.inputs), names.arguments(group.outputs)
    dy = f"{ins[group.input_index(group.data_input)]}_ptr"
    # the max pool's input, or its saved window positions; avg pooling reads neither
    saved = f"{ins[group.input_index(anchor.inputs[1])]}_ptr" if kind == "max" else dy
    tile = Tile(load_full=lambda i, v, g: f"tl.load({ins[i]}_ptr + offs, mask=valid, other=0.0).to(tl.float32)",
                load_channel=lambda i, v, g: "0.0")
    emitter = Emitter(tile, group.input_index, names)
    emitter.bind(anchor.outputs[0], ["grad"])
    lines = emitter.emit_all(group.nodes)
    lines += [f"    tl.store({outs[j]}_ptr + offs, {emitter.operand(v)[0]}.to({outs[j]}_ptr.dtype.element_ty), mask=valid)"
              for j, v in enumerate(group.outputs)]
    # the prologue (e.g. the ReLU's backward) on each window's gradient, its operands read at that window
    before = Emitter(Tile(load_full=lambda i, v, g: f"tl.load({ins[i]}_ptr + window, mask=covers, other=0.0).to(tl.float32)",
                          load_channel=lambda i, v, g: "0.0"), group.input_index, names, indent=" " * 12)
    if group.prologue:
        before.bind(group.data_input, ["g"])
        prologue_lines = before.emit_all(group.prologue)
        prologue_lines.append(f"            g = {before.operand(group.prologue[-1].outputs[0])[0]}")
    else:
        prologue_lines = []
    pointers = names.signature(group.inputs, group.outputs)
    source = POOL_BWD_SOURCE.format(name=name, pointers=pointers, epilogue="\n".join(lines), dy=dy, saved=saved,
                                    prologue="\n".join(prologue_lines))
    return KernelSource(name, module_source(f"{kind} pooling gradient", helpers_for(source) + "\n\n" + source))


def launch_pool_bwd(fn, node, target, inputs, outputs):
    group = group_of(node)
    anchor = group.anchor
    dy = inputs[group.input_index(group.data_input)]
    dx_shape = anchor.outputs[0].type.concrete(dy.shape[0])
    lift = lifter(len(dx_shape) == 3)
    kernel, stride = lift(anchor.attrs["kernel"], 1), lift(anchor.attrs["stride"], 1)
    padding = lift(anchor.attrs["padding"], (0, 0))
    h, w = lift(dx_shape[2:], 1)
    ph, pw = lift(dy.shape[2:], 1)
    total = outputs[0].numel()
    block = target.tile(total, gpu=256, interpreted=16384, large=INTERPRETER_TILE_ELEMENTS)
    fn[(triton.cdiv(total, block),)](
        *inputs, *outputs, total, dx_shape[1], h, w, ph, pw, stride[0], stride[1], padding[0][0], padding[1][0],
        KH=kernel[0], KW=kernel[1], REACH_H=triton.cdiv(kernel[0], stride[0]), REACH_W=triton.cdiv(kernel[1], stride[1]),
        IS_MAX=has_trait(anchor, "max_pool"), FROM_POSITIONS=has_trait(anchor, "from_positions"),
        CHANNELS_LAST=channels_last(anchor.outputs[0]), BLOCK=block)


def launch_global_bwd(fn, node, target, inputs, outputs):
    (dy,), (dx,) = inputs, outputs
    total = dx.numel()
    block = target.tile(total, gpu=1024, interpreted=16384, large=INTERPRETER_TILE_ELEMENTS)
    fn[(triton.cdiv(total, block),)](dy, dx, total, dx.shape[1], prod(node.attrs["input_size"]),
                                      CHANNELS_LAST=channels_last(node.outputs[0]), BLOCK=block)


def launch_bias_grad(fn, node, target, inputs, outputs):
    (dy,), (db,) = inputs, outputs
    axis = node.attrs["axis"] % dy.dim()
    # dy as (outer, channels, inner) in storage order: a channels-last one is (N * H * W, C, 1)
    if channels_last(node.inputs[0]) and axis != 1:
        raise GraphError(f"{node.where}: a channels-last bias gradient sums over channels (axis 1), got axis {axis}")
    channels = dy.shape[axis]
    inner = 1 if channels_last(node.inputs[0]) else prod(dy.shape[axis + 1:])
    outer = dy.numel() // (channels * inner)
    block_c = target.tile(channels, gpu=32, interpreted=128, floor=1)
    block_j = target.tile(outer * inner, gpu=128, interpreted=1024, floor=1)
    fn[(triton.cdiv(channels, block_c),)](dy, db, outer, channels, inner, BLOCK_J=block_j, BLOCK_C=block_c)


def launch_softmax_bwd(fn, node, target, inputs, outputs):
    dy, y = inputs
    (dx,) = outputs
    length = dy.shape[-1]
    rows = dy.numel() // length
    block_l = triton.next_power_of_2(length)
    block_r = max(1, min(triton.next_power_of_2(rows), (4096 if target.interpreted else 2048) // block_l))
    fn[(triton.cdiv(rows, block_r),)](dy, y, dx, rows, length, LOG=node.op == "log_softmax_bwd",
                                      BLOCK_R=block_r, BLOCK_L=block_l)


def launch_fill(fn, target, out) -> None:
    total = out.numel()
    block = target.tile(total, gpu=1024, interpreted=16384, large=INTERPRETER_TILE_ELEMENTS)
    fn[(triton.cdiv(total, block),)](out, total, BLOCK=block)


def launch_zeros(fn, node, target, inputs, outputs):
    launch_fill(fn, target, outputs[0])


def render_scatter(node):
    return _source(kernel_name(node), SCATTER_SOURCE, "embedding gradient (scatter-add)")


def launch_scatter(fn, node, target, inputs, outputs):
    """Zero the table gradient, then scatter-add the rows into it: two kernels."""
    from .codegen import load_kernel

    dy, ids = inputs
    (table,) = outputs
    launch_fill(load_kernel(_source("fill_zeros", FILL_SOURCE, "zero fill"), fn.counter), target, table)
    rows, dim = ids.numel(), table.shape[1]
    block_r = target.tile(rows, gpu=32, interpreted=512, floor=1)
    block_d = target.tile(dim, gpu=128, interpreted=512, floor=1)
    fn[(triton.cdiv(rows, block_r), triton.cdiv(dim, block_d))](dy, ids, table, rows, dim,
                                                                BLOCK_R=block_r, BLOCK_D=block_d)


for _ndim in (1, 2):
    register_template(f"max_pool{_ndim}d_bwd", render_pool_bwd, launch_pool_bwd)
    register_template(f"avg_pool{_ndim}d_bwd", render_pool_bwd, launch_pool_bwd)
    register_template(f"max_pool{_ndim}d_bwd_idx", render_pool_bwd, launch_pool_bwd)
    register_template(f"global_avg_pool{_ndim}d_bwd",
                      _node_source(BROADCAST_SOURCE, "global average pooling gradient"),
                      launch_global_bwd)
    # a pool gradient walks the pool's input: elementwise ops join like a chain's, none per channel
    register_anchor((f"max_pool{_ndim}d_bwd", f"avg_pool{_ndim}d_bwd", f"max_pool{_ndim}d_bwd_idx"),
                    Anchor("pool gradient", per_channel=False, prologue="elementwise", gates=True, chain=True))
register_template("bias_grad", _node_source(BIAS_GRAD_SOURCE, "bias gradient"),
                  launch_bias_grad)
for _op in ("softmax_bwd", "log_softmax_bwd"):
    register_template(_op, _node_source(SOFTMAX_BWD_SOURCE, "softmax gradient"), launch_softmax_bwd)
register_template("zeros", _node_source(FILL_SOURCE, "zero fill"), launch_zeros)
register_template("embedding_bwd", render_scatter, launch_scatter)
