"""Batch normalisation in training: the batch's per-channel statistics (a reduction over every
(sample, pixel) of a channel), then the normalisation (elementwise); its gradient the same way: the
two per-channel sums the gradient needs, then the input gradient. A tensor is viewed as
(OUTER, C, INNER) in storage order: (N, C, H * W) contiguous, (N * H * W, C, 1) channels-last.
The evaluation form (`batch_norm`, running statistics) is elementwise: kernels/pointwise.py, or a
conv's or matmul's epilogue."""

from __future__ import annotations

from math import prod

import triton

from ..ir import InputError
from ..passes.kernel_names import kernel_name
from .expr import HELPERS
from .layout import channels_last
from .registry import register_template
from .source import named_source
from .target import INTERPRETER_TILE_ELEMENTS

STATISTICS_SOURCE = '''
@triton.jit
def {name}(x_ptr, mean_ptr, var_ptr, invstd_ptr, OUTER, C, INNER, EPS,
           BLOCK_J: tl.constexpr, BLOCK_C: tl.constexpr):
    # two passes over a block of channels: the mean, then the squared deviations from it (no cancellation)
    cols = tl.program_id(0) * BLOCK_C + tl.arange(0, BLOCK_C)
    col_ok = cols < C
    count = OUTER * INNER
    total = tl.zeros((BLOCK_J, BLOCK_C), tl.float32)
    for j0 in range(0, count, BLOCK_J):
        js = j0 + tl.arange(0, BLOCK_J)
        offs = _channel_view_at(js, cols, C, INNER)
        total += tl.load(x_ptr + offs, mask=(js < count)[:, None] & col_ok[None, :], other=0.0).to(tl.float32)
    mean = tl.sum(total, axis=0) / count
    squares = tl.zeros((BLOCK_J, BLOCK_C), tl.float32)
    for j0 in range(0, count, BLOCK_J):
        js = j0 + tl.arange(0, BLOCK_J)
        mask = (js < count)[:, None] & col_ok[None, :]
        offs = _channel_view_at(js, cols, C, INNER)
        x = tl.load(x_ptr + offs, mask=mask, other=0.0).to(tl.float32)
        squares += tl.where(mask, (x - mean[None, :]) * (x - mean[None, :]), 0.0)
    biased = tl.sum(squares, axis=0) / count
    tl.store(mean_ptr + cols, mean.to(mean_ptr.dtype.element_ty), mask=col_ok)
    # the running variance is torch's unbiased estimate; the normalisation uses the biased one
    tl.store(var_ptr + cols, (biased * count / (count - 1)).to(var_ptr.dtype.element_ty), mask=col_ok)
    tl.store(invstd_ptr + cols, tl.math.rsqrt(biased + EPS).to(invstd_ptr.dtype.element_ty), mask=col_ok)
'''

GRADIENT_SUMS_SOURCE = '''
@triton.jit
def {name}(dy_ptr, x_ptr, mean_ptr, invstd_ptr, dweight_ptr, dbias_ptr, OUTER, C, INNER, EPS,
           FROM_VARIANCE: tl.constexpr, BLOCK_J: tl.constexpr, BLOCK_C: tl.constexpr):
    # per channel: sum(dy) (the bias gradient) and sum(dy * xhat) (the weight gradient); FROM_VARIANCE: the
    # evaluation form's running variance in place of 1/sqrt(variance + eps)
    cols = tl.program_id(0) * BLOCK_C + tl.arange(0, BLOCK_C)
    col_ok = cols < C
    count = OUTER * INNER
    mean = tl.load(mean_ptr + cols, mask=col_ok, other=0.0).to(tl.float32)
    invstd = tl.load(invstd_ptr + cols, mask=col_ok, other=1.0).to(tl.float32)
    if FROM_VARIANCE:
        invstd = tl.math.rsqrt(invstd + EPS)
    dy_sum = tl.zeros((BLOCK_J, BLOCK_C), tl.float32)
    dy_xhat_sum = tl.zeros((BLOCK_J, BLOCK_C), tl.float32)
    for j0 in range(0, count, BLOCK_J):
        js = j0 + tl.arange(0, BLOCK_J)
        mask = (js < count)[:, None] & col_ok[None, :]
        offs = _channel_view_at(js, cols, C, INNER)
        dy = tl.load(dy_ptr + offs, mask=mask, other=0.0).to(tl.float32)
        x = tl.load(x_ptr + offs, mask=mask, other=0.0).to(tl.float32)
        dy_sum += dy
        dy_xhat_sum += dy * (x - mean[None, :]) * invstd[None, :]
    tl.store(dbias_ptr + cols, tl.sum(dy_sum, axis=0).to(dbias_ptr.dtype.element_ty), mask=col_ok)
    tl.store(dweight_ptr + cols, tl.sum(dy_xhat_sum, axis=0).to(dweight_ptr.dtype.element_ty), mask=col_ok)
'''

