"""Checking fusegraph against PyTorch: random inputs for a model, outputs compared within a
tolerance, gradients against torch.autograd. The `fusegraph validate` command, the demo and the
benchmarks use them."""

from __future__ import annotations

import torch

from .ir.ops import OPS
from .nn import Model


def sample_inputs(model: Model, batch: int = 4, seed: int = 0) -> list[torch.Tensor]:
    """Random feeds for every model input: normal floats, in-range token ids for int64 inputs."""
    generator = torch.Generator().manual_seed(seed)
    feeds = []
    vocab = min((rows for n in model.graph.compute_nodes if OPS[n.op].index_inputs is not None
                 for _, rows, _ in OPS[n.op].index_inputs(n)), default=2)
    for value in model.graph.inputs:
        shape = value.type.concrete(batch)
        if value.type.dtype == "int64":
            feeds.append(torch.randint(0, vocab, shape, generator=generator))
        else:
            feeds.append(torch.randn(shape, generator=generator))
    return feeds


def compare(ours, theirs, rtol: float, atol: float) -> list[tuple[float, float, bool]]:
    """Per output: max abs error, max relative error, and whether |a - b| <= atol + rtol * |b| everywhere.
    A single output compares as a list of one (a model built with outputs=[y] returns [y], its torch
    module y); a different number of outputs fails."""
    ours, theirs = ([v] if isinstance(v, torch.Tensor) else list(v) for v in (ours, theirs))
    if len(ours) != len(theirs):
        return [(float("inf"), float("inf"), False)]
    errors = []
    for a, b in zip(ours, theirs, strict=True):
        a, b = a.detach().double().cpu(), b.detach().double().cpu()
        if a.shape != b.shape:
            errors.append((float("inf"), float("inf"), False))
            continue
        diff = (a - b).abs()
        close = bool((diff <= atol + rtol * b.abs()).all()) and a.shape == b.shape
        errors.append((float(diff.max()), float((diff / b.abs().clamp_min(1e-12)).max()), close))
    return errors


def gradient_error(model: Model, feeds, target, grads) -> tuple[float, float]:
    """(worst relative gradient error, torch's loss) against torch.autograd on to_torch()."""
    oracle = model.to_torch().to(feeds[0].device)
    prediction = oracle(*feeds)
    expected = torch.nn.functional.nll_loss(torch.log(prediction), target)
    expected.backward()
    params = oracle.fusegraph_parameters()
    worst = max(float((g - params[n].grad).abs().max() / params[n].grad.abs().max().clamp_min(1e-12))
                for n, g in grads.items())
    return worst, float(expected.detach())
