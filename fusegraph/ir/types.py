"""Tensor types of IR values: a shape (with a symbolic batch dimension), a dtype, and a layout."""

from __future__ import annotations

import numbers
from dataclasses import dataclass, field, replace
from math import prod

import numpy as np

from .errors import GraphError

BATCH = "N"
"""The symbolic batch dimension; only ever the first dimension of an activation."""

Dim = int | str

FLOAT_DTYPES = ("float32", "float16", "bfloat16")
INT_DTYPES = ("int64", "int8")  # int8: max-pool window positions saved for the backward
DTYPES = FLOAT_DTYPES + INT_DTYPES
LAYOUTS = ("contiguous", "channels_last")  # named as torch's memory formats; channels_last: rank 4 only
SHORT_DTYPE = {"float32": "f32", "float16": "f16", "bfloat16": "bf16", "int64": "i64", "int8": "i8"}


def as_int(value) -> int | None:
    """`value` as a Python int if it is an integer (numpy integers too; bools are not), else None."""
    if isinstance(value, numbers.Integral) and not isinstance(value, (bool, np.bool_)):
        return int(value)
    return None


@dataclass(frozen=True)
class TensorType:
    """`layout` is how a value is stored, not what it is (a logical (N, C, H, W) tensor either way), so
    types compare equal across layouts and shape rules never see it; passes/channels_last.py sets it
    and the verifier checks every use agrees with its definition's."""

    shape: tuple[Dim, ...]
    dtype: str = "float32"
    layout: str = field(default="contiguous", compare=False)

    def __post_init__(self) -> None:
        if self.dtype not in DTYPES:
            raise GraphError(f"dtype {self.dtype!r} is not supported; use one of {', '.join(DTYPES)}")
        if self.layout not in LAYOUTS:
            raise GraphError(f"layout {self.layout!r} is not one of {', '.join(LAYOUTS)}")
        if self.layout == "channels_last" and len(self.shape) != 4:
            raise GraphError(f"channels_last needs a rank-4 (N, C, H, W) shape, got {self.shape}")
        for axis, dim in enumerate(self.shape):
            if dim == BATCH:
                if axis != 0:
                    raise GraphError(f"the batch dimension may only be the first of {self.shape}")
            elif not isinstance(dim, int) or isinstance(dim, bool) or dim <= 0:
                raise GraphError(f"dimension {axis} of shape {self.shape} must be a positive integer, got {dim!r}")

    @property
    def rank(self) -> int:
        return len(self.shape)

    @property
    def batched(self) -> bool:
        return bool(self.shape) and self.shape[0] == BATCH

    @property
    def is_float(self) -> bool:
        return self.dtype in FLOAT_DTYPES

    @property
    def feature_shape(self) -> tuple[int, ...]:
        """The shape without the batch dimension."""
        return tuple(self.shape[1:]) if self.batched else tuple(self.shape)  # type: ignore[arg-type]

    def numel_per_sample(self) -> int:
        return prod(self.feature_shape)

    @property
    def channels_last(self) -> bool:
        return self.layout == "channels_last"

    def with_shape(self, shape: tuple[Dim, ...]) -> TensorType:
        """Another shape, same dtype; stored contiguously (a layout belongs to a shape)."""
        return TensorType(tuple(shape), self.dtype)

    def with_layout(self, layout: str) -> TensorType:
        return replace(self, layout=layout)

    def concrete(self, batch: int) -> tuple[int, ...]:
        return tuple(batch if d == BATCH else d for d in self.shape)  # type: ignore[misc]

    def __str__(self) -> str:
        text = f"{SHORT_DTYPE[self.dtype]}[{','.join(str(d) for d in self.shape)}]"
        return text + ":channels_last" if self.channels_last else text
