"""conv1d / conv2d as an implicit GEMM on tl.dot, with a generated epilogue and an optional pool.

Rows are output pixels (pooled pixels when the group ends in a pool), columns output channels, and
the reduction runs over (input channel, kernel row, kernel column). With TAP_MAJOR (inputs of 16
channels or more) the K loop runs over the kernel's taps, then blocks of channels of one tap: each
tap's window position is computed once per tap, not decoded per element by integer division, and
no lane of a channel block is wasted; with fewer channels the flat (channel, tap) order fills the
blocks that few channels would leave mostly empty. With a pool, each program
computes the conv at every window position of its pooled pixels and reduces them in registers,
so the pre-pool map is never written. A global average pool is an average pool whose window is the
whole map (a loop, not unrolled, over its positions): each row is one image. conv1d is conv2d with
height 1.

Gradients, as implicit GEMMs too. Input gradient: rows are input pixels, columns input channels, the
reduction runs over (output channel, kernel row, kernel column) through the output positions each
pixel fed. Weight gradient: rows are output channels, columns (input channel, kernel row, kernel
column), the reduction runs over every output position of the batch."""

from __future__ import annotations

import torch
import triton

from ..ir.ops import has_trait
from ..passes.kernel_names import kernel_name
from ..passes.templates import Anchor, register_anchor, register_check
from .descriptors import MAX_BOX, descriptor
from .epilogue import Emitter, Tile
from .expr import HELPERS, Names, helpers_for
from .group import argument_roles, group_of, prologue_lines
from .layout import channels_last
from .registry import KernelSource, register_template
from .source import fill, lifter, module_source
from .target import Target, interpreter_budget
from .tuning import conv_shape_key

CONV_SOURCE = '''
@triton.jit
def {name}(
    {pointers}, x_desc, w_desc,
    N, C, H, W, O, OH, OW, PH, PW, CG, OG, COL_BLOCKS,
    STRIDE_H, STRIDE_W, PAD_H, PAD_W, DIL_H, DIL_W,
    POOL_STRIDE_H, POOL_STRIDE_W, POOL_PAD_H, POOL_PAD_W,
    KH: tl.constexpr, KW: tl.constexpr, POOL_KH: tl.constexpr, POOL_KW: tl.constexpr,
    PRECISION: tl.constexpr, TAP_MAJOR: tl.constexpr, DEPTHWISE: tl.constexpr,
    X_CL: tl.constexpr, W_CL: tl.constexpr, OUT_CL: tl.constexpr, X_DESC: tl.constexpr, W_DESC: tl.constexpr,
    BOX_N: tl.constexpr, BOX_H: tl.constexpr, BOX_W: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
):
    # rows: output (pooled) pixels; with X_DESC a box of them, as the copy engine reads a tap's inputs
    n, ph, pw, row_ok, n0, h0, w0 = _pixel_rows(N, PH, PW, X_DESC, BOX_N, BOX_H, BOX_W, BLOCK_M)
    # columns: filters of one group (OG reading its CG channels), or depthwise each reading channel cols // OG
    cols, col_ok, group, in_group = _conv_columns(OG, O, COL_BLOCKS, DEPTHWISE, BLOCK_N)
    K = CG * KH * KW
    {pool_init}
    for pool_kh in {window}(POOL_KH):
        for pool_kw in {window}(POOL_KW):
            oh = ph * POOL_STRIDE_H - POOL_PAD_H + pool_kh
            ow = pw * POOL_STRIDE_W - POOL_PAD_W + pool_kw
            # a window position in the pool's padding is no conv output: it takes no part
            pos_ok = row_ok & (oh >= 0) & (oh < OH) & (ow >= 0) & (ow < OW)
            tile_mask = pos_ok[:, None] & col_ok[None, :]
            acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
            if DEPTHWISE:
                for tap in range(0, KH * KW):
                    tap_h = oh * STRIDE_H - PAD_H + (tap // KW) * DIL_H
                    tap_w = ow * STRIDE_W - PAD_W + (tap % KW) * DIL_W
                    tap_ok = pos_ok & (tap_h >= 0) & (tap_h < H) & (tap_w >= 0) & (tap_w < W)
                    x_mask = tap_ok[:, None] & col_ok[None, :]
                    x_at = _nchw_at(n[:, None], cols[None, :] // OG, tap_h[:, None], tap_w[:, None], C, H, W, X_CL)
                    x = tl.load({x} + x_at, mask=x_mask, other=0.0)
                    {prologue}
                    w = tl.load({w} + _nchw_at(cols, 0, tap // KW, tap % KW, 1, KH, KW, W_CL), mask=col_ok, other=0.0)
                    acc += x.to(tl.float32) * w.to(tl.float32)[None, :]
            elif TAP_MAJOR:
                # one loop over every (tap, channel block) step, so the loads pipeline across taps
                channel_steps = tl.cdiv(CG, BLOCK_K)
                for k_step in range(0, KH * KW * channel_steps):
                    tap = k_step // channel_steps
                    c0 = (k_step % channel_steps) * BLOCK_K
                    channels = c0 + tl.arange(0, BLOCK_K)
                    channel_ok = channels < CG
                    if X_DESC:
                        # stride 1: the tap's inputs are the rows' box shifted; the copy engine's zero fill pads
                        x = x_desc.load([n0, h0 - PAD_H + (tap // KW) * DIL_H, w0 - PAD_W + (tap % KW) * DIL_W, c0])
                        x = tl.reshape(x, [BLOCK_M, BLOCK_K])
                    else:
                        tap_h = oh * STRIDE_H - PAD_H + (tap // KW) * DIL_H
                        tap_w = ow * STRIDE_W - PAD_W + (tap % KW) * DIL_W
                        # the conv's padding is the masked-out part of the window: it reads as zero
                        tap_ok = pos_ok & (tap_h >= 0) & (tap_h < H) & (tap_w >= 0) & (tap_w < W)
                        x_mask = tap_ok[:, None] & channel_ok[None, :]
                        x_at = _nchw_at(n[:, None], group * CG + channels[None, :], tap_h[:, None], tap_w[:, None],
                                        C, H, W, X_CL)
                        x = tl.load({x} + x_at, mask=x_mask, other=0.0)
                        {prologue}
                    if W_DESC:
                        # the packed (O, KH * KW, C) filters: a (filters, channels) box of the tap, K-major
                        w = tl.trans(tl.reshape(w_desc.load([tl.program_id(1) * BLOCK_N, tap, c0]), [BLOCK_N, BLOCK_K]))
                    else:
                        w_at = _nchw_at(cols[None, :], channels[:, None], tap // KW, tap % KW, CG, KH, KW, W_CL)
                        w = tl.load({w} + w_at, mask=channel_ok[:, None] & col_ok[None, :], other=0.0)
                    acc += tl.dot(x, w, input_precision=PRECISION)
            else:
                for k0 in range(0, K, BLOCK_K):
                    ks = k0 + tl.arange(0, BLOCK_K)
                    k_ok = ks < K
                    c = ks // (KH * KW)
                    kh = (ks // KW) % KH
                    kw = ks % KW
                    ih = oh[:, None] * STRIDE_H - PAD_H + kh[None, :] * DIL_H
                    iw = ow[:, None] * STRIDE_W - PAD_W + kw[None, :] * DIL_W
                    inside = (ih >= 0) & (ih < H) & (iw >= 0) & (iw < W)
                    x_mask = pos_ok[:, None] & k_ok[None, :] & inside
                    x = tl.load({x} + _nchw_at(n[:, None], group * CG + c[None, :], ih, iw, C, H, W, X_CL),
                                mask=x_mask, other=0.0)
                    {prologue}
                    w_at = _nchw_at(cols[None, :], c[:, None], kh[:, None], kw[:, None], CG, KH, KW, W_CL)
                    w = tl.load({w} + w_at, mask=k_ok[:, None] & col_ok[None, :], other=0.0)
                    acc += tl.dot(x, w, input_precision=PRECISION)
            out_offs = _nchw_at(n[:, None], cols[None, :], oh[:, None], ow[:, None], O, OH, OW, OUT_CL)
            {epilogue}
            {pool_step}
    {finish}
'''


