"""Max / average pooling (1-D as 2-D with height 1) and global average pooling.

One template for both kinds: IS_MAX is a constexpr. Padding never wins a max (it reads -inf), a NaN always does (as torch) and
never counts in an average (the divisor is the number of real elements in the window)."""

from __future__ import annotations

import triton

from ..ir.ops import has_trait
from ..passes.kernel_names import kernel_name
from .expr import helpers_for
from .layout import channels_last
from .registry import INTERPRETER_TILE_ELEMENTS, KernelSource, lifter, module_source, register_template

POOL_SOURCE = '''
@triton.jit
def {name}(
    x_ptr, out_ptr, pos_ptr, TOTAL, C, H, W, OH, OW, STRIDE_H, STRIDE_W, PAD_H, PAD_W,
    KH: tl.constexpr, KW: tl.constexpr, IS_MAX: tl.constexpr, WITH_POSITIONS: tl.constexpr,
    CHANNELS_LAST: tl.constexpr, BLOCK: tl.constexpr,
):
    # one lane per output element, in storage order (the input and positions are stored alike)
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    valid = offs < TOTAL
    n, c, oh, ow = _nchw_of(offs, C, OH, OW, CHANNELS_LAST)
    if IS_MAX:
        acc = tl.full((BLOCK,), float("-inf"), tl.float32)
    else:
        acc = tl.zeros((BLOCK,), tl.float32)
    count = tl.zeros((BLOCK,), tl.float32)
    best_at = tl.zeros((BLOCK,), tl.int32)
    for kh in tl.static_range(KH):
        for kw in tl.static_range(KW):
            ih = oh * STRIDE_H - PAD_H + kh
            iw = ow * STRIDE_W - PAD_W + kw
            inside = valid & (ih >= 0) & (ih < H) & (iw >= 0) & (iw < W)
            x = tl.load(x_ptr + _nchw_at(n, c, ih, iw, C, H, W, CHANNELS_LAST), mask=inside,
                        other=float("-inf") if IS_MAX else 0.0)
            if IS_MAX:
                # as PyTorch: strictly greater wins (the first maximum), and so does every NaN (the last)
                take = (x.to(tl.float32) > acc) | (x != x)
                best_at = tl.where(take, kh * KW + kw, best_at)
                acc = tl.where(take, x.to(tl.float32), acc)
            else:
                acc += x.to(tl.float32)
            count += inside.to(tl.float32)
    if not IS_MAX:
        acc = acc / tl.maximum(count, 1.0)
    tl.store(out_ptr + offs, acc.to(out_ptr.dtype.element_ty), mask=valid)
    if WITH_POSITIONS:
        tl.store(pos_ptr + offs, best_at.to(tl.int8), mask=valid)
'''

GLOBAL_AVG_SOURCE = '''
@triton.jit
def {name}(x_ptr, out_ptr, R, C, L, CHANNELS_LAST: tl.constexpr, BLOCK_R: tl.constexpr, BLOCK_L: tl.constexpr):
    # a row per (sample, channel); its L pixels read as one (1, L) plane of the input
    rows = tl.program_id(0) * BLOCK_R + tl.arange(0, BLOCK_R)
    row_ok = rows < R
    n = rows // C
    c = rows % C
    acc = tl.zeros((BLOCK_R, BLOCK_L), tl.float32)
    for l0 in range(0, L, BLOCK_L):
        cols = l0 + tl.arange(0, BLOCK_L)
        mask = row_ok[:, None] & (cols[None, :] < L)
        at = _nchw_at(n[:, None], c[:, None], 0, cols[None, :], C, 1, L, CHANNELS_LAST)
        acc += tl.load(x_ptr + at, mask=mask, other=0.0).to(tl.float32)
    tl.store(out_ptr + rows, (tl.sum(acc, axis=1) / L).to(out_ptr.dtype.element_ty), mask=row_ok)
'''


def render_pool(node):
    kind = "max" if has_trait(node, "max_pool") else "avg"
    name = kernel_name(node)
    source = POOL_SOURCE.format(name=name)
    return KernelSource(name, module_source(f"{kind} pooling", helpers_for(source) + "\n\n" + source))


def launch_pool(fn, node, target, inputs, outputs):
    (x,) = inputs
    out, positions = (outputs[0], outputs[1]) if len(outputs) == 2 else (outputs[0], outputs[0])
    lift = lifter(x.dim() == 3)
    kernel, stride = lift(node.attrs["kernel"], 1), lift(node.attrs["stride"], 1)
    padding = lift(node.attrs["padding"], (0, 0))
    h, w = lift(x.shape[2:], 1)
    oh, ow = lift(out.shape[2:], 1)
    total = out.numel()
    block = target.tile(total, gpu=512, interpreted=16384, large=INTERPRETER_TILE_ELEMENTS)
    fn[(triton.cdiv(total, block),)](x, out, positions, total, x.shape[1], h, w, oh, ow, stride[0], stride[1],
                                      padding[0][0], padding[1][0], KH=kernel[0], KW=kernel[1],
                                      IS_MAX=has_trait(node, "max_pool"), WITH_POSITIONS=len(outputs) == 2,
                                      CHANNELS_LAST=channels_last(node.inputs[0]), BLOCK=block)


def render_global(node):
    name = kernel_name(node)
    source = GLOBAL_AVG_SOURCE.format(name=name)
    return KernelSource(name, module_source("global average pooling", helpers_for(source) + "\n\n" + source))


def launch_global(fn, node, target, inputs, outputs):
    (x,), (out,) = inputs, outputs
    rows, length = out.numel(), x.numel() // max(out.numel(), 1)
    block_r = target.tile(rows, gpu=32, interpreted=256, floor=1)
    block_l = target.tile(length, gpu=128, interpreted=1024, floor=1)
    fn[(triton.cdiv(rows, block_r),)](x, out, rows, x.shape[1], length, CHANNELS_LAST=channels_last(node.inputs[0]),
                                      BLOCK_R=block_r, BLOCK_L=block_l)


for _ndim in (1, 2):
    register_template(f"max_pool{_ndim}d", render_pool, launch_pool)
    register_template(f"max_pool{_ndim}d_argmax", render_pool, launch_pool)
    register_template(f"avg_pool{_ndim}d", render_pool, launch_pool)
    register_template(f"global_avg_pool{_ndim}d", render_global, launch_global)
