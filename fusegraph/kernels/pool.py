"""Max / average pooling (1-D as 2-D with height 1) and global average pooling.

One template for both kinds: IS_MAX is a constexpr. Padding never wins a max (it reads -inf), a NaN always does (as torch) and
never counts in an average (the divisor is the number of real elements in the window).

Their gradients: a pool gradient walks the pool's input (a max pool's from the saved window
positions when it kept them), and hosts elementwise ops like a chain; the global pool's broadcasts."""

from __future__ import annotations

from math import prod

import triton

from ..ir.ops import has_trait
from ..passes.kernel_names import kernel_name
from ..passes.templates import Anchor, register_anchor
from .epilogue import Emitter, Tile
from .expr import HELPERS, Names, helpers_for
from .group import argument_roles, group_of
from .layout import channels_last
from .registry import KernelSource, register_template
from .source import fill, lifter, module_source, node_source
from .target import INTERPRETER_TILE_ELEMENTS

# the positions an average divides by: the window's input positions, and its padding positions within the
# padding counted (torch's count_include_pad; not a ceil-mode end pad)
HELPERS["_window_count("] = '''
@triton.jit
def _window_count(h0, w0, H, W, KH, KW, COUNTED_H0, COUNTED_H1, COUNTED_W0, COUNTED_W1):
    rows = tl.minimum(h0 + KH, H + COUNTED_H1) - tl.maximum(h0, -COUNTED_H0)
    cols = tl.minimum(w0 + KW, W + COUNTED_W1) - tl.maximum(w0, -COUNTED_W0)
    return tl.maximum(rows * cols, 1).to(tl.float32)
'''

POOL_SOURCE = '''
@triton.jit
def {name}(
    x_ptr, out_ptr, pos_ptr, TOTAL, C, H, W, OH, OW, STRIDE_H, STRIDE_W, PAD_H, PAD_W,
    COUNTED_H0, COUNTED_H1, COUNTED_W0, COUNTED_W1,
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
    if not IS_MAX:
        acc = acc / _window_count(oh * STRIDE_H - PAD_H, ow * STRIDE_W - PAD_W, H, W, KH, KW,
                                  COUNTED_H0, COUNTED_H1, COUNTED_W0, COUNTED_W1)
    tl.store(out_ptr + offs, acc.to(out_ptr.dtype.element_ty), mask=valid)
    if WITH_POSITIONS:
        tl.store(pos_ptr + offs, best_at.to(tl.int8), mask=valid)
'''


GLOBAL_AVG_SOURCE = '''
@triton.jit
def {name}(x_ptr, y_ptr, out_ptr, R, C, L, PRODUCT: tl.constexpr, MEAN: tl.constexpr,
           CHANNELS_LAST: tl.constexpr, BLOCK_R: tl.constexpr, BLOCK_L: tl.constexpr):
    # a row per (sample, channel); its L pixels read as one (1, L) plane of the input (PRODUCT: of x * y,
    # a channel scale's gradient; MEAN: divided by L, a global average)
    rows = tl.program_id(0) * BLOCK_R + tl.arange(0, BLOCK_R)
    row_ok = rows < R
    n = rows // C
    c = rows % C
    acc = tl.zeros((BLOCK_R, BLOCK_L), tl.float32)
    for l0 in range(0, L, BLOCK_L):
        cols = l0 + tl.arange(0, BLOCK_L)
        mask = row_ok[:, None] & (cols[None, :] < L)
        at = _nchw_at(n[:, None], c[:, None], 0, cols[None, :], C, 1, L, CHANNELS_LAST)
        value = tl.load(x_ptr + at, mask=mask, other=0.0).to(tl.float32)
        if PRODUCT:
            value = value * tl.load(y_ptr + at, mask=mask, other=0.0).to(tl.float32)
        acc += value
    total = tl.sum(acc, axis=1)
    if MEAN:
        total = total / L
    tl.store(out_ptr + rows, total.to(out_ptr.dtype.element_ty), mask=row_ok)
'''


