"""Optimizers with PyTorch's names, semantics and defaults. Each is a description (hyperparameters and
the per-parameter state it keeps); the runtime turns it into one multi-tensor kernel per step."""

from __future__ import annotations

from dataclasses import dataclass, fields

from .ir import GraphError


@dataclass(frozen=True)
class Optimizer:
    lr: float

    state: tuple[str, ...] = ()  # per-parameter buffers, each as large as the parameters

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, (int, float)) and not isinstance(value, bool) and value < 0:
                raise GraphError(f"{type(self).__name__}: {f.name} must be >= 0, got {value}")

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


@dataclass(frozen=True)
class RMSprop(Optimizer):
    lr: float = 1e-2
    alpha: float = 0.99
    eps: float = 1e-8
    weight_decay: float = 0.0
    momentum: float = 0.0
    centered: bool = False
    state: tuple[str, ...] = ("square_avg", "momentum_buffer", "grad_avg")


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
