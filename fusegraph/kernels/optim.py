"""One multi-tensor kernel per optimizer step: every trainable parameter lives in one flat buffer,
so a single launch updates them all, with their gradients and state buffers read alongside.

The update of each optimizer is the elementwise code below, PyTorch's formulas in PyTorch's order
(so results agree to rounding); per-step scalars (bias corrections, decayed learning rates) are
computed on the host and passed in.

In mixed precision the gradients are half precision (float16 ones multiplied by the loss scale): the
kernel reads them into float32 times INV_SCALE (GradScaler's unscale), updates the float32 master
weights and state, and writes the half copy the next step's kernels read (HALF_COPY): one launch.
Before it, float16 training launches NONFINITE_SOURCE over the gradients: a step whose gradients
hold an inf or a NaN is skipped (the runtime reads the flag)."""

from __future__ import annotations

import threading

import torch
import triton

from .registry import KernelSource
from .source import module_source
from .target import INTERPRETER_TILE_ELEMENTS

OPTIM_SOURCE = '''
@triton.jit
def {name}(p_ptr, g_ptr, s0_ptr, s1_ptr, s2_ptr, half_ptr, squares_ptr, NUMEL, LR, A, B, C, D, E, F, A1, B1, FIRST,
           INV_SCALE, MAX_NORM, HALF_COPY: tl.constexpr, CLIP: tl.constexpr, BLOCK: tl.constexpr):
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < NUMEL
    p = tl.load(p_ptr + offs, mask=mask, other=0.0)
    g = tl.load(g_ptr + offs, mask=mask, other=0.0).to(tl.float32)
    if HALF_COPY:
        g = g * INV_SCALE
    if CLIP:
        # the global norm, from every gradient's square summed by the launch before: torch's clip_grad_norm_
        g = g * tl.minimum(MAX_NORM / (tl.sqrt(tl.load(squares_ptr)) + 1e-6), 1.0)
{update}
    tl.store(p_ptr + offs, p, mask=mask)
    if HALF_COPY:
        tl.store(half_ptr + offs, p.to(half_ptr.dtype.element_ty), mask=mask)
'''

NONFINITE_SOURCE = '''
@triton.jit
def nonfinite_gradients(g_ptr, found_ptr, NUMEL, BLOCK: tl.constexpr):
    # sets *found_ptr to 1 when a gradient is inf or NaN; it never clears it (the runtime does)
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    g = tl.load(g_ptr + offs, mask=offs < NUMEL, other=0.0).to(tl.float32)
    bad = tl.max(((g != g) | (tl.abs(g) == float("inf"))).to(tl.int32), axis=0)
    if bad > 0:
        tl.store(found_ptr, 1)
'''

SQUARES_SOURCE = '''
@triton.jit
def gradient_squares(g_ptr, squares_ptr, NUMEL, INV_SCALE, BLOCK: tl.constexpr):
    # adds every (unscaled) gradient's square into *squares_ptr, which the runtime zeroed
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    g = tl.load(g_ptr + offs, mask=offs < NUMEL, other=0.0).to(tl.float32) * INV_SCALE
    tl.atomic_add(squares_ptr, tl.sum(g * g, axis=0))
'''

PENALTY_SOURCE = '''
@triton.jit
def weight_penalty(p_ptr, g_ptr, value_ptr, NUMEL, L1, L2, SCALE, BLOCK: tl.constexpr):
    # adds the penalty's gradient (times the loss scale) to a weight's and its value into *value_ptr
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < NUMEL
    p = tl.load(p_ptr + offs, mask=mask, other=0.0)
    g = tl.load(g_ptr + offs, mask=mask, other=0.0)
    sign = tl.where(p > 0, 1.0, tl.where(p < 0, -1.0, 0.0))
    g = g.to(tl.float32) + SCALE * (L1 * sign + 2.0 * L2 * p)
    tl.store(g_ptr + offs, g.to(g_ptr.dtype.element_ty), mask=mask)
    tl.atomic_add(value_ptr, tl.sum(L1 * tl.abs(p) + L2 * p * p, axis=0))
'''