def _pool(group):
    """The pool (or global average pool) the group ends in, if any."""
    return next((n for n in group.nodes if has_trait(n, "pool") or has_trait(n, "global_pool")), None)


def render(node):
    group = group_of(node)
    anchor = group.anchor
    pool = _pool(group)
    name = kernel_name(node)
    ix, iw = group.input_index(group.data_input), group.input_index(anchor.inputs[1])
    names = Names(CONV_SOURCE)
    names.roles.update(argument_roles(group))
    ins, outs = names.arguments(group.inputs), names.arguments(group.outputs)
    tile = Tile(
        load_full=lambda i, v, g: f"tl.load({ins[i]}_ptr + out_offs, mask=tile_mask, other=0.0).to(tl.float32)",
        load_channel=lambda i, v, g: f"tl.load({ins[i]}_ptr + cols, mask=col_ok, other=0.0).to(tl.float32)[None, :]",
    )
    emitter = Emitter(tile, group.input_index, names, indent=" " * 12)
    emitter.bind(anchor.outputs[0], ["acc"])
    at = group.nodes.index(pool) if pool is not None else len(group.nodes)
    epilogue = emitter.emit_all(group.nodes[:at])
    pointers = names.signature(group.inputs, group.outputs)
    if pool is None:
        stores = [f"            tl.store({outs[j]}_ptr + out_offs, {emitter.operand(v)[0]}.to({outs[j]}_ptr.dtype.element_ty), "
                  "mask=tile_mask)" for j, v in enumerate(group.outputs)]
        pool_init, pool_step, finish = "", "\n".join(stores), ""
    else:
        (value,) = emitter.operand(pool.inputs[0])
        if has_trait(pool, "max_pool"):
            pool_init = ("    pooled = tl.full((BLOCK_M, BLOCK_N), float('-inf'), tl.float32)\n"
                         "    best_at = tl.zeros((BLOCK_M, BLOCK_N), tl.int32)")
            # as PyTorch: strictly greater wins (the first maximum in row-major order), and so does every NaN
            pool_step = (f"            candidate = tl.where(tile_mask, {value}, float('-inf'))\n"
                         "            take = (candidate > pooled) | (candidate != candidate)\n"
                         "            best_at = tl.where(take, pool_kh * POOL_KW + pool_kw, best_at)\n"
                         "            pooled = tl.where(take, candidate, pooled)")
            result = None  # the running maximum is the pooled value
        else:
            pool_init = ("    pooled = tl.zeros((BLOCK_M, BLOCK_N), tl.float32)\n"
                         "    count = tl.zeros((BLOCK_M,), tl.float32)")
            pool_step = (f"            pooled += tl.where(tile_mask, {value}, 0.0)\n"
                         "            count += pos_ok.to(tl.float32)")
            result = "pooled / tl.maximum(count, 1.0)[:, None]"  # the mean of the window's real positions
        # after the pool: elementwise ops on the pooled tile (an activation moved past a max pool)
        after = Emitter(Tile(
            load_full=lambda i, v, g: f"tl.load({ins[i]}_ptr + pooled_offs, mask=pooled_mask, other=0.0).to(tl.float32)",
            load_channel=lambda i, v, g: f"tl.load({ins[i]}_ptr + cols, mask=col_ok, other=0.0).to(tl.float32)[None, :]",
        ), group.input_index, names)
        after.bind(pool.outputs[0], ["pooled" if result is None else "result"])
        if len(pool.outputs) == 2:
            after.bind(pool.outputs[1], ["best_at"])
        # the pool follows its input's layout (ir/ops traits): OUT_CL serves both
        lines = ["    pooled_offs = _nchw_at(n[:, None], cols[None, :], ph[:, None], pw[:, None], O, PH, PW, OUT_CL)",
                 "    pooled_mask = row_ok[:, None] & col_ok[None, :]", *([f"    result = {result}"] if result else [])]
        lines += after.emit_all(group.nodes[at + 1:])
        lines += [f"    tl.store({outs[j]}_ptr + pooled_offs, {after.operand(v)[0]}.to({outs[j]}_ptr.dtype.element_ty), "
                  "mask=pooled_mask)" for j, v in enumerate(group.outputs)]
        finish = "\n".join(lines)
    # NOTE: fewer than 16 input channels never run tap by tap; with more, the GPU always does, and the
    # interpreter as the batch makes it cheaper (tap_major_conv): both branches stay
    known = {"TAP_MAJOR": False} if anchor.inputs[1].type.shape[1] < 16 else {}  # the weight's: a group's channels
    known["DEPTHWISE"] = depthwise(anchor)
    if group.prologue or pool is not None or known.get("TAP_MAJOR") is False or known["DEPTHWISE"]:
        known["X_DESC"] = False  # a prologue needs its mask, a pool its window positions: rows by pointer
    source = fill(CONV_SOURCE, known, name=name, pointers=pointers, x=f"{ins[ix]}_ptr", w=f"{ins[iw]}_ptr",
                  prologue=prologue_lines(group, "x", "x_mask", "", names),
                  window="range" if pool is not None and has_trait(pool, "global_pool") else "tl.static_range",
                  pool_init=pool_init, epilogue=epilogue, pool_step=pool_step, finish=finish)
    return KernelSource(name, module_source(f"{name} (implicit GEMM)", helpers_for(source) + "\n\n" + source))


