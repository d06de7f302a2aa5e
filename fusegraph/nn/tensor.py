"""Symbolic tensors: what calling a layer returns while a model is being defined."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from ..ir import TensorType

if TYPE_CHECKING:
    from .layer import Layer


@dataclass(eq=False)
class Call:
    """One application of a layer to symbolic tensors."""

    layer: Layer
    inputs: tuple[SymbolicTensor, ...]
    outputs: tuple[SymbolicTensor, ...] = field(default=())


@dataclass(eq=False)
class SymbolicTensor:
    """A placeholder with a type (batch dimension first, symbolic) and the call that produced it."""

    type: TensorType
    call: Call

    @property
    def shape(self) -> tuple[int, ...]:
        """The shape without the batch dimension, like Keras' `shape[1:]`."""
        return self.type.feature_shape

    @property
    def dtype(self) -> str:
        return self.type.dtype

    def __repr__(self) -> str:
        return f"SymbolicTensor(shape={self.shape}, dtype={self.dtype}, from={self.call.layer.describe()})"
