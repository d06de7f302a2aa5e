"""TMA tensor descriptors for the kernels that take them (Target.descriptors): a tensor's storage described
as an N-d array, and the box a program copies from it. The copy engine reads a box anywhere, even partly
outside the array, and fills what lies outside with zeros: a conv tap's box past the image edge is the
conv's padding, a block past a matrix's end its masked tail."""

from __future__ import annotations

from collections.abc import Sequence

import torch

ALIGNMENT = 16  # bytes: the copy engine's rule for the base address, every stride but the last and a box's row
MAX_BOX = 256  # elements along any axis of a box


def descriptor(tensor: torch.Tensor, shape: Sequence[int], strides: Sequence[int], box: Sequence[int]):
    """A descriptor of `tensor`'s storage viewed as `shape` with element `strides` (the last 1), copied in
    boxes of `box` (powers of two), or None where the copy engine cannot address it: a base or a stride not
    16-byte aligned, an empty dimension. Kernels take their pointer path then."""
    from triton.tools.tensor_descriptor import TensorDescriptor

    size = tensor.element_size()
    if (tensor.data_ptr() % ALIGNMENT or strides[-1] != 1 or min(shape) <= 0 or box[-1] * size % ALIGNMENT
            or max(box) > MAX_BOX or any(stride * size % ALIGNMENT for stride in strides[:-1])):
        return None
    return TensorDescriptor(tensor, list(shape), list(strides), list(box))