def depthwise(node) -> bool:
    """Whether a conv (or either of its gradients) is depthwise: each filter reads one input channel (groups
    > 1, the weight's second axis 1: input 1 of the conv and of its input gradient, the weight gradient's
    output). Its kernels run each filter's taps elementwise, a program over many groups, with no dot."""
    weight = node.outputs[0] if node.op.endswith("bwd_weight") else node.inputs[1]
    return node.attrs.get("groups", 1) > 1 and weight.type.shape[1] == 1


def launch(fn, node, target, inputs, outputs):
    group = group_of(node)
    anchor = group.anchor
    pool = _pool(group)
    x = inputs[group.input_index(group.data_input)]
    w = inputs[group.input_index(anchor.inputs[1])]
    lift = lifter(anchor.inputs[0].type.rank == 3)
    stride, dilation = lift(anchor.attrs["stride"], 1), lift(anchor.attrs["dilation"], 1)
    padding = lift(anchor.attrs["padding"], (0, 0))
    n, c = x.shape[:2]
    h, wd = lift(x.shape[2:], 1)
    kh, kw = lift(w.shape[2:], 1)
    o = w.shape[0]
    oh, ow = lift(anchor.outputs[0].type.shape[2:], 1)
    if pool is None:
        pool_kernel, pool_stride, pool_padding, (ph, pw) = (1, 1), (1, 1), ((0, 0), (0, 0)), (oh, ow)
    elif has_trait(pool, "global_pool"):  # one window, the whole map
        pool_kernel, pool_stride, pool_padding, (ph, pw) = (oh, ow), (oh, ow), ((0, 0), (0, 0)), (1, 1)
    else:
        pool_kernel, pool_stride = lift(pool.attrs["kernel"], 1), lift(pool.attrs["stride"], 1)
        pool_padding = lift(pool.attrs["padding"], (0, 0))
        ph, pw = lift(pool.outputs[0].type.shape[2:], 1)
    # NOTE: a pooled tile keeps a window position's accumulator beside the running pool: 64 rows spill
    # registers on sm_90, and so do 32 x 32 x 32 tiles (fp32 as tf32x3: 248-296 B/thread at CIFAR widths;
    # the benchmark block's 32 x 32 x 16 does not), as tests/kernels/test_gpu_compile.py finds
    groups = anchor.attrs.get("groups", 1)
    cg, og = c // groups, o // groups  # a group's channels and filters
    tap_major = tap_major_conv(cg, kh * kw, n * ph * pw, target)
    gpu_m, gpu_n, gpu_k, options, min_m = _gpu_conv_tiles(target, x.dtype, tap_major, pool is not None)
    layouts = (channels_last(group.data_input), channels_last(anchor.outputs[0]))
    if not layouts[1] and x.dtype != torch.float32:
        gpu_n = 64  # NOTE: an NCHW store addresses each element apart: 128 x 128 spills 432 B/thread on sm_90
    block_k = target.tile(cg if tap_major else cg * kh * kw, gpu=gpu_k, interpreted=256,
                          large=None if tap_major else 1024)
    block_n = target.tile(og, gpu=16 if pool is not None and block_k > 16 and min_m < 64 else gpu_n,
                          interpreted=128, large=256)
    block_m = target.tile(n * ph * pw, gpu=gpu_m, interpreted=1024, large=interpreter_budget(block_k, block_n))
    block_m, block_n = target.spread(n * ph * pw, o, block_m, block_n, min_m=min_m)
    # NOTE: the tuned tiles are dense convs'; a grouped one takes the rule above
    tuned = target.tuned_conv(conv_shape_key(x.dtype, c, h, wd, o, (kh, kw), stride, pool is not None, layouts)) \
        if groups == 1 else {}
    block_m, block_n, block_k = (tuned.pop(key, default) for key, default in
                                 (("block_m", block_m), ("block_n", block_n), ("block_k", block_k)))
    by_filter = depthwise(anchor)
    if by_filter:  # columns run over all the filters, a tap at a time: no reduction block
        options = {"num_warps": 4, "num_stages": 3}
        block_n = target.tile(o, gpu=64, interpreted=128, large=256)
        block_m = target.tile(n * ph * pw, gpu=64 if pool is None else 32, interpreted=1024,
                              large=interpreter_budget(block_n))
        block_m, block_n = target.spread(n * ph * pw, o, block_m, block_n)
    col_blocks = triton.cdiv(og, block_n)
    grid = (triton.cdiv(n * ph * pw, block_m), triton.cdiv(o, block_n) if by_filter else groups * col_blocks)
    x_desc, w_desc, box = None, None, (1, 1, 1)
    if target.descriptors and tap_major and groups == 1 and channels_last(anchor.inputs[1]):
        shifted = pool is None and layouts[0] and tuple(stride) == (1, 1) and not group.prologue
        x_desc, w_desc, box, grid = tap_descriptors(w, (block_n, block_k), x if shifted else None, (n, h, wd, c),
                                                    (n, oh, ow), block_m, block_k, grid)
    fn[grid](*inputs, *outputs, x_desc, w_desc, n, c, h, wd, o, oh, ow, ph, pw, cg, og, col_blocks,
             stride[0], stride[1], padding[0][0], padding[1][0],
             dilation[0], dilation[1], pool_stride[0], pool_stride[1], pool_padding[0][0], pool_padding[1][0],
             KH=kh, KW=kw, POOL_KH=pool_kernel[0], POOL_KW=pool_kernel[1], PRECISION=target.precision(x.dtype),
             TAP_MAJOR=tap_major, DEPTHWISE=by_filter, X_CL=layouts[0], W_CL=channels_last(anchor.inputs[1]), OUT_CL=layouts[1],
             X_DESC=x_desc is not None, W_DESC=w_desc is not None, BOX_N=box[0], BOX_H=box[1], BOX_W=box[2],
             BLOCK_M=block_m, BLOCK_N=block_n, BLOCK_K=block_k, **{**target.launch_options(options), **tuned})


