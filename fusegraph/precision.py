"""Mixed precision: `fg.compile(model, ..., precision="bf16" | "fp16")` and float16's dynamic loss scale.

A float32 model compiled in bf16 or fp16 stores activations, weights and gradients in that dtype
while every kernel accumulates in float32; losses, batch-norm statistics and the optimizer (master
weights and state) stay float32 (passes/mixed_precision.py says exactly what is kept). float16's few
exponent bits make small gradients vanish, so its training multiplies the loss gradient by a scale
and divides it out in float32 in the optimizer, as torch.amp.GradScaler does: a step whose gradients
overflow is skipped and the scale backs off; after `growth_interval` steps in a row without one the
scale grows."""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass

import numpy as np

from .ir import GraphError

FLOAT32_MAX = 3.4028234663852886e38
FLOAT32_TINY = 1.1754943508222875e-38  # the smallest normal float32: the lowest a loss scale backs off to

# the names compile() takes, and the dtype each runs in (None: float32 throughout)
PRECISIONS = {"fp32": None, "float32": None, "bf16": "bfloat16", "bfloat16": "bfloat16",
              "fp16": "float16", "float16": "float16"}


def half_dtype(precision: str | None) -> str | None:
    """The dtype `precision` (compile()'s argument) runs activations in; None for float32."""
    if precision is None:
        return None
    if not isinstance(precision, str) or precision not in PRECISIONS:
        raise GraphError(f"precision must be one of 'fp32', 'bf16' or 'fp16', got {precision!r}")
    return PRECISIONS[precision]


@dataclass(frozen=True)
class LossScale:
    """float16 training's dynamic loss scale, with torch.amp.GradScaler's defaults and rules."""

    init_scale: float = 2.0 ** 16
    growth_factor: float = 2.0
    backoff_factor: float = 0.5
    growth_interval: int = 2000

    def __post_init__(self) -> None:
        for name in ("init_scale", "growth_factor", "backoff_factor"):
            value = getattr(self, name)
            if (isinstance(value, bool) or not isinstance(value, numbers.Real) or not 0 < value <= FLOAT32_MAX
                    or not math.isfinite(value)):
                raise GraphError(f"LossScale: {name} must be a number > 0 that float32 holds, got {value!r}")
            object.__setattr__(self, name, float(value) if name != "init_scale" else as_float32(value))
        if self.growth_factor <= 1.0:
            raise GraphError(f"LossScale: growth_factor must be > 1, got {self.growth_factor}")
        if self.backoff_factor >= 1.0:
            raise GraphError(f"LossScale: backoff_factor must be < 1, got {self.backoff_factor}")
        interval = self.growth_interval
        if isinstance(interval, bool) or not isinstance(interval, numbers.Integral) or interval < 1:
            raise GraphError(f"LossScale: growth_interval must be a positive integer, got {interval!r}")
        object.__setattr__(self, "growth_interval", int(interval))

    def update(self, scale: float, growth_tracker: int, found_inf: bool) -> tuple[float, int]:
        """(scale, growth tracker) after a step: GradScaler.update's rule, except that the scale never backs
        off below float32's smallest normal number (GradScaler's would reach 0, and 1 / scale then fails)."""
        if found_inf:
            return max(as_float32(scale * self.backoff_factor), FLOAT32_TINY), 0
        if growth_tracker + 1 == self.growth_interval:
            grown = as_float32(scale * self.growth_factor)
            return (grown if math.isfinite(grown) else scale), 0
        return scale, growth_tracker + 1


def as_float32(value: float) -> float:
    """`value` rounded to float32, as the scale the kernels read (and GradScaler's) is stored."""
    return float(np.float32(value)) if abs(value) <= FLOAT32_MAX else math.copysign(math.inf, value)
