"""Optimizers with PyTorch's names, semantics and defaults. Each is a description (hyperparameters and
the per-parameter state it keeps); the runtime turns it into one multi-tensor kernel per step."""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass, fields

import numpy as np

from .ir import GraphError


def _is_number(value) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, (bool, np.bool_))


def _check_field(optimizer: str, name: str, annotation: str, value) -> None:
    """Every hyperparameter is checked where it is given, as torch.optim does, not at the first step."""
    if annotation == "bool":
        if not isinstance(value, bool):
            raise GraphError(f"{optimizer}: {name} must be True or False, got {value!r}")
        return
    if annotation.startswith("tuple"):
        if not (isinstance(value, (tuple, list)) and len(value) == 2 and all(_is_number(v) for v in value)):
            raise GraphError(f"{optimizer}: {name} must be a pair of numbers, got {value!r}")
        for v in value:
            _check_field(optimizer, name, "float", v)
        return
    if not _is_number(value):
        raise GraphError(f"{optimizer}: {name} must be a number, got {value!r} ({type(value).__name__})")
    if not math.isfinite(value) or value < 0:
        raise GraphError(f"{optimizer}: {name} must be a finite number >= 0, got {value!r}")


@dataclass(frozen=True)
class Optimizer:
    """`clip_grad_norm` > 0: every step first scales the gradients, all together, to that global L2 norm
    at most (torch.nn.utils.clip_grad_norm_ before the step; Keras's global_clipnorm), inside the update's
    own launch, after one launch that sums their squares."""

    lr: float

    state: tuple[str, ...] = ()  # per-parameter buffers, each as large as the parameters
    clip_grad_norm: float = 0.0  # 0: no clipping

    def __post_init__(self) -> None:
        for f in fields(self):
            if f.name == "state":
                continue
            value = getattr(self, f.name)
            _check_field(type(self).__name__, f.name, str(f.type), value)
            if _is_number(value):  # NOTE: numpy scalars become Python floats: kernels take them as arguments
                object.__setattr__(self, f.name, float(value))
            elif isinstance(value, (tuple, list)):
                object.__setattr__(self, f.name, tuple(float(v) for v in value))
        if not all(0.0 <= b < 1.0 for b in getattr(self, "betas", ())):  # the Adam family's moment decays
            raise GraphError(f"{type(self).__name__}: betas must lie in [0, 1), got {self.betas}")

    @property
    def name(self) -> str:
        return type(self).__name__


@dataclass(frozen=True)
class SGD(Optimizer):
    lr: float = 1e-3
    momentum: float = 0.0
    dampening: float = 0.0
    weight_decay: float = 0.0
    nesterov: bool = False
    state: tuple[str, ...] = ("momentum_buffer",)

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.nesterov and (self.momentum <= 0 or self.dampening != 0):
            raise GraphError("SGD: Nesterov momentum requires a momentum and zero dampening")


@dataclass(frozen=True)
class Adagrad(Optimizer):
    lr: float = 1e-2
    lr_decay: float = 0.0
    weight_decay: float = 0.0
    initial_accumulator_value: float = 0.0
    eps: float = 1e-10
    state: tuple[str, ...] = ("sum",)


@dataclass(frozen=True)
class Adadelta(Optimizer):
    lr: float = 1.0
    rho: float = 0.9
    eps: float = 1e-6
    weight_decay: float = 0.0
    state: tuple[str, ...] = ("square_avg", "acc_delta")

    def __post_init__(self) -> None:
        super().__post_init__()
        _check_unit("Adadelta", "rho", self.rho)


def _check_unit(optimizer: str, name: str, value: float) -> None:
    if not 0.0 <= value <= 1.0:
        raise GraphError(f"{optimizer}: {name} must lie in [0, 1], got {value}")


@dataclass(frozen=True)
class RMSprop(Optimizer):
    lr: float = 1e-2
    alpha: float = 0.99
    eps: float = 1e-8
    weight_decay: float = 0.0
    momentum: float = 0.0
    centered: bool = False
    state: tuple[str, ...] = ("square_avg", "momentum_buffer", "grad_avg")

    def __post_init__(self) -> None:
        super().__post_init__()
        _check_unit("RMSprop", "alpha", self.alpha)


@dataclass(frozen=True)
class Adam(Optimizer):
    lr: float = 1e-3
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    weight_decay: float = 0.0
    amsgrad: bool = False
    state: tuple[str, ...] = ("exp_avg", "exp_avg_sq", "max_exp_avg_sq")


@dataclass(frozen=True)
class AdamW(Adam):
    """Adam with decoupled weight decay (torch.optim.AdamW): the weights shrink by lr * weight_decay each
    step, apart from the gradient's moments."""

    weight_decay: float = 1e-2


@dataclass(frozen=True)
class Adamax(Optimizer):
    """Adam with the infinity norm of the gradients in place of their second moment (torch.optim.Adamax;
    Keras's Adamax)."""

    lr: float = 2e-3
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    weight_decay: float = 0.0
    state: tuple[str, ...] = ("exp_avg", "exp_inf")


