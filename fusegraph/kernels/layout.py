"""Where an element of an (N, C, H, W) tensor is stored, contiguous (NCHW) or channels-last (NHWC):
the helpers every template that reads rank-4 tensors calls, with the layout a constexpr flag per
operand (from the IR value's type, passes/channels_last.py). Rank-3 tensors are (N, C, 1, W)."""

from __future__ import annotations

LAYOUT_HELPERS = {
    "_nchw_at(": '''
@triton.jit
def _nchw_at(n, c, h, w, C, H, W, CHANNELS_LAST: tl.constexpr):
    # channels-last keeps one pixel's channels together: a tap's channel block is one contiguous run
    if CHANNELS_LAST:
        at = ((n * H + h) * W + w) * C + c
    else:
        at = ((n * C + c) * H + h) * W + w
    return at
''',
    "_nchw_of(": '''
@triton.jit
def _nchw_of(offs, C, H, W, CHANNELS_LAST: tl.constexpr):
    # the (n, c, h, w) stored at offs: lanes walking storage in order touch consecutive addresses
    if CHANNELS_LAST:
        c = offs % C
        w = (offs // C) % W
        h = (offs // (C * W)) % H
        n = offs // (C * W * H)
    else:
        w = offs % W
        h = (offs // W) % H
        c = (offs // (W * H)) % C
        n = offs // (W * H * C)
    return n, c, h, w
''',
    "_pixel_rows(": '''
@triton.jit
def _pixel_rows(N, H, W, BOXED: tl.constexpr, BOX_N: tl.constexpr, BOX_H: tl.constexpr, BOX_W: tl.constexpr,
                BLOCK_M: tl.constexpr):
    # a program's rows as (image, row, column) pixels of an (N, H, W) map, in bounds or not, and the first
    # pixel of its box: BOXED, a box of BOX_N images x BOX_H x BOX_W (the copy engine's; boxes tile each image,
    # then the batch), stored images, rows, columns; else BLOCK_M consecutive pixels
    if BOXED:
        boxes_h = tl.cdiv(H, BOX_H)
        boxes_w = tl.cdiv(W, BOX_W)
        box = tl.program_id(0)
        n0 = box // (boxes_h * boxes_w) * BOX_N
        h0 = box // boxes_w % boxes_h * BOX_H
        w0 = box % boxes_w * BOX_W
        at = tl.arange(0, BLOCK_M)
        n = n0 + at // (BOX_H * BOX_W)
        h = h0 + at // BOX_W % BOX_H
        w = w0 + at % BOX_W
        row_ok = (n < N) & (h < H) & (w < W)
    else:
        n0, h0, w0 = 0, 0, 0
        rows = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
        row_ok = rows < N * H * W
        n = rows // (H * W)
        h = (rows // W) % H
        w = rows % W
    return n, h, w, row_ok, n0, h0, w0
''',
    "_conv_columns(": '''
@triton.jit
def _conv_columns(PER_GROUP, TOTAL, COL_BLOCKS, DEPTHWISE: tl.constexpr, BLOCK_N: tl.constexpr):
    # a conv kernel's columns (filters, or the input gradient's channels) and the group they are of: DEPTHWISE,
    # BLOCK_N of all TOTAL, many groups' (each column its own); else of one group, PER_GROUP of them
    if DEPTHWISE:
        cols = tl.program_id(1) * BLOCK_N + tl.arange(0, BLOCK_N)
        col_ok = cols < TOTAL
        group, in_group = 0, cols
    else:
        group = tl.program_id(1) // COL_BLOCKS
        in_group = (tl.program_id(1) % COL_BLOCKS) * BLOCK_N + tl.arange(0, BLOCK_N)
        cols = group * PER_GROUP + in_group
        col_ok = in_group < PER_GROUP
    return cols, col_ok, group, in_group
''',
    "_channel_view_at(": '''
@triton.jit
def _channel_view_at(js, cols, C, INNER):
    # a tensor viewed as (OUTER, C, INNER) in storage order ((N, C, H * W), or (N * H * W, C, 1) channels-last):
    # the (j, c) block of positions j = outer * INNER + inner and channels c
    return (js // INNER)[:, None] * (C * INNER) + cols[None, :] * INNER + (js % INNER)[:, None]
''',
}


def channels_last(value) -> bool:
    """The constexpr a template passes for an IR value: whether it is stored channels-last."""
    return value.type.channels_last