MAX_NORM_SOURCE = '''
@triton.jit
def max_norm(p_ptr, half_ptr, UNIT, MAX_VALUE, HALF_COPY: tl.constexpr, BLOCK: tl.constexpr):
    # one program per unit (a row of UNIT weights): scaled to MAX_VALUE when its L2 norm exceeds it, as torch.renorm
    first = tl.program_id(0) * UNIT
    squares = tl.zeros((BLOCK,), tl.float32)
    for start in range(0, UNIT, BLOCK):
        offs = start + tl.arange(0, BLOCK)
        w = tl.load(p_ptr + first + offs, mask=offs < UNIT, other=0.0)
        squares += w * w
    norm = tl.sqrt(tl.sum(squares, axis=0))
    factor = tl.where(norm > MAX_VALUE, MAX_VALUE / (norm + 1e-7), 1.0)
    for start in range(0, UNIT, BLOCK):
        offs = start + tl.arange(0, BLOCK)
        w = tl.load(p_ptr + first + offs, mask=offs < UNIT, other=0.0) * factor
        tl.store(p_ptr + first + offs, w, mask=offs < UNIT)
        if HALF_COPY:
            tl.store(half_ptr + first + offs, w.to(half_ptr.dtype.element_ty), mask=offs < UNIT)
'''

# the Adam family's moments (torch's order and rounding): the first a lerp, the second decayed squares
_FIRST_MOMENT = """
    g = g + E * p                                   # E: weight_decay
    exp_avg = tl.load(s0_ptr + offs, mask=mask, other=0.0)
    exp_avg = exp_avg + A1 * (g - exp_avg)   # A: beta1; torch's lerp"""
_SECOND_MOMENT = """
    exp_avg_sq = B * tl.load(s1_ptr + offs, mask=mask, other=0.0) + B1 * g * g   # B: beta2
    tl.store(s0_ptr + offs, exp_avg, mask=mask)
    tl.store(s1_ptr + offs, exp_avg_sq, mask=mask)"""

# A..F are each optimizer's hyperparameters in the order of `scalars` below; A1 = 1 - A and B1 = 1 - B
# come from the host in double precision, as PyTorch computes them (in fp32, 1 - 0.99 rounds differently)
UPDATES = {
    "SGD": """
    g = g + E * p                                   # E: weight_decay
    buf = tl.load(s0_ptr + offs, mask=mask, other=0.0)
    buf = tl.where(FIRST != 0, g, A * buf + B1 * g)   # A: momentum, B: dampening
    tl.store(s0_ptr + offs, buf, mask=mask)
    step = tl.where(A != 0, tl.where(C != 0, g + A * buf, buf), g)   # C: nesterov
    p = p - LR * step""",
    "Adagrad": """
    g = g + E * p                                   # E: weight_decay
    total = tl.load(s0_ptr + offs, mask=mask, other=0.0) + g * g
    tl.store(s0_ptr + offs, total, mask=mask)
    p = p - A * (g / (tl.sqrt(total) + B))          # A: the decayed lr, B: eps""",
    "Adadelta": """
    g = g + E * p                                   # E: weight_decay
    square_avg = A * tl.load(s0_ptr + offs, mask=mask, other=0.0) + A1 * g * g   # A: rho
    acc_delta = tl.load(s1_ptr + offs, mask=mask, other=0.0)
    std = tl.sqrt(square_avg + B)                   # B: eps
    delta = tl.sqrt(acc_delta + B) / std * g
    tl.store(s0_ptr + offs, square_avg, mask=mask)
    tl.store(s1_ptr + offs, A * acc_delta + A1 * delta * delta, mask=mask)
    p = p - LR * delta""",
    "RMSprop": """
    g = g + E * p                                   # E: weight_decay
    square_avg = A * tl.load(s0_ptr + offs, mask=mask, other=0.0) + A1 * g * g   # A: alpha
    tl.store(s0_ptr + offs, square_avg, mask=mask)
    grad_avg = tl.load(s2_ptr + offs, mask=mask, other=0.0)
    grad_avg = grad_avg + A1 * (g - grad_avg)   # torch's lerp
    tl.store(s2_ptr + offs, grad_avg, mask=mask)
    centered = tl.where(D != 0, square_avg - grad_avg * grad_avg, square_avg)   # D: centered
    avg = tl.sqrt(centered) + B                     # B: eps
    buf = C * tl.load(s1_ptr + offs, mask=mask, other=0.0) + g / avg   # C: momentum
    tl.store(s1_ptr + offs, buf, mask=mask)
    p = p - LR * tl.where(C > 0, buf, g / avg)""",
    "Adam": _FIRST_MOMENT + _SECOND_MOMENT + """
    max_sq = tl.load(s2_ptr + offs, mask=mask, other=0.0)
    max_sq = tl.where((exp_avg_sq > max_sq) | (exp_avg_sq != exp_avg_sq), exp_avg_sq, max_sq)   # NaN kept, as torch.maximum
    tl.store(s2_ptr + offs, max_sq, mask=mask)
    second = tl.where(FIRST < 0, max_sq, exp_avg_sq)   # FIRST < 0: amsgrad
    denom = tl.sqrt(second) / D + C                 # C: eps, D: sqrt(bias correction 2)
    p = p - LR * (exp_avg / denom)                  # LR: lr / bias correction 1""",
    "Adamax": _FIRST_MOMENT + """
    decayed = B * tl.load(s1_ptr + offs, mask=mask, other=0.0)   # B: beta2
    bound = tl.abs(g) + C                           # C: eps
    exp_inf = tl.where((bound > decayed) | (bound != bound), bound, decayed)   # NaN kept, as torch.maximum
    tl.store(s0_ptr + offs, exp_avg, mask=mask)
    tl.store(s1_ptr + offs, exp_inf, mask=mask)
    p = p - LR * (exp_avg / exp_inf)                # LR: lr / bias correction 1""",
    "NAdam": _FIRST_MOMENT + _SECOND_MOMENT + """
    denom = tl.sqrt(exp_avg_sq / D) + C             # C: eps, D: bias correction 2
    p = p + F * (g / denom)                         # F: -lr (1 - mu_t) / (1 - mu_1...mu_t)
    p = p + LR * (exp_avg / denom)                  # LR: -lr mu_t+1 / (1 - mu_1...mu_t+1)""",
}


