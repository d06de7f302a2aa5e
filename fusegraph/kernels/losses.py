"""Losses as single kernels that compute the mean loss and its gradient in one pass.

One program walks all rows (losses are small next to the layers feeding them), so the mean is
summed in registers without atomics and is deterministic. With a gradient scale (SCALED, mixed-precision
training's loss scale, read from device memory so a captured CUDA graph follows it), the gradient is
multiplied by it in float32 before it is stored: small gradients survive a float16 store."""

from __future__ import annotations

import triton

from ..passes.kernel_names import kernel_name
from .registry import KernelSource, register_template
from .source import fill, module_source
from .target import INTERPRETER_TILE_ELEMENTS

CROSS_ENTROPY_SOURCE = '''
@triton.jit
def {name}(logits_ptr, target_ptr, scale_ptr, loss_ptr, grad_ptr, N, C, SMOOTHING, SCALED: tl.constexpr,
           BLOCK_R: tl.constexpr, BLOCK_C: tl.constexpr):
    grad_scale = tl.load(scale_ptr).to(tl.float32) if SCALED else 1.0
    cols = tl.arange(0, BLOCK_C)
    col_ok = cols < C
    total = tl.zeros((BLOCK_R,), tl.float32)
    for r0 in range(0, N, BLOCK_R):
        rows = r0 + tl.arange(0, BLOCK_R)
        row_ok = rows < N
        mask = row_ok[:, None] & col_ok[None, :]
        x = tl.load(logits_ptr + rows[:, None] * C + cols[None, :], mask=mask, other=float("-inf")).to(tl.float32)
        shifted = x - tl.where(row_ok, tl.max(x, axis=1), 0.0)[:, None]
        e = tl.exp(shifted)
        s = tl.where(row_ok, tl.sum(e, axis=1), 1.0)
        target = tl.load(target_ptr + rows, mask=row_ok, other=0)
        is_target = cols[None, :] == target[:, None]
        # loss = logsumexp(x) - x[target], both relative to the row max: no log of a probability; smoothed,
        # logsumexp(x) - (1 - SMOOTHING) x[target] - SMOOTHING * mean(x)
        picked = tl.sum(tl.where(is_target & mask, shifted, 0.0), axis=1)
        spread = tl.sum(tl.where(mask, shifted, 0.0), axis=1) / C
        total += tl.where(row_ok, tl.log(s) - (1.0 - SMOOTHING) * picked - SMOOTHING * spread, 0.0)
        pulled = (1.0 - SMOOTHING) * is_target.to(tl.float32) + SMOOTHING / C
        grad = (e / s[:, None] - pulled) / N * grad_scale
        tl.store(grad_ptr + rows[:, None] * C + cols[None, :], grad.to(grad_ptr.dtype.element_ty), mask=mask)
    tl.store(loss_ptr, (tl.sum(total, axis=0) / N).to(loss_ptr.dtype.element_ty))
'''

ELEMENTWISE_LOSS_SOURCE = '''
@triton.jit
def {name}(pred_ptr, target_ptr, scale_ptr, loss_ptr, grad_ptr, NUMEL, BCE: tl.constexpr, SCALED: tl.constexpr,
           BLOCK: tl.constexpr):
    grad_scale = tl.load(scale_ptr).to(tl.float32) if SCALED else 1.0
    total = tl.zeros((BLOCK,), tl.float32)
    for start in range(0, NUMEL, BLOCK):
        offs = start + tl.arange(0, BLOCK)
        mask = offs < NUMEL
        p = tl.load(pred_ptr + offs, mask=mask, other=0.0).to(tl.float32)
        y = tl.load(target_ptr + offs, mask=mask, other=0.0).to(tl.float32)
        if BCE:
            # p are logits: max(p, 0) - p*y + log(1 + exp(-|p|)), stable for any p
            e = tl.exp(-tl.abs(p))
            loss = tl.maximum(p, 0.0) - p * y + tl.log(1.0 + e)
            sig = tl.where(p >= 0, 1.0 / (1.0 + e), e / (1.0 + e))
            grad = (sig - y) / NUMEL
        else:
            d = p - y
            loss = d * d
            grad = 2.0 * d / NUMEL
        total += tl.where(mask, loss, 0.0)
        grad = grad * grad_scale
        tl.store(grad_ptr + offs, grad.to(grad_ptr.dtype.element_ty), mask=mask)
    tl.store(loss_ptr, (tl.sum(total, axis=0) / NUMEL).to(loss_ptr.dtype.element_ty))
'''


def render_cross_entropy(node):
    name = kernel_name(node)
    return KernelSource(name, module_source("cross-entropy loss and gradient", fill(CROSS_ENTROPY_SOURCE, name=name)))


def launch_cross_entropy(fn, node, target, inputs, outputs):
    logits, labels = inputs[:2]
    loss, grad = outputs
    n, c = logits.shape
    block_c = triton.next_power_of_2(c)
    block_r = max(1, min(triton.next_power_of_2(n), 4096 // block_c))
    scale = inputs[2] if len(inputs) == 3 else loss  # unread unless SCALED
    fn[(1,)](logits, labels, scale, loss, grad, n, c, float(node.attrs.get("label_smoothing", 0.0)),
             SCALED=len(inputs) == 3, BLOCK_R=block_r, BLOCK_C=block_c)


def render_elementwise(node):
    name = kernel_name(node)
    source = fill(ELEMENTWISE_LOSS_SOURCE, {"BCE": node.op == "binary_cross_entropy"}, name=name)
    return KernelSource(name, module_source(f"{node.op} loss and gradient", source))


def launch_elementwise(fn, node, target, inputs, outputs):
    pred, labels = inputs[:2]
    loss, grad = outputs
    numel = pred.numel()
    block = target.tile(numel, gpu=1024, interpreted=8192, large=INTERPRETER_TILE_ELEMENTS)
    scale = inputs[2] if len(inputs) == 3 else loss  # unread unless SCALED
    fn[(1,)](pred, labels, scale, loss, grad, numel, BCE=node.op == "binary_cross_entropy", SCALED=len(inputs) == 3,
             BLOCK=block)


register_template("cross_entropy", render_cross_entropy, launch_cross_entropy)
register_template("binary_cross_entropy", render_elementwise, launch_elementwise)
register_template("mse", render_elementwise, launch_elementwise)