def render_pool(node):
    kind = "max" if has_trait(node, "max_pool") else "avg"
    name = kernel_name(node)
    source = fill(POOL_SOURCE, {"IS_MAX": kind == "max", "WITH_POSITIONS": len(node.outputs) == 2}, name=name)
    return KernelSource(name, module_source(f"{kind} pooling", helpers_for(source) + "\n\n" + source))


def _counted(node, lift) -> tuple[int, int, int, int]:
    """The padding an average's divisor counts (torch's count_include_pad), per side: (top, bottom, left, right)."""
    counted = lift(node.attrs.get("counted") or ((0, 0),) * len(node.attrs["kernel"]), (0, 0))
    return (*counted[0], *counted[1])


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
                                      padding[0][0], padding[1][0], *_counted(node, lift), KH=kernel[0], KW=kernel[1],
                                      IS_MAX=has_trait(node, "max_pool"), WITH_POSITIONS=len(outputs) == 2,
                                      CHANNELS_LAST=channels_last(node.inputs[0]), BLOCK=block)


def render_global(node):
    name = kernel_name(node)
    product = node.op == "channel_scale_grad"
    source = fill(GLOBAL_AVG_SOURCE, {"PRODUCT": product, "MEAN": not product}, name=name)
    what = "a channel scale's gradient" if product else "global average pooling"
    return KernelSource(name, module_source(what, helpers_for(source) + "\n\n" + source))


def launch_global(fn, node, target, inputs, outputs):
    x, (out,) = inputs[-1], outputs  # (a channel scale's gradient: dy and x, stored alike)
    rows, length = out.numel(), x.numel() // max(out.numel(), 1)
    block_r = target.tile(rows, gpu=32, interpreted=256, floor=1)
    block_l = target.tile(length, gpu=128, interpreted=1024, floor=1)
    product = node.op == "channel_scale_grad"
    fn[(triton.cdiv(rows, block_r),)](inputs[0], x, out, rows, x.shape[1], length, PRODUCT=product, MEAN=not product,
                                      CHANNELS_LAST=channels_last(node.inputs[-1]), BLOCK_R=block_r, BLOCK_L=block_l)