APPLY_SOURCE = '''
@triton.jit
def {name}(x_ptr, dy_ptr, mean_ptr, invstd_ptr, weight_ptr, bias_ptr, dweight_ptr, dbias_ptr, out_ptr,
           NUMEL, C, INNER, COUNT, BACKWARD: tl.constexpr, BLOCK: tl.constexpr):
    # forward: y = xhat * weight + bias; backward: dx = weight * invstd * (dy - mean(dy) - xhat * mean(dy * xhat))
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < NUMEL
    c = (offs // INNER) % C
    x = tl.load(x_ptr + offs, mask=mask, other=0.0).to(tl.float32)
    mean = tl.load(mean_ptr + c, mask=mask, other=0.0).to(tl.float32)
    invstd = tl.load(invstd_ptr + c, mask=mask, other=0.0).to(tl.float32)
    weight = tl.load(weight_ptr + c, mask=mask, other=0.0).to(tl.float32)
    xhat = (x - mean) * invstd
    if BACKWARD:
        dy = tl.load(dy_ptr + offs, mask=mask, other=0.0).to(tl.float32)
        dy_mean = tl.load(dbias_ptr + c, mask=mask, other=0.0).to(tl.float32) / COUNT
        dy_xhat_mean = tl.load(dweight_ptr + c, mask=mask, other=0.0).to(tl.float32) / COUNT
        out = weight * invstd * (dy - dy_mean - xhat * dy_xhat_mean)
    else:
        out = xhat * weight + tl.load(bias_ptr + c, mask=mask, other=0.0).to(tl.float32)
    tl.store(out_ptr + offs, out.to(out_ptr.dtype.element_ty), mask=mask)
'''


def _view(node, x) -> tuple[int, int, int]:
    """(OUTER, C, INNER) of `x` in storage order."""
    channels = x.shape[1]
    inner = 1 if channels_last(node.inputs[0]) else prod(x.shape[2:])
    return x.numel() // (channels * inner), channels, inner


def _reduce_grid(target, outer: int, channels: int, inner: int) -> tuple[tuple[int], dict]:
    block_c = target.tile(channels, gpu=32, interpreted=128, floor=1)
    block_j = target.tile(outer * inner, gpu=128, interpreted=1024, floor=1)
    return (triton.cdiv(channels, block_c),), {"BLOCK_J": block_j, "BLOCK_C": block_c}


def _apply(fn, target, tensors: dict, out, sizes: tuple[int, int, int], backward: bool) -> None:
    from .codegen import load_kernel

    apply = load_kernel(named_source("batch_norm_apply", APPLY_SOURCE, "batch normalisation, applied"), fn.counter)
    outer, channels, inner = sizes
    numel = out.numel()
    block = target.tile(numel, gpu=1024, interpreted=16384, large=INTERPRETER_TILE_ELEMENTS)
    x = tensors["x"]
    args = [tensors.get(k, x) for k in ("x", "dy", "mean", "invstd", "weight", "bias", "dweight", "dbias")]
    apply[(triton.cdiv(numel, block),)](*args, out, numel, channels, inner, outer * inner, BACKWARD=backward,
                                        BLOCK=block)


def render_train(node):
    return named_source(kernel_name(node), STATISTICS_SOURCE, "batch normalisation statistics")