# AdamW (and NAdam's decoupled_weight_decay): the decay scales the weights before the update instead of
# joining the gradient
_DECOUPLED = ("    g = g + E * p                                   # E: weight_decay",
              "    p = p * E                                       # E: 1 - lr * weight_decay (decoupled)")
UPDATES["AdamW"] = UPDATES["Adam"].replace(*_DECOUPLED)
UPDATES["NAdam decoupled"] = UPDATES["NAdam"].replace(*_DECOUPLED)


def _update(optimizer) -> str:
    return UPDATES[optimizer.name + (" decoupled" if getattr(optimizer, "decoupled_weight_decay", False) else "")]


def render(optimizer) -> KernelSource:
    name = f"{optimizer.name.lower()}_step"
    return KernelSource(name, module_source(f"the {optimizer.name} step", OPTIM_SOURCE.format(
        name=name, update=_update(optimizer))))


def render_squares() -> KernelSource:
    return KernelSource("gradient_squares", module_source("the gradients' squared norm", SQUARES_SOURCE))


def render_penalty() -> KernelSource:
    return KernelSource("weight_penalty", module_source("a weight penalty", PENALTY_SOURCE))


def render_max_norm() -> KernelSource:
    return KernelSource("max_norm", module_source("the max-norm constraint", MAX_NORM_SOURCE))


def launch_penalty(fn, target, weight, grad, value, penalty, scale: float = 1.0) -> None:
    """`grad` += the gradient of `penalty` at `weight` times `scale`; `value` (float32 scalar) += its value.
    Both flat ranges of the flat buffers (any layout: the penalty is elementwise)."""
    numel = weight.numel()
    block = target.tile(numel, gpu=1024, interpreted=65536, large=INTERPRETER_TILE_ELEMENTS)
    fn[(triton.cdiv(numel, block),)](weight, grad, value, numel, penalty.l1, penalty.l2, scale, BLOCK=block)


def launch_max_norm(fn, target, weight, half_copy, units: int, constraint) -> None:
    """Each of the `units` rows of the flat range `weight` (a unit's weights stored together: the first axis
    outermost in either layout) to `constraint.max_value` norm at most; `half_copy`: its half copy too."""
    unit = weight.numel() // units
    block = target.tile(unit, gpu=1024, interpreted=65536, floor=16)
    fn[(units,)](weight, weight if half_copy is None else half_copy, unit, constraint.max_value,
                 HALF_COPY=half_copy is not None, BLOCK=block)


def launch_squares(fn, target, grads, squares, inv_scale: float = 1.0) -> None:
    """Sets `squares` (a float32 scalar) to the sum of the gradients' squares (times `inv_scale`)."""
    squares.zero_()
    numel = grads.numel()
    if numel:
        block = target.tile(numel, gpu=2048, interpreted=65536, large=INTERPRETER_TILE_ELEMENTS)
        fn[(triton.cdiv(numel, block),)](grads, squares, numel, inv_scale, BLOCK=block)


def render_nonfinite() -> KernelSource:
    return KernelSource("nonfinite_gradients", module_source("the non-finite gradient check", NONFINITE_SOURCE))