POOL_BWD_SOURCE = '''
@triton.jit
def {name}(
    {pointers}, TOTAL, C, H, W, PH, PW, STRIDE_H, STRIDE_W, PAD_H, PAD_W,
    COUNTED_H0, COUNTED_H1, COUNTED_W0, COUNTED_W1,
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
            covers = (valid & (ph >= 0) & (ph < PH) & (pw >= 0) & (pw < PW)
                      & (ih < h0 + KH) & (iw < w0 + KW))
            window = _nchw_at(n, c, ph, pw, C, PH, PW, CHANNELS_LAST)
            g = tl.load({dy} + window, mask=covers, other=0.0).to(tl.float32)
            {prologue}
            if FROM_POSITIONS:
                # {saved} holds each window's saved maximum position (int8, row-major in the window)
                at = tl.load({saved} + window, mask=covers, other=-1).to(tl.int32)
                grad += tl.where(covers & (at == (ih - h0) * KW + (iw - w0)), {g}, 0.0)
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
                grad += tl.where(covers & (best_at == ih * W + iw), {g}, 0.0)
            else:
                count = _window_count(h0, w0, H, W, KH, KW, COUNTED_H0, COUNTED_H1, COUNTED_W0, COUNTED_W1)
                grad += tl.where(covers, {g} / count, 0.0)
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
    before.bind(group.data_input, ["g"])
    prologue = before.emit_all(group.prologue)
    window_grad = before.operand(group.prologue[-1].outputs[0])[0] if group.prologue else "g"
    pointers = names.signature(group.inputs, group.outputs)
    known = {"IS_MAX": kind == "max", "FROM_POSITIONS": has_trait(anchor, "from_positions")}
    source = fill(POOL_BWD_SOURCE, known, name=name, pointers=pointers, epilogue=lines, dy=dy, saved=saved,
                  prologue=prologue, g=window_grad)
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
        *_counted(anchor, lift), KH=kernel[0], KW=kernel[1], REACH_H=triton.cdiv(kernel[0], stride[0]),
        REACH_W=triton.cdiv(kernel[1], stride[1]),
        IS_MAX=has_trait(anchor, "max_pool"), FROM_POSITIONS=has_trait(anchor, "from_positions"),
        CHANNELS_LAST=channels_last(anchor.outputs[0]), BLOCK=block)


def launch_global_bwd(fn, node, target, inputs, outputs):
    (dy,), (dx,) = inputs, outputs
    total = dx.numel()
    block = target.tile(total, gpu=1024, interpreted=16384, large=INTERPRETER_TILE_ELEMENTS)
    fn[(triton.cdiv(total, block),)](dy, dx, total, dx.shape[1], prod(node.attrs["input_size"]),
                                      CHANNELS_LAST=channels_last(node.outputs[0]), BLOCK=block)


for _ndim in (1, 2):
    register_template(f"max_pool{_ndim}d", render_pool, launch_pool)
    register_template(f"max_pool{_ndim}d_argmax", render_pool, launch_pool)
    register_template(f"avg_pool{_ndim}d", render_pool, launch_pool)
    register_template(f"global_avg_pool{_ndim}d", render_global, launch_global)
    register_template(f"max_pool{_ndim}d_bwd", render_pool_bwd, launch_pool_bwd)
    register_template(f"avg_pool{_ndim}d_bwd", render_pool_bwd, launch_pool_bwd)
    register_template(f"max_pool{_ndim}d_bwd_idx", render_pool_bwd, launch_pool_bwd)
    register_template(f"global_avg_pool{_ndim}d_bwd", node_source(BROADCAST_SOURCE, "global average pooling gradient"),
                      launch_global_bwd)
    # a pool gradient walks the pool's input: elementwise ops join like a chain's, none per channel
    register_anchor((f"max_pool{_ndim}d_bwd", f"avg_pool{_ndim}d_bwd", f"max_pool{_ndim}d_bwd_idx"),
                    Anchor("pool gradient", per_channel=False, prologue="elementwise", gates=True, chain=True))


ADAPTIVE_SOURCE = '''
@triton.jit
def {name}(x_ptr, out_ptr, TOTAL, C, H, W, OH, OW, BIN_H: tl.constexpr, BIN_W: tl.constexpr,
           IS_MAX: tl.constexpr, CHANNELS_LAST: tl.constexpr, BLOCK: tl.constexpr):
    # one lane per output element; its bin is rows [h0, h1) and columns [w0, w1) of the input (torch's
    # bins), at most BIN_H x BIN_W
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    valid = offs < TOTAL
    n, c, oh, ow = _nchw_of(offs, C, OH, OW, CHANNELS_LAST)
    h0, h1, w0, w1 = _bin(oh, ow, H, W, OH, OW)
    if IS_MAX:
        acc = tl.full((BLOCK,), float("-inf"), tl.float32)
    else:
        acc = tl.zeros((BLOCK,), tl.float32)
    for dh in tl.static_range(BIN_H):
        for dw in tl.static_range(BIN_W):
            inside = valid & (h0 + dh < h1) & (w0 + dw < w1)
            x = tl.load(x_ptr + _nchw_at(n, c, h0 + dh, w0 + dw, C, H, W, CHANNELS_LAST), mask=inside,
                        other=float("-inf") if IS_MAX else 0.0).to(tl.float32)
            if IS_MAX:
                # as PyTorch: strictly greater wins, and so does every NaN (the last)
                acc = tl.where(inside & ((x > acc) | (x != x)), x, acc)
            else:
                acc += x
    if not IS_MAX:
        acc = acc / ((h1 - h0) * (w1 - w0)).to(tl.float32)
    tl.store(out_ptr + offs, acc.to(out_ptr.dtype.element_ty), mask=valid)
