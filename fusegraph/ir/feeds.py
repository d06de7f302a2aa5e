"""Checking the tensors a caller feeds a graph against the graph's inputs."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from .errors import InputError
from .graph import Graph


def check_feeds(graph: Graph, feeds: torch.Tensor | Sequence[torch.Tensor]) -> list[torch.Tensor]:
    """The feeds as a list, one per graph input, each a tensor of the declared dtype and feature shape."""
    inputs = graph.inputs
    tensors = list(feeds) if isinstance(feeds, (list, tuple)) else [feeds]
    if len(tensors) != len(inputs):
        names = ", ".join(v.name for v in inputs)
        raise InputError(f"the model takes {len(inputs)} input(s) ({names}), got {len(tensors)}")
    batches = set()
    for value, tensor in zip(inputs, tensors):
        dims = [str(d) for d in value.type.feature_shape]
        expected = "(" + ", ".join((["batch"] if value.type.batched else []) + dims) + f") {value.type.dtype}"
        if not isinstance(tensor, torch.Tensor):
            raise InputError(f"input '{value.name}' expects a torch.Tensor of shape {expected}, got {type(tensor).__name__}")
        given = f"{tuple(tensor.shape)} {str(tensor.dtype).removeprefix('torch.')}"
        shape = tuple(tensor.shape[1:]) if value.type.batched else tuple(tensor.shape)
        if shape != value.type.feature_shape or tensor.dim() != value.type.rank:
            hint = "; the batch comes first" if value.type.batched else ""
            raise InputError(f"input '{value.name}' expects shape {expected}, got {given}{hint}")
        if str(tensor.dtype).removeprefix("torch.") != value.type.dtype:
            raise InputError(f"input '{value.name}' expects dtype {value.type.dtype}, got {given}; "
                             f"convert it with .to(torch.{value.type.dtype})")
        if value.type.batched:
            if tensor.shape[0] == 0:
                raise InputError(f"input '{value.name}' has an empty batch")
            batches.add(tensor.shape[0])
    if len(batches) > 1:
        raise InputError(f"inputs have different batch sizes {sorted(batches)}")
    return tensors
