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
    "_box_origin(": '''
@triton.jit
def _box_origin(N, H, W, BOX_N: tl.constexpr, BOX_H: tl.constexpr, BOX_W: tl.constexpr):
    # the first (image, row, column) of this program's box; boxes tile each image, then the batch
    boxes_h = tl.cdiv(H, BOX_H)
    boxes_w = tl.cdiv(W, BOX_W)
    box = tl.program_id(0)
    n0 = box // (boxes_h * boxes_w) * BOX_N
    return n0, box // boxes_w % boxes_h * BOX_H, box % boxes_w * BOX_W
''',
    "_box_pixels(": '''
@triton.jit
def _box_pixels(n0, h0, w0, BOX_N: tl.constexpr, BOX_H: tl.constexpr, BOX_W: tl.constexpr):
    # the (image, row, column) of each of the box's rows, in the order the box is stored: images, rows, columns
    at = tl.arange(0, BOX_N * BOX_H * BOX_W)
    return n0 + at // (BOX_H * BOX_W), h0 + at // BOX_W % BOX_H, w0 + at % BOX_W
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