'''

ADAPTIVE_BWD_SOURCE = '''
@triton.jit
def {name}(dy_ptr, x_ptr, dx_ptr, TOTAL, C, H, W, OH, OW, BIN_H: tl.constexpr, BIN_W: tl.constexpr,
           REACH_H: tl.constexpr, REACH_W: tl.constexpr, IS_MAX: tl.constexpr, CHANNELS_LAST: tl.constexpr,
           BLOCK: tl.constexpr):
    # one lane per input element: it gathers from every bin that holds it (at most REACH_H x REACH_W, from
    # the first, oh0 x ow0), so no atomics
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    valid = offs < TOTAL
    n, c, ih, iw = _nchw_of(offs, C, H, W, CHANNELS_LAST)
    oh0 = (ih * OH) // H
    ow0 = (iw * OW) // W
    grad = tl.zeros((BLOCK,), tl.float32)
    for rh in tl.static_range(REACH_H):
        for rw in tl.static_range(REACH_W):
            oh = oh0 + rh
            ow = ow0 + rw
            h0, h1, w0, w1 = _bin(oh, ow, H, W, OH, OW)
            covers = valid & (oh < OH) & (ow < OW) & (ih >= h0) & (ih < h1) & (iw >= w0) & (iw < w1)
            g = tl.load(dy_ptr + _nchw_at(n, c, oh, ow, C, OH, OW, CHANNELS_LAST), mask=covers,
                        other=0.0).to(tl.float32)
            if IS_MAX:
                # the bin's maximum found again as the forward found it
                best = tl.full((BLOCK,), float("-inf"), tl.float32)
                best_at = tl.full((BLOCK,), -1, tl.int32)
                for dh in tl.static_range(BIN_H):
                    for dw in tl.static_range(BIN_W):
                        inside = covers & (h0 + dh < h1) & (w0 + dw < w1)
                        v = tl.load(x_ptr + _nchw_at(n, c, h0 + dh, w0 + dw, C, H, W, CHANNELS_LAST),
                                    mask=inside, other=float("-inf")).to(tl.float32)
                        better = inside & ((v > best) | (v != v))
                        best = tl.where(better, v, best)
                        best_at = tl.where(better, (h0 + dh) * W + w0 + dw, best_at)
                grad += tl.where(covers & (best_at == ih * W + iw), g, 0.0)
            else:
                grad += tl.where(covers, g / ((h1 - h0) * (w1 - w0)).to(tl.float32), 0.0)
    tl.store(dx_ptr + offs, grad.to(dx_ptr.dtype.element_ty), mask=valid)
'''

# torch's adaptive bins: output position o of `out` over an input dim of n holds [o n // out, ceil((o+1) n / out))
HELPERS["_bin("] = '''
@triton.jit
def _bin(oh, ow, H, W, OH, OW):
    return (oh * H) // OH, ((oh + 1) * H + OH - 1) // OH, (ow * W) // OW, ((ow + 1) * W + OW - 1) // OW