def scalars(optimizer, step: int, lr: float) -> tuple:
    """(LR, A, B, C, D, E, F, A1, B1, FIRST) for `step` (1-based) at learning rate `lr`."""
    lr, a, b, c, d, e, f, first = _scalars(optimizer, step, lr)
    return lr, a, b, c, d, e, f, 1.0 - a, 1.0 - b, first


def _scalars(o, step: int, lr: float) -> tuple:
    if o.name == "SGD":
        return lr, o.momentum, o.dampening, float(o.nesterov), 0.0, o.weight_decay, 0.0, int(step == 1)
    if o.name == "Adagrad":
        return lr, lr / (1 + (step - 1) * o.lr_decay), o.eps, 0.0, 0.0, o.weight_decay, 0.0, 0
    if o.name == "Adadelta":
        return lr, o.rho, o.eps, 0.0, 0.0, o.weight_decay, 0.0, 0
    if o.name == "RMSprop":
        return lr, o.alpha, o.eps, o.momentum, float(o.centered), o.weight_decay, 0.0, 0
    beta1, beta2 = o.betas
    if o.name == "Adamax":
        return lr / (1 - beta1 ** step), beta1, beta2, o.eps, 0.0, o.weight_decay, 0.0, 0
    if o.name == "NAdam":
        mu, mu_next = (beta1 * (1.0 - 0.5 * 0.96 ** (t * o.momentum_decay)) for t in (step, step + 1))
        product = _momentum_products(beta1, o.momentum_decay, step)  # torch keeps it in float32
        decay = 1 - lr * o.weight_decay if o.decoupled_weight_decay else o.weight_decay
        return (-lr * mu_next / (1.0 - product * mu_next), beta1, beta2, o.eps, 1 - beta2 ** step, decay,
                -lr * (1.0 - mu) / (1.0 - product), 0)
    step_size = lr / (1 - beta1 ** step)
    decay = 1 - lr * o.weight_decay if o.name == "AdamW" else o.weight_decay
    return step_size, beta1, beta2, o.eps, (1 - beta2 ** step) ** 0.5, decay, 0.0, -1 if o.amsgrad else 0


_PRODUCTS: dict[tuple[float, float], list[float]] = {}
_PRODUCTS_LOCK = threading.Lock()  # trainers in several threads extend the same list


def _momentum_products(beta1: float, momentum_decay: float, step: int) -> float:
    """NAdam's mu_1 * ... * mu_step as torch accumulates it, a float32 tensor times each step's mu (rounded)."""
    with _PRODUCTS_LOCK:
        products = _PRODUCTS.setdefault((beta1, momentum_decay), [1.0])
        while len(products) <= step:
            t = len(products)
            mu = beta1 * (1.0 - 0.5 * 0.96 ** (t * momentum_decay))
            products.append(float(torch.tensor(products[-1], dtype=torch.float32) * mu))
        return products[step]


def launch(fn, optimizer, target, params, grads, states, step: int, half_copy=None, inv_scale: float = 1.0,
           lr: float | None = None, squares=None) -> None:
    """One step over the flat buffers at learning rate `lr` (None: the optimizer's); with `half_copy` (mixed
    precision), gradients times `inv_scale` and the updated weights written to it too; with `squares` (the
    gradients' summed squares, launch_squares), clipped to the optimizer's clip_grad_norm."""
    numel = params.numel()
    if numel == 0:  # every parameter frozen: nothing to update
        return
    block = target.tile(numel, gpu=1024, interpreted=65536, large=INTERPRETER_TILE_ELEMENTS)
    padded = [*states, *([params] * (3 - len(states)))]  # unused state slots are never touched
    clip = squares is not None and optimizer.clip_grad_norm > 0
    fn[(triton.cdiv(numel, block),)](params, grads, *padded, params if half_copy is None else half_copy,
                                     squares if clip else params, numel,
                                     *scalars(optimizer, step, optimizer.lr if lr is None else lr), inv_scale,
                                     optimizer.clip_grad_norm, HALF_COPY=half_copy is not None, CLIP=clip,
                                     BLOCK=block)


def launch_nonfinite(fn, target, grads, found) -> None:
    """Sets `found` (an int32 scalar) to 1 when a gradient is not finite."""
    numel = grads.numel()
    if numel:
        block = target.tile(numel, gpu=2048, interpreted=65536, large=INTERPRETER_TILE_ELEMENTS)
        fn[(triton.cdiv(numel, block),)](grads, found, numel, BLOCK=block)