def _gpu_conv_tiles(target: Target, dtype: torch.dtype, tap_major: bool, pooled: bool) -> tuple:
    """(M, N, K caps, launch options, the fewest rows the grid spreading may leave) of a conv's implicit
    GEMM on the GPU. Half precision: the Hopper tile (Target.dot_tiles) whose rows never drop under a
    warpgroup MMA's 64; a pooled tile keeps a window position's accumulator beside the running pool, so
    64 x 64 x 32 on 4 warps. fp32 (tf32x3) as measured on the H200: 64 x 64 x 32, or 16 channels a step
    tap by tap (32 spill 312 B/thread there), and 32 pooled rows (64 spill)."""
    gpu_m, gpu_n, gpu_k, options = target.dot_tiles(dtype)
    if dtype == torch.float32:
        return (32 if pooled else gpu_m), gpu_n, (16 if tap_major else gpu_k), options, 16
    if pooled:
        return 64, 64, 32, {"num_warps": 4, "num_stages": 3}, 64
    return gpu_m, gpu_n, gpu_k, options, 64


def packed_filters(w: torch.Tensor, filters: int, channels: int):
    """A descriptor of channels-last filters as (O, KH * KW, C), copied a tap's (filters, channels) box at a
    time (a box past O or C reads zeros), or None where the copy engine cannot address them."""
    o, c = w.shape[:2]
    taps = w[0, 0].numel()
    return descriptor(w, (o, taps, c), (taps * c, c, 1), (filters, 1, channels))


def tap_descriptors(w: torch.Tensor, filter_box: tuple[int, int], shifted: torch.Tensor | None, sizes: tuple,
                    pixels: tuple[int, int, int], block_m: int, block_k: int, grid: tuple) -> tuple:
    """(operand descriptor, filter descriptor, box, grid) of a tap-major conv kernel (forward or input
    gradient) that takes TMA descriptors: the packed filters in (filters, channels) `filter_box` boxes;
    `shifted`, the (n, h, w, c) `sizes` operand whose tap inputs are the rows' box shifted (stride 1,
    channels-last), in boxes of pixel_box(`pixels`) images x rows x columns, its programs one per box.
    What the copy engine cannot address stays None (the kernel's pointer path), with box (1, 1, 1) and
    `grid` as they were."""
    w_desc = packed_filters(w, *filter_box)
    box = pixel_box(*pixels, block_m) if shifted is not None else None
    if box is not None:
        n, h, wd, c = sizes
        operand = descriptor(shifted, sizes, (h * wd * c, wd * c, c, 1), (*box, block_k))
        if operand is not None:
            boxes = triton.cdiv(pixels[0], box[0]) * triton.cdiv(pixels[1], box[1]) * triton.cdiv(pixels[2], box[2])
            return operand, w_desc, box, (boxes, grid[1])
    return None, w_desc, (1, 1, 1), grid


