"""Checking what a user passes to train on: tensors or arrays with a batch axis, inputs and labels that
agree in length, positive counts; each mistake one InputError saying what to pass instead."""

from __future__ import annotations

import numbers

import torch

from ..ir import InputError


def as_inputs(data, what: str = "x") -> list[torch.Tensor]:
    """A model's inputs: one tensor (or array), or a list / tuple of them with the same number of samples."""
    xs = [as_tensor(d, what) for d in data] if isinstance(data, (list, tuple)) else [as_tensor(data, what)]
    if not xs:
        raise InputError(f"{what} is an empty list: give one tensor per model input")
    if len({len(t) for t in xs}) != 1:
        raise InputError(f"the inputs have different numbers of samples: {[len(t) for t in xs]}")
    if len(xs[0]) == 0:
        raise InputError(f"{what} has no samples: give at least one")
    return xs


def as_tensor(data, what: str) -> torch.Tensor:
    if isinstance(data, torch.Tensor):
        tensor = data
    else:
        try:
            tensor = torch.as_tensor(data)
        except (TypeError, ValueError, RuntimeError):
            raise InputError(f"{what} must be a tensor or array, got {type(data).__name__}") from None
    if tensor.dim() == 0:
        raise InputError(f"{what} must have a batch axis (samples first), got a scalar")
    return tensor


def as_samples(x, y) -> tuple[list[torch.Tensor], torch.Tensor]:
    xs, y = as_inputs(x), as_tensor(y, "y")
    if len(xs[0]) != len(y):
        raise InputError(f"x has {len(xs[0])} samples but y has {len(y)}")
    return xs, y


def positive_int(name: str, value, allow_none: bool = False) -> None:
    if value is None and allow_none:
        return
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise InputError(f"{name} must be a positive integer, got {value!r}")


def pair(data, what: str) -> tuple:
    if not isinstance(data, (tuple, list)) or len(data) != 2:
        size = f"{len(data)} items" if isinstance(data, (tuple, list)) else type(data).__name__
        raise InputError(f"{what} must be a pair (x, y), got {size}")
    return data[0], data[1]