def launch_train(fn, node, target, inputs, outputs):
    """The statistics, then the normalisation: two kernels."""
    x, weight, bias = inputs
    y, mean, var, invstd = outputs
    outer, channels, inner = sizes = _view(node, x)
    if outer * inner < 2:
        raise InputError(f"{node.where}: batch normalisation in training needs more than one value per channel, "
                         f"got a batch of {x.shape[0]} with {outer * inner // max(x.shape[0], 1)} values each; "
                         "train with a larger batch")
    grid, blocks = _reduce_grid(target, outer, channels, inner)
    fn[grid](x, mean, var, invstd, outer, channels, inner, float(node.attrs.get("eps", 1e-5)), **blocks)
    sync = getattr(fn, "sync_statistics", None)  # SyncBatchNorm: the statistics of every rank's batch together
    if sync is not None:
        sync(mean, var, invstd, outer * inner, float(node.attrs.get("eps", 1e-5)))
    _apply(fn, target, {"x": x, "mean": mean, "invstd": invstd, "weight": weight, "bias": bias}, y, sizes, False)


def render_train_bwd(node):
    return named_source(kernel_name(node), GRADIENT_SUMS_SOURCE, "batch normalisation gradient sums",
                        {"FROM_VARIANCE": False})


def launch_train_bwd(fn, node, target, inputs, outputs):
    """The weight and bias gradients (per-channel sums), then the input gradient: two kernels."""
    dy, x, mean, invstd, weight = inputs
    dx, dweight, dbias = outputs
    outer, channels, inner = sizes = _view(node, x)
    grid, blocks = _reduce_grid(target, outer, channels, inner)
    fn[grid](dy, x, mean, invstd, dweight, dbias, outer, channels, inner, 0.0, FROM_VARIANCE=False, **blocks)
    sync = getattr(fn, "sync_sums", None)  # SyncBatchNorm: the sums over every rank's batch, each rank's weighted
    if sync is not None:
        sync(dweight, dbias, outer * inner)
    _apply(fn, target, {"x": x, "dy": dy, "mean": mean, "invstd": invstd, "weight": weight, "dweight": dweight,
                        "dbias": dbias}, dx, sizes, True)


def render_param_grads(node):
    return named_source(kernel_name(node), GRADIENT_SUMS_SOURCE, "batch normalisation weight and bias gradients",
                        {"FROM_VARIANCE": True})


def launch_param_grads(fn, node, target, inputs, outputs):
    """The evaluation form's weight and bias gradients (per-channel sums over the running statistics)."""
    dy, x, mean, var = inputs
    dweight, dbias = outputs
    outer, channels, inner = _view(node, x)
    grid, blocks = _reduce_grid(target, outer, channels, inner)
    fn[grid](dy, x, mean, var, dweight, dbias, outer, channels, inner, float(node.attrs.get("eps", 1e-5)),
             FROM_VARIANCE=True, **blocks)


register_template("batch_norm_train", render_train, launch_train)
register_template("batch_norm_param_grads", render_param_grads, launch_param_grads)
register_template("batch_norm_train_bwd", render_train_bwd, launch_train_bwd)


# -- layer normalisation: a row per program lane-block, the whole last axis in one block ----------
MAX_LAYER_NORM_WIDTH = 8192

# a row's values less their mean, and 1/std: two passes over the row, so no cancellation
HELPERS["_row_statistics("] = '''
@triton.jit
def _row_statistics(x, mask, D, EPS):
    centered = tl.where(mask, x - (tl.sum(x, axis=1) / D)[:, None], 0.0)
    return centered, tl.math.rsqrt(tl.sum(centered * centered, axis=1) / D + EPS)
'''

LAYER_NORM_SOURCE = '''
@triton.jit
def {name}(x_ptr, weight_ptr, bias_ptr, dy_ptr, out_ptr, R, D, EPS, BACKWARD: tl.constexpr,
           BLOCK_R: tl.constexpr, BLOCK_D: tl.constexpr):
    # each row's mean and 1/std over its D features; BACKWARD: the input
    # gradient through them, dx = rstd * (g - mean(g) - xhat * mean(g * xhat)) with g = dy * weight
    rows = tl.program_id(0) * BLOCK_R + tl.arange(0, BLOCK_R)
    cols = tl.arange(0, BLOCK_D)
    col_ok = cols < D
    mask = (rows < R)[:, None] & col_ok[None, :]
    at = rows[:, None] * D + cols[None, :]
    x = tl.load(x_ptr + at, mask=mask, other=0.0).to(tl.float32)
    centered, rstd = _row_statistics(x, mask, D, EPS)
    xhat = centered * rstd[:, None]
    weight = tl.load(weight_ptr + cols, mask=col_ok, other=0.0).to(tl.float32)[None, :]
    if BACKWARD:
        g = tl.load(dy_ptr + at, mask=mask, other=0.0).to(tl.float32) * weight
        mean_g = tl.sum(g, axis=1) / D
        mean_gx = tl.sum(g * xhat, axis=1) / D
        out = rstd[:, None] * (g - mean_g[:, None] - xhat * mean_gx[:, None])
    else:
        out = xhat * weight + tl.load(bias_ptr + cols, mask=col_ok, other=0.0).to(tl.float32)[None, :]
    tl.store(out_ptr + at, out.to(out_ptr.dtype.element_ty), mask=mask)
'''

