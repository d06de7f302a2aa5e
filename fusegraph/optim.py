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
    lr: float

    state: tuple[str, ...] = ()  # per-parameter buffers, each as large as the parameters

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

    def __post_init__(self) -> None:
        super().__post_init__()
        if not all(0.0 <= b < 1.0 for b in self.betas):
            raise GraphError(f"Adam: betas must lie in [0, 1), got {self.betas}")


__all__ = ["SGD", "Adadelta", "Adagrad", "Adam", "Optimizer", "RMSprop"]
