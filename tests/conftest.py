"""Shared test helpers: compare a fusegraph model with real torch.nn modules."""

from __future__ import annotations

import torch

import fusegraph as fg

# fp32 tolerances for interpreter vs torch.nn: the same math through different kernels
FP32_RTOL, FP32_ATOL = 1e-5, 1e-5


def feeds_for(model: fg.Model, batch: int = 3, seed: int = 0, vocab: int | None = None) -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    feeds = []
    for value in model.graph.inputs:
        shape = value.type.concrete(batch)
        if value.type.dtype == "int64":
            feeds.append(torch.randint(0, vocab or 2, shape, generator=generator))
        else:
            feeds.append(torch.randn(shape, generator=generator))
    return feeds


def assert_matches_torch(model: fg.Model, feeds: list[torch.Tensor], rtol: float = FP32_RTOL,
                         atol: float = FP32_ATOL) -> None:
    """The IR interpreter and to_torch() agree, in shape and value, on every output."""
    ours = model.reference(feeds)
    with torch.no_grad():
        theirs = model.to_torch()(*feeds)
    ours, theirs = ([ours], [theirs]) if isinstance(ours, torch.Tensor) else (ours, theirs)
    assert len(ours) == len(theirs)
    for a, b in zip(ours, theirs):
        assert a.shape == b.shape
        torch.testing.assert_close(a, b, rtol=rtol, atol=atol)


def single_layer(layer: fg.Layer, shape: tuple[int, ...], dtype: str = "float32", seed: int = 0) -> fg.Model:
    x = fg.Input(shape, dtype=dtype)
    model = fg.Model(x, layer(x))
    model.init(seed)
    return model