def pixel_box(n: int, h: int, w: int, rows: int) -> tuple[int, int, int] | None:
    """(images, rows, columns) of the box of `rows` pixels (powers of two) that tiles an (n, h, w) batch of
    maps with the fewest pixels past its edges (128 x 14 x 14 in boxes of 32 images' 2 x 2 pixels: none),
    or None where even that box computes more than an eighth more pixels than blocks of `rows` consecutive
    pixels do (3 x 14 x 14: 768 against 640)."""
    def padded(box):
        return triton.cdiv(n, box[0]) * triton.cdiv(h, box[1]) * triton.cdiv(w, box[2]) * rows

    def powers(limit):
        return [1 << i for i in range(rows.bit_length()) if 1 << i <= min(MAX_BOX, triton.next_power_of_2(limit))]

    boxes = [(rows // (bh * bw), bh, bw) for bh in powers(h) for bw in powers(w)
             if rows % (bh * bw) == 0 and rows // (bh * bw) <= min(MAX_BOX, triton.next_power_of_2(n))]
    if not boxes:
        return None
    best = min(boxes, key=lambda box: (padded(box), box[0]))
    return best if padded(best) * 8 <= triton.cdiv(n * h * w, rows) * rows * 9 else None


def tap_major_conv(channels: int, taps: int = 1, rows: int = 0, target: Target | None = None) -> bool:
    """Taps outer, channel blocks inner, once a tap's channels fill the smallest tl.dot block (16). In the
    interpreter's large tiles, whose cost is the tile steps it takes (a fixed cost per tl op), only where
    that takes fewer steps than one flat (channel, tap) reduction over `rows` output rows."""
    if channels < 16 or target is None or not target.large_interpreter_tiles:
        return channels >= 16
    flat_k = target.tile(channels * taps, gpu=0, interpreted=256, large=1024)
    flat = triton.cdiv(rows, interpreter_budget(flat_k)) * triton.cdiv(channels * taps, flat_k)
    tap_k = target.tile(channels, gpu=0, interpreted=256)
    return triton.cdiv(rows, interpreter_budget(tap_k)) * taps * triton.cdiv(channels, tap_k) <= flat


HELPERS["_tap_reach("] = '''
@triton.jit
def _tap_reach(ih, iw, kh, kw, PAD_H, PAD_W, DIL_H, DIL_W, STRIDE_H, STRIDE_W, OH, OW):
    # the output position kernel tap (kh, kw) reached from input pixel (ih, iw), and whether it did: the
    # stride lands on it inside the output (any shapes that broadcast: a tap for every row, or rows x taps)
    tap_h = ih + PAD_H - kh * DIL_H
    tap_w = iw + PAD_W - kw * DIL_W
    at_h = tap_h // STRIDE_H
    at_w = tap_w // STRIDE_W
    hit = ((tap_h >= 0) & (tap_w >= 0) & (tap_h % STRIDE_H == 0) & (tap_w % STRIDE_W == 0)
           & (at_h < OH) & (at_w < OW))
    return at_h, at_w, hit
'''


INPUT_SOURCE = '''
@triton.jit
def {name}(
    dy_ptr, w_ptr, dx_ptr, dy_desc, w_desc, N, C, H, W, O, OH, OW, STRIDE_H, STRIDE_W, PAD_H, PAD_W, DIL_H, DIL_W,
    CG, OG, COL_BLOCKS, KH: tl.constexpr, KW: tl.constexpr, PRECISION: tl.constexpr, TAP_MAJOR: tl.constexpr,
    DEPTHWISE: tl.constexpr, DY_CL: tl.constexpr, W_CL: tl.constexpr, DX_CL: tl.constexpr,
    DY_DESC: tl.constexpr, W_DESC: tl.constexpr, BOX_N: tl.constexpr, BOX_H: tl.constexpr, BOX_W: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
):
    # rows: input pixels; with DY_DESC a box of them, as the copy engine reads a tap's output gradients
    n, ih, iw, row_ok, n0, h0, w0 = _pixel_rows(N, H, W, DY_DESC, BOX_N, BOX_H, BOX_W, BLOCK_M)
    # columns: channels of one group (its OG filters alone read them), or depthwise each feeding its own OG
    cols, col_ok, group, in_group = _conv_columns(CG, C, COL_BLOCKS, DEPTHWISE, BLOCK_N)
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    if DEPTHWISE:
        for tap in range(0, KH * KW):
            at_h, at_w, hit = _tap_reach(ih, iw, tap // KW, tap % KW, PAD_H, PAD_W, DIL_H, DIL_W, STRIDE_H, STRIDE_W,
                                         OH, OW)
            hit = row_ok & hit
            for j in range(0, OG):
                filters = cols * OG + j
                dy_at = _nchw_at(n[:, None], filters[None, :], at_h[:, None], at_w[:, None], O, OH, OW, DY_CL)
                dy = tl.load(dy_ptr + dy_at, mask=hit[:, None] & col_ok[None, :], other=0.0)
                w = tl.load(w_ptr + _nchw_at(filters, 0, tap // KW, tap % KW, 1, KH, KW, W_CL), mask=col_ok, other=0.0)
                acc += dy.to(tl.float32) * w.to(tl.float32)[None, :]
    elif TAP_MAJOR:
        # one loop over every (tap, filter block) step, so the loads pipeline across taps
        filter_steps = tl.cdiv(OG, BLOCK_K)
        for k_step in range(0, KH * KW * filter_steps):
            tap = k_step // filter_steps
            o0 = (k_step % filter_steps) * BLOCK_K
            channels = group * OG + o0 + tl.arange(0, BLOCK_K)
            channel_ok = o0 + tl.arange(0, BLOCK_K) < OG
            if DY_DESC:
                # stride 1: the positions this tap reached are the rows' box shifted back; zero fill past the edges
                dy = dy_desc.load([n0, h0 + PAD_H - (tap // KW) * DIL_H, w0 + PAD_W - (tap % KW) * DIL_W, o0])
                dy = tl.reshape(dy, [BLOCK_M, BLOCK_K])
            else:
                at_h, at_w, hit = _tap_reach(ih, iw, tap // KW, tap % KW, PAD_H, PAD_W, DIL_H, DIL_W,
                                             STRIDE_H, STRIDE_W, OH, OW)
                hit = row_ok & hit
                dy_at = _nchw_at(n[:, None], channels[None, :], at_h[:, None], at_w[:, None],
                                 O, OH, OW, DY_CL)
                dy = tl.load(dy_ptr + dy_at, mask=hit[:, None] & channel_ok[None, :], other=0.0)
            if W_DESC:
                # the packed (O, KH * KW, C) filters: a (filters, channels) box of the tap
                w = tl.reshape(w_desc.load([o0, tap, tl.program_id(1) * BLOCK_N]), [BLOCK_K, BLOCK_N])
            else:
                w_at = _nchw_at(channels[:, None], in_group[None, :], tap // KW, tap % KW, CG, KH, KW, W_CL)
                w = tl.load(w_ptr + w_at, mask=channel_ok[:, None] & col_ok[None, :], other=0.0)
            acc += tl.dot(dy, w, input_precision=PRECISION)
    else:
        acc = _flat_input_gradient(acc, dy_ptr, w_ptr, n, ih, iw, row_ok, group, in_group, col_ok, O, OH, OW,
                                   CG, OG, STRIDE_H, STRIDE_W, PAD_H, PAD_W, DIL_H, DIL_W, KH, KW, PRECISION,
                                   DY_CL, W_CL, BLOCK_K)
    out = _nchw_at(n[:, None], cols[None, :], ih[:, None], iw[:, None], C, H, W, DX_CL)
    tl.store(dx_ptr + out, acc.to(dx_ptr.dtype.element_ty), mask=row_ok[:, None] & col_ok[None, :])
'''

FLAT_INPUT_GRADIENT = '''
@triton.jit
def _flat_input_gradient(acc, dy_ptr, w_ptr, n, ih, iw, row_ok, group, in_group, col_ok, O, OH, OW, CG, OG,
                         STRIDE_H, STRIDE_W, PAD_H, PAD_W, DIL_H, DIL_W,
                         KH: tl.constexpr, KW: tl.constexpr, PRECISION: tl.constexpr,
                         DY_CL: tl.constexpr, W_CL: tl.constexpr, BLOCK_K: tl.constexpr):
    """The reduction in flat (output channel, tap) order: few output channels fill a block this way."""
    K = OG * KH * KW
    for k0 in range(0, K, BLOCK_K):
        ks = k0 + tl.arange(0, BLOCK_K)
        k_ok = ks < K
        o = group * OG + ks // (KH * KW)
        kh = (ks // KW) % KH
        kw = ks % KW
        oh, ow, hit = _tap_reach(ih[:, None], iw[:, None], kh[None, :], kw[None, :], PAD_H, PAD_W, DIL_H, DIL_W,
                                 STRIDE_H, STRIDE_W, OH, OW)
        mask = row_ok[:, None] & k_ok[None, :] & hit
        dy = tl.load(dy_ptr + _nchw_at(n[:, None], o[None, :], oh, ow, O, OH, OW, DY_CL), mask=mask, other=0.0)
        w = tl.load(w_ptr + _nchw_at(o[:, None], in_group[None, :], kh[:, None], kw[:, None], CG, KH, KW, W_CL),
                    mask=k_ok[:, None] & col_ok[None, :], other=0.0)
        acc += tl.dot(dy, w, input_precision=PRECISION)
    return acc
'''


WEIGHT_SOURCE = '''
@triton.jit
def {name}(
    {pointers}, N, C, H, W, O, OH, OW, STRIDE_H, STRIDE_W, PAD_H, PAD_W, DIL_H, DIL_W,
    CG, OG, ROW_BLOCKS, K_PER_SPLIT, KH: tl.constexpr, KW: tl.constexpr, PRECISION: tl.constexpr, SPLIT: tl.constexpr,
    DEPTHWISE: tl.constexpr, X_CL: tl.constexpr, DY_CL: tl.constexpr, DW_CL: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
):
    # split-K: program_id(2) sums its own slice of the N * OH * OW positions; SPLIT > 1 adds the
    # partial sums atomically into outputs the launcher zeroed
    if DEPTHWISE:
        # each filter's taps read its own channel (rows // OG): a program takes the filters of many groups
        rows = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
        row_ok = rows < O
    else:
        # a program's filters are of one group: their columns (channel, tap) are of that group's CG channels
        group = tl.program_id(0) // ROW_BLOCKS
        in_group = (tl.program_id(0) % ROW_BLOCKS) * BLOCK_M + tl.arange(0, BLOCK_M)
        rows = group * OG + in_group
        row_ok = in_group < OG
    cols = tl.program_id(1) * BLOCK_N + tl.arange(0, BLOCK_N)
    TAPS = CG * KH * KW
    k_start = tl.program_id(2) * K_PER_SPLIT
    k_end = tl.minimum(k_start + K_PER_SPLIT, N * OH * OW)
    col_ok = cols < TAPS
    # columns in the weight gradient's storage order: a channels-last one takes a tap's channels together
    if DW_CL:
        c = cols % CG
        tap = cols // CG
    else:
        c = cols // (KH * KW)
        tap = cols % (KH * KW)
    kh = tap // KW
    kw = tap % KW
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    {row_sum_init}
    for k0 in range(k_start, k_end, BLOCK_K):
        ks = k0 + tl.arange(0, BLOCK_K)
        k_ok = ks < k_end
        n = ks // (OH * OW)
        oh = (ks // OW) % OH
        ow = ks % OW
        dy_at = _nchw_at(n[None, :], rows[:, None], oh[None, :], ow[None, :], O, OH, OW, DY_CL)
        dy = tl.load(dy_ptr + dy_at, mask=row_ok[:, None] & k_ok[None, :], other=0.0)
        {row_sum_step}
        if DEPTHWISE:
            # a filter's tap sums dy times its own channel, shifted: elementwise, then into the tap's column
            for at in range(0, KH * KW):
                ih = oh * STRIDE_H - PAD_H + (at // KW) * DIL_H
                iw = ow * STRIDE_W - PAD_W + (at % KW) * DIL_W
                inside = k_ok & (ih >= 0) & (ih < H) & (iw >= 0) & (iw < W)
                x_at = _nchw_at(n[None, :], rows[:, None] // OG, ih[None, :], iw[None, :], C, H, W, X_CL)
                x = tl.load(x_ptr + x_at, mask=row_ok[:, None] & inside[None, :], other=0.0)
                taken = tl.sum(dy.to(tl.float32) * x.to(tl.float32), axis=1)
                acc += tl.where(cols[None, :] == at, taken[:, None], 0.0)
        else:
            ih = oh[:, None] * STRIDE_H - PAD_H + kh[None, :] * DIL_H
            iw = ow[:, None] * STRIDE_W - PAD_W + kw[None, :] * DIL_W
            inside = (ih >= 0) & (ih < H) & (iw >= 0) & (iw < W)
            x = tl.load(x_ptr + _nchw_at(n[:, None], group * CG + c[None, :], ih, iw, C, H, W, X_CL),
                        mask=k_ok[:, None] & col_ok[None, :] & inside, other=0.0)
            acc += tl.dot(dy, x, input_precision=PRECISION)
    dw_offs = rows[:, None] * TAPS + cols[None, :]  # the columns run in storage order
    if SPLIT > 1:
        tl.atomic_add(dw_ptr + dw_offs, acc, mask=row_ok[:, None] & col_ok[None, :])
    else:
        tl.store(dw_ptr + dw_offs, acc.to(dw_ptr.dtype.element_ty), mask=row_ok[:, None] & col_ok[None, :])
    {bias_store}
'''


def _geometry(node, x_shape, w_shape, dy_shape):
    lift = lifter(len(x_shape) == 3)
    stride, dilation = lift(node.attrs["stride"], 1), lift(node.attrs["dilation"], 1)
    padding = lift(node.attrs["padding"], (0, 0))
    n, c = x_shape[:2]
    h, w = lift(x_shape[2:], 1)
    kh, kw = lift(w_shape[2:], 1)
    oh, ow = lift(dy_shape[2:], 1)
    return (n, c, h, w, w_shape[0], oh, ow, stride[0], stride[1], padding[0][0], padding[1][0],
            dilation[0], dilation[1]), (kh, kw)


def _forward_key(dtype, sizes: tuple, kernel: tuple, layouts: tuple[bool, bool]) -> str:
    """The tuning key of the conv a gradient differentiates: its shape, and how its x and y are stored."""
    n, c, h, w, o = sizes[:5]
    return conv_shape_key(dtype, c, h, w, o, kernel, (sizes[7], sizes[8]), False, layouts)


def render_input(node):
    name = kernel_name(node)
    # as the forward (tap_major_conv), over the output gradient's channels
    filters = node.inputs[0].type.shape[1] // node.attrs.get("groups", 1)  # a group's: its reduction runs over them
    known = {"TAP_MAJOR": False} if filters < 16 else {}
    known["DEPTHWISE"] = depthwise(node)
    if known.get("TAP_MAJOR") is False or known["DEPTHWISE"]:
        known["DY_DESC"] = known["W_DESC"] = False
    source = fill(INPUT_SOURCE, known, name=name)
    if "_flat_input_gradient(" in source:  # the helper only where a branch left in calls it
        source += "\n\n" + FLAT_INPUT_GRADIENT.strip("\n")
    return KernelSource(name, module_source(f"{node.op} (implicit GEMM)", helpers_for(source) + "\n\n" + source))


def launch_input(fn, node, target, inputs, outputs):
    dy, w = inputs
    (dx,) = outputs
    sizes, (kh, kw) = _geometry(node, dx.shape, w.shape, dy.shape)
    n, c, h, wd, o = sizes[:5]
    groups = node.attrs.get("groups", 1)
    cg, og = c // groups, o // groups
    tap_major = tap_major_conv(og, kh * kw, n * h * wd, target)  # the reduction runs over a group's filters here
    gpu_m, gpu_n, gpu_k, options, min_m = _gpu_conv_tiles(target, dy.dtype, tap_major, pooled=False)
    block_k = target.tile(og if tap_major else og * kh * kw, gpu=gpu_k, interpreted=256,
                          large=None if tap_major else 1024)
    # NOTE: fp32 keeps the 32 columns measured on the H200 (tf32x3's three dots a step); an NCHW dx as the
    # forward's NCHW y (its addressing per element)
    layouts = (channels_last(node.outputs[0]), channels_last(node.inputs[0]))  # the forward's x and y
    wide = dy.dtype != torch.float32 and layouts[0]
    block_n = target.tile(cg, gpu=gpu_n if wide else 32 if dy.dtype == torch.float32 else 64, interpreted=128,
                          large=256)
    block_m = target.tile(n * h * wd, gpu=gpu_m, interpreted=1024, large=interpreter_budget(block_k, block_n))
    block_m, block_n = target.spread(n * h * wd, c, block_m, block_n, min_m=min_m)
    tuned = target.tuned_conv(_forward_key(dy.dtype, sizes, (kh, kw), layouts), "conv_input_grad") \
        if groups == 1 else {}
    block_m, block_n, block_k = (tuned.pop(key, default) for key, default in
                                 (("block_m", block_m), ("block_n", block_n), ("block_k", block_k)))
    by_channel = depthwise(node)
    if by_channel:  # columns run over all the channels, a tap and a filter at a time: no reduction block
        options = {"num_warps": 4, "num_stages": 3}
        block_n = target.tile(c, gpu=64, interpreted=128, large=256)
        block_m = target.tile(n * h * wd, gpu=64, interpreted=1024, large=interpreter_budget(block_n))
        block_m, block_n = target.spread(n * h * wd, c, block_m, block_n)
    col_blocks = triton.cdiv(cg, block_n)
    grid = (triton.cdiv(n * h * wd, block_m), triton.cdiv(c, block_n) if by_channel else groups * col_blocks)
    dy_desc, w_desc, box = None, None, (1, 1, 1)
    if target.descriptors and tap_major and groups == 1 and channels_last(node.inputs[1]):
        shifted = layouts[1] and sizes[7:9] == (1, 1)  # stride 1: a tap's output gradients are a shifted box
        dy_desc, w_desc, box, grid = tap_descriptors(w, (block_k, block_n), dy if shifted else None,
                                                     (n, sizes[5], sizes[6], o), (n, h, wd), block_m, block_k, grid)
    fn[grid](dy, w, dx, dy_desc, w_desc, *sizes, cg, og, col_blocks, KH=kh, KW=kw, PRECISION=target.precision(dy.dtype),
             TAP_MAJOR=tap_major, DEPTHWISE=by_channel, DY_CL=layouts[1], W_CL=channels_last(node.inputs[1]),
             DX_CL=layouts[0], DY_DESC=dy_desc is not None, W_DESC=w_desc is not None,
             BOX_N=box[0], BOX_H=box[1], BOX_W=box[2], BLOCK_M=block_m, BLOCK_N=block_n, BLOCK_K=block_k,
             **{**target.launch_options(options), **tuned})


def render_weight(node):
    group = group_of(node)
    anchor = group.anchor
    name = kernel_name(node)
    pointers = "x_ptr, dy_ptr, dw_ptr" + (", db_ptr" if group.bias_gradient is not None else "")
    bias = group.bias_gradient is not None
    source = fill(
        WEIGHT_SOURCE, {"DW_CL": channels_last(anchor.outputs[0]), "DEPTHWISE": depthwise(anchor)},
        name=name, pointers=pointers,
        row_sum_init="row_sums = tl.zeros((BLOCK_M,), dtype=tl.float32)" if bias else "",
        row_sum_step="row_sums += tl.sum(dy.to(tl.float32), axis=1)" if bias else "",
        # the bias gradient sums the same output-gradient rows: stored once per row block
        bias_store=["if tl.program_id(1) == 0:",
                    "    if SPLIT > 1:",
                    "        tl.atomic_add(db_ptr + rows, row_sums, mask=row_ok)",
                    "    else:",
                    "        tl.store(db_ptr + rows, row_sums.to(db_ptr.dtype.element_ty), mask=row_ok)"] if bias else "")
    return KernelSource(name, module_source(f"{anchor.op} (implicit GEMM)", helpers_for(source) + "\n\n" + source))


def launch_weight(fn, node, target, inputs, outputs):
    group = group_of(node)
    anchor = group.anchor
    x = inputs[group.input_index(anchor.inputs[0])]
    dy = inputs[group.input_index(anchor.inputs[1])]
    by_name = {v.name: t for v, t in zip(group.outputs, outputs)}
    dw = by_name[anchor.outputs[0].name]
    extra = [by_name[group.bias_gradient.outputs[0].name]] if group.bias_gradient is not None else []
    sizes, (kh, kw) = _geometry(anchor, x.shape, dw.shape, dy.shape)
    n, c, o, oh, ow = sizes[0], sizes[1], sizes[4], sizes[5], sizes[6]
    groups = anchor.attrs.get("groups", 1)
    cg, og = c // groups, o // groups
    # NOTE: half precision keeps the filters' rows a warpgroup MMA's 64 (32 compiled to mma.sync), the
    # (channel, tap) columns up to 128 and 64 positions a step; fp32 (tf32x3) the 32-cube measured on the H200
    half = x.dtype != torch.float32
    block_m = target.tile(og, gpu=64 if half else 32, interpreted=128, large=256, floor=64 if half and
                          not target.interpreted else 16)
    block_n = target.tile(cg * kh * kw, gpu=128 if half else 32, interpreted=128, large=256)
    block_k = target.tile(n * oh * ow, gpu=64 if half else 32, interpreted=1024,
                          large=interpreter_budget(block_m, block_n))
    options = {"num_warps": 8 if half and block_n >= 128 else 4, "num_stages": 3}
    layouts = (channels_last(anchor.inputs[0]), channels_last(anchor.inputs[1]))
    tuned = target.tuned_conv(_forward_key(x.dtype, sizes, (kh, kw), layouts), "conv_weight_grad") \
        if groups == 1 else {}
    block_m, block_n, block_k = (tuned.pop(key, default) for key, default in
                                 (("block_m", block_m), ("block_n", block_n), ("block_k", block_k)))
    by_filter = depthwise(anchor)
    if by_filter:  # rows run over all the filters; a program's columns are all of a filter's taps
        block_m = target.tile(o, gpu=32, interpreted=128, large=256)
        block_n = target.tile(kh * kw, gpu=64, interpreted=64)
        block_k = target.tile(n * oh * ow, gpu=32, interpreted=1024, large=interpreter_budget(block_m))
    row_blocks = triton.cdiv(o if by_filter else og, block_m)
    tiles = (1 if by_filter else groups) * row_blocks * triton.cdiv(cg * kh * kw, block_n)
    # a weight gradient is a few tiles with a reduction over every output position: split it
    # across programs (atomic fp32 sums) or a handful of programs loop over the whole batch
    split = target.split_k(n * oh * ow, block_k, tiles)
    k_per_split = triton.cdiv(triton.cdiv(n * oh * ow, split), block_k) * block_k
    split = triton.cdiv(n * oh * ow, k_per_split)
    grads = [dw, *extra]
    if split > 1:
        # partial sums meet in float32: a half-precision gradient is summed in a float32 copy, rounded once
        grads = [g if g.dtype == torch.float32 else torch.empty_like(g, dtype=torch.float32) for g in grads]
        for grad in grads:
            grad.zero_()
    grid = ((1 if by_filter else groups) * row_blocks, triton.cdiv(cg * kh * kw, block_n), split)
    fn[grid](x, dy, *grads, *sizes, cg, og, row_blocks, k_per_split, KH=kh, KW=kw,
             PRECISION=target.precision(x.dtype), SPLIT=split, DEPTHWISE=by_filter,
             X_CL=layouts[0], DY_CL=layouts[1], DW_CL=channels_last(anchor.outputs[0]),
             BLOCK_M=block_m, BLOCK_N=block_n, BLOCK_K=block_k, **{**target.launch_options(options), **tuned})
    for grad, total in zip((dw, *extra), grads, strict=True):
        if total is not grad:
            grad.copy_(total)


for _op in ("conv1d", "conv2d"):
    register_template(_op, render, launch)
    register_template(f"{_op}_bwd_input", render_input, launch_input)
    register_template(f"{_op}_bwd_weight", render_weight, launch_weight)
register_check("conv_pool", lambda pool: "its average counts padding (count_include_pad): the conv kernel counts "
               "the conv's outputs only" if any(any(side) for side in pool.attrs.get("counted") or ()) else None)
register_anchor(("conv1d", "conv2d"), Anchor("conv", channel_axis=1, same_type=True, prologue="prologue",
                                             ends=frozenset({"pool", "global_pool"})))
# (x, dy): a bias gradient sums dy over all but its channels, from the rows the weight gradient reads
register_anchor(("conv1d_bwd_weight", "conv2d_bwd_weight"), Anchor("conv weight gradient", epilogue=False,
                                                                   bias_gradient=(1, 1)))