'''


def _bins(size: int, out: int) -> tuple[int, int]:
    """(the largest bin, the most bins one input position is in) of torch's adaptive bins."""
    bins = [(o * size // out, -(-(o + 1) * size // out)) for o in range(out)]
    largest = max(end - start for start, end in bins)
    reach = max(sum(start <= i < end for start, end in bins) for i in range(size))
    return largest, reach


def _adaptive_geometry(node, x_shape: tuple, out_shape: tuple) -> tuple:
    lift = lifter(len(x_shape) == 3)
    (h, w), (oh, ow) = lift(x_shape[2:], 1), lift(out_shape[2:], 1)
    (bin_h, reach_h), (bin_w, reach_w) = _bins(h, oh), _bins(w, ow)
    return (h, w, oh, ow), (bin_h, bin_w), (reach_h, reach_w)


def render_adaptive(node):
    name = kernel_name(node)
    source = fill(ADAPTIVE_SOURCE, {"IS_MAX": has_trait(node, "max_pool")}, name=name)
    return KernelSource(name, module_source("adaptive pooling", helpers_for(source) + "\n\n" + source))


def launch_adaptive(fn, node, target, inputs, outputs):
    (x,), (out,) = inputs, outputs
    sizes, (bin_h, bin_w), _ = _adaptive_geometry(node, tuple(x.shape), tuple(out.shape))
    block = target.tile(out.numel(), gpu=512, interpreted=16384, large=INTERPRETER_TILE_ELEMENTS)
    fn[(triton.cdiv(out.numel(), block),)](x, out, out.numel(), x.shape[1], *sizes, BIN_H=bin_h, BIN_W=bin_w,
                                           IS_MAX=has_trait(node, "max_pool"),
                                           CHANNELS_LAST=channels_last(node.inputs[0]), BLOCK=block)


def render_adaptive_bwd(node):
    name = kernel_name(node)
    source = fill(ADAPTIVE_BWD_SOURCE, {"IS_MAX": has_trait(node, "max_pool")}, name=name)
    return KernelSource(name, module_source("adaptive pooling gradient", helpers_for(source) + "\n\n" + source))


def launch_adaptive_bwd(fn, node, target, inputs, outputs):
    dy, (dx,) = inputs[0], outputs
    x = inputs[1] if len(inputs) == 2 else dx  # an average pool's gradient reads no input
    sizes, (bin_h, bin_w), (reach_h, reach_w) = _adaptive_geometry(node, tuple(dx.shape), tuple(dy.shape))
    block = target.tile(dx.numel(), gpu=256, interpreted=16384, large=INTERPRETER_TILE_ELEMENTS)
    fn[(triton.cdiv(dx.numel(), block),)](dy, x, dx, dx.numel(), dx.shape[1], *sizes, BIN_H=bin_h, BIN_W=bin_w,
                                          REACH_H=reach_h, REACH_W=reach_w, IS_MAX=has_trait(node, "max_pool"),
                                          CHANNELS_LAST=channels_last(node.outputs[0]), BLOCK=block)


for _ndim in (1, 2):
    for _kind in ("avg", "max"):
        register_template(f"adaptive_{_kind}_pool{_ndim}d", render_adaptive, launch_adaptive)
        register_template(f"adaptive_{_kind}_pool{_ndim}d_bwd", render_adaptive_bwd, launch_adaptive_bwd)


CHANNEL_SCALE_SOURCE = '''
@triton.jit
def {name}(x_ptr, s_ptr, out_ptr, TOTAL, C, H, W, CHANNELS_LAST: tl.constexpr, BLOCK: tl.constexpr):
    # each element times its sample's weight for its channel
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    valid = offs < TOTAL
    n, c, h, w = _nchw_of(offs, C, H, W, CHANNELS_LAST)
    x = tl.load(x_ptr + offs, mask=valid, other=0.0).to(tl.float32)
    s = tl.load(s_ptr + n * C + c, mask=valid, other=0.0).to(tl.float32)
    tl.store(out_ptr + offs, (x * s).to(out_ptr.dtype.element_ty), mask=valid)
'''


def launch_channel_scale(fn, node, target, inputs, outputs):
    x, s = inputs
    (out,) = outputs
    h, w = lifter(x.dim() == 3)(x.shape[2:], 1)
    block = target.tile(out.numel(), gpu=1024, interpreted=16384, large=INTERPRETER_TILE_ELEMENTS)
    fn[(triton.cdiv(out.numel(), block),)](x, s, out, out.numel(), x.shape[1], h, w,
                                           CHANNELS_LAST=channels_last(node.inputs[0]), BLOCK=block)


register_template("channel_scale", node_source(CHANNEL_SCALE_SOURCE, "per-sample channel scaling"), launch_channel_scale)
register_template("channel_scale_grad", render_global, launch_global)
