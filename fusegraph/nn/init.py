"""Parameter initialisers, seeded and deterministic: He for ReLU layers, Glorot otherwise,
recurrent weights uniform in ±1/sqrt(units) like PyTorch, embeddings N(0, 1) like nn.Embedding."""

from __future__ import annotations

from math import prod, sqrt

import torch

from ..ir import Graph, Node

DTYPE = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16, "int64": torch.int64}


def fans(shape: tuple[int, ...]) -> tuple[int, int]:
    """(fan_in, fan_out) as torch.nn.init computes them: (out, in, *kernel) weights."""
    receptive = prod(shape[2:]) if len(shape) > 2 else 1
    fan_out = shape[0] * receptive
    fan_in = (shape[1] if len(shape) > 1 else shape[0]) * receptive
    return fan_in, fan_out


def _sample(node: Node, generator: torch.Generator) -> torch.Tensor:
    shape = tuple(node.attrs["type"].shape)
    init = node.attrs["init"]
    if init == "zeros":
        return torch.zeros(shape)
    if init == "ones":
        return torch.ones(shape)
    if init == "constant":
        return torch.full(shape, float(node.attrs["value"]))
    if init == "normal":
        return torch.randn(shape, generator=generator)
    if init == "uniform":
        bound = node.attrs["bound"]
        return (torch.rand(shape, generator=generator) * 2 - 1) * bound
    fan_in, fan_out = fans(shape)
    if init == "he_normal":
        return torch.randn(shape, generator=generator) * sqrt(2.0 / fan_in)
    bound = sqrt(6.0 / (fan_in + fan_out))  # glorot_uniform
    return (torch.rand(shape, generator=generator) * 2 - 1) * bound


def initialise(graph: Graph, seed: int = 0) -> dict[str, torch.Tensor]:
    """Fresh values for every parameter of `graph`, in graph order; the same seed gives the same values."""
    generator = torch.Generator().manual_seed(seed)
    return {node.name: _sample(node, generator).to(DTYPE[node.attrs["type"].dtype]) for node in graph.param_nodes}