LAYER_NORM_PARAM_GRADS_SOURCE = '''
@triton.jit
def {name}(dy_ptr, x_ptr, dweight_ptr, dbias_ptr, R, D, EPS, BLOCK_R: tl.constexpr, BLOCK_D: tl.constexpr):
    # per feature: sum over rows of dy * xhat (the weight's gradient) and of dy (the bias'); one program
    # walks every row (no atomics: the same sums every run)
    cols = tl.arange(0, BLOCK_D)
    col_ok = cols < D
    dweight = tl.zeros((BLOCK_D,), tl.float32)
    dbias = tl.zeros((BLOCK_D,), tl.float32)
    for r0 in range(0, R, BLOCK_R):
        rows = r0 + tl.arange(0, BLOCK_R)
        mask = (rows < R)[:, None] & col_ok[None, :]
        at = rows[:, None] * D + cols[None, :]
        x = tl.load(x_ptr + at, mask=mask, other=0.0).to(tl.float32)
        centered, rstd = _row_statistics(x, mask, D, EPS)
        dy = tl.load(dy_ptr + at, mask=mask, other=0.0).to(tl.float32)
        dweight += tl.sum(dy * centered * rstd[:, None], axis=0)
        dbias += tl.sum(dy, axis=0)
    tl.store(dweight_ptr + cols, dweight.to(dweight_ptr.dtype.element_ty), mask=col_ok)
    tl.store(dbias_ptr + cols, dbias.to(dbias_ptr.dtype.element_ty), mask=col_ok)
'''


def _rows_and_width(node, x) -> tuple[int, int]:
    width = x.shape[-1]
    if width > MAX_LAYER_NORM_WIDTH:
        raise InputError(f"{node.where}: a layer norm over {width} features; its kernel holds a row in one block "
                         f"(at most {MAX_LAYER_NORM_WIDTH})")
    return x.numel() // max(width, 1), width


def render_layer_norm(node):
    return named_source(kernel_name(node), LAYER_NORM_SOURCE, "layer normalisation",
                        {"BACKWARD": node.op == "layer_norm_bwd"})


def launch_layer_norm(fn, node, target, inputs, outputs):
    if node.op == "layer_norm_bwd":
        dy, x, weight = inputs
        bias = weight
    else:
        (x, weight, bias), dy = inputs, inputs[0]
    rows, width = _rows_and_width(node, x)
    block_d = triton.next_power_of_2(width)
    block_r = target.tile(rows, gpu=max(1, 4096 // block_d), interpreted=max(1, 16384 // block_d), floor=1)
    fn[(triton.cdiv(rows, block_r),)](x.contiguous(), weight, bias, dy.contiguous(), outputs[0], rows, width,
                                      float(node.attrs.get("eps", 1e-5)), BACKWARD=node.op == "layer_norm_bwd",
                                      BLOCK_R=block_r, BLOCK_D=block_d)


def launch_layer_norm_param_grads(fn, node, target, inputs, outputs):
    dy, x = inputs
    rows, width = _rows_and_width(node, x)
    block_d = triton.next_power_of_2(width)
    block_r = target.tile(rows, gpu=max(1, 4096 // block_d), interpreted=max(1, 16384 // block_d), floor=1)
    fn[(1,)](dy.contiguous(), x.contiguous(), *outputs, rows, width, float(node.attrs.get("eps", 1e-5)),
             BLOCK_R=block_r, BLOCK_D=block_d)


register_template("layer_norm", render_layer_norm, launch_layer_norm)
register_template("layer_norm_bwd", render_layer_norm, launch_layer_norm)
register_template("layer_norm_param_grads",
                  lambda node: named_source(kernel_name(node), LAYER_NORM_PARAM_GRADS_SOURCE,
                                            "layer normalisation weight and bias gradients"),
                  launch_layer_norm_param_grads)
