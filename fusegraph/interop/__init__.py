"""PyTorch interop beyond to_torch(): models in from torch (from_torch)."""

from .from_torch import from_torch

__all__ = ["from_torch"]