@dataclass(frozen=True)
class NAdam(Optimizer):
    """Adam with Nesterov momentum and torch's momentum schedule (torch.optim.NAdam; Keras's Nadam):
    `momentum_decay` sets how the momentum warms up; `decoupled_weight_decay` decays the weights as AdamW."""

    lr: float = 2e-3
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    weight_decay: float = 0.0
    momentum_decay: float = 4e-3
    decoupled_weight_decay: bool = False
    state: tuple[str, ...] = ("exp_avg", "exp_avg_sq")


# -- weight penalties and constraints, per layer: fg.compile(..., penalties={layer: ...}, constraints={layer: ...})
@dataclass(frozen=True)
class Penalty:
    """A penalty on a layer's weight (not its bias) added to the training loss: l1 * sum |w| + l2 * sum w^2
    (Keras's L1L2 regularizer; its gradient joins the weight's in the optimizer's step)."""

    l1: float = 0.0
    l2: float = 0.0

    def __post_init__(self) -> None:
        for name in ("l1", "l2"):
            _check_field("Penalty", name, "float", getattr(self, name))
            object.__setattr__(self, name, float(getattr(self, name)))


@dataclass(frozen=True)
class MaxNorm:
    """After every update, each unit's incoming weights (a Dense row, a conv filter) whose L2 norm exceeds
    max_value are scaled back to it (torch.renorm(w, 2, 0, max_value); Keras's max_norm constraint)."""

    max_value: float

    def __post_init__(self) -> None:
        _check_field("MaxNorm", "max_value", "float", self.max_value)
        if self.max_value <= 0:
            raise GraphError(f"MaxNorm: max_value must be > 0, got {self.max_value}")
        object.__setattr__(self, "max_value", float(self.max_value))


# -- learning-rate schedules: the rate of each epoch, as torch.optim.lr_scheduler's with scheduler.step()
# called after every epoch (closed forms of the same rules); fit(lr_schedule=...) sets it at each epoch's start
class Schedule:
    def rate(self, base: float, epoch: int) -> float:
        """The learning rate of `epoch` (0-based) for an optimizer built with lr `base`."""
        raise NotImplementedError

    def _check(self, name: str, value, low: float, high: float = math.inf, integer: bool = False) -> None:
        kind = "an integer" if integer else "a number"
        if (integer and (isinstance(value, bool) or not isinstance(value, numbers.Integral))) or not _is_number(value) \
                or not low <= value <= high:
            raise GraphError(f"{type(self).__name__}: {name} must be {kind} in [{low}, {high}], got {value!r}")


@dataclass(frozen=True)
class StepLR(Schedule):
    """The rate times gamma every step_size epochs (torch's StepLR)."""

    step_size: int
    gamma: float = 0.1

    def __post_init__(self) -> None:
        self._check("step_size", self.step_size, 1, integer=True)
        self._check("gamma", self.gamma, 0.0)

    def rate(self, base: float, epoch: int) -> float:
        return base * self.gamma ** (epoch // self.step_size)


@dataclass(frozen=True)
class ExponentialLR(Schedule):
    """The rate times gamma every epoch (torch's ExponentialLR)."""

    gamma: float

    def __post_init__(self) -> None:
        self._check("gamma", self.gamma, 0.0)

    def rate(self, base: float, epoch: int) -> float:
        return base * self.gamma ** epoch


@dataclass(frozen=True)
class CosineAnnealingLR(Schedule):
    """Half a cosine from the rate down to eta_min over T_max epochs (torch's CosineAnnealingLR)."""

    T_max: int  # noqa: N815 (torch's name)
    eta_min: float = 0.0

    def __post_init__(self) -> None:
        self._check("T_max", self.T_max, 1, integer=True)
        self._check("eta_min", self.eta_min, 0.0)

    def rate(self, base: float, epoch: int) -> float:
        return self.eta_min + (base - self.eta_min) * (1 + math.cos(math.pi * epoch / self.T_max)) / 2


@dataclass(frozen=True)
class LinearLR(Schedule):
    """Warm-up: the rate times a factor going linearly from start_factor to end_factor over total_iters
    epochs, then end_factor (torch's LinearLR)."""

    start_factor: float = 1.0 / 3
    end_factor: float = 1.0
    total_iters: int = 5

    def __post_init__(self) -> None:
        self._check("start_factor", self.start_factor, 1e-12, 1.0)
        self._check("end_factor", self.end_factor, 0.0, 1.0)
        self._check("total_iters", self.total_iters, 1, integer=True)

    def rate(self, base: float, epoch: int) -> float:
        done = min(epoch, self.total_iters) / self.total_iters
        return base * (self.start_factor + (self.end_factor - self.start_factor) * done)


__all__ = ["SGD", "Adadelta", "Adagrad", "Adam", "AdamW", "Adamax", "NAdam", "CosineAnnealingLR", "ExponentialLR", "LinearLR",
           "MaxNorm", "Optimizer", "Penalty", "RMSprop", "Schedule", "StepLR"]
