"""`fg.compile(model, ...)`: the options checked once, then a CompiledModel (inference) or a Trainer
(with a loss) built from them."""

from __future__ import annotations

import torch

from ..passes import CompileOptions
from ..precision import LossScale
from .compiled import CompiledModel
from .training import Trainer


def compile(model, *, fuse: bool = True, device: str | None = None, loss: str | None = None,  # noqa: A001
            label_smoothing: float = 0.0, optimizer=None, cuda_graphs: bool | None = None, fp32_precision: str | None = None,
            memory_format: str | torch.memory_format | None = None, precision: str | None = None,
            loss_scale: LossScale | None = None, penalties: dict | None = None, constraints: dict | None = None,
            distributed: bool = False, shard_optimizer: bool = False, sync_batch_norm: bool = False) -> CompiledModel:
    """Compile `model`; `fuse=False` keeps one kernel per node; `loss=` adds the generated backward
    (`loss_and_grads`, `evaluate`), `optimizer=` training (`train_step`, `fit`); `label_smoothing=0.1` spreads
    cross_entropy's target over the classes as torch's does. Kernels run on CUDA
    when available, else in Triton's interpreter. On CUDA each call replays a CUDA graph of its
    launches, captured on the first call with each input shape (`cuda_graphs=False`: launch one by one).
    `fp32_precision`: how fp32 dots run on the GPU ("tf32x3" by default, "ieee", or one-pass "tf32").
    Inside, a chain of convs keeps its activations channels-last (NHWC); `memory_format=torch.channels_last`
    says the caller's images are stored so too (a PyTorch model converted with .to(memory_format=...)):
    inputs are read and outputs written channels-last, with no conversion at the edges.
    `precision="bf16"` or `"fp16"` runs a float32 model in mixed precision: activations, weights and
    gradients in half precision, dots and reductions accumulated in float32, losses and batch-norm
    statistics in float32, and the optimizer updating float32 master weights; calls return half
    outputs. fp16 training scales its loss gradient dynamically (`loss_scale=fg.LossScale(...)`, torch's
    GradScaler rules and defaults). bf16 needs the GPU; fp16 also runs in the interpreter.
    `penalties={"fc1": fg.optim.Penalty(l1=..., l2=...)}` adds that layer's weight penalty to the training loss
    (its gradient inside the step); `constraints={"fc1": fg.optim.MaxNorm(3.0)}` rescales each of that layer's
    units to that norm at most after every update.
    `distributed=True` trains data parallel in the initialised torch.distributed process group (torchrun):
    rank 0's weights at the start, each rank its shard of every batch, the gradients averaged across ranks,
    the same update everywhere (runtime/distributed.py); `shard_optimizer=True` keeps each rank's slice of
    the optimizer state only (ZeRO stage 1); `sync_batch_norm=True` normalises over every rank's batch together
    (torch's SyncBatchNorm; launched kernel by kernel, no CUDA graph)."""
    options = CompileOptions(fuse=fuse, device=device, loss=loss, label_smoothing=label_smoothing,
                             optimizer=optimizer, cuda_graphs=cuda_graphs, fp32_precision=fp32_precision,
                             memory_format=memory_format, precision=precision, loss_scale=loss_scale,
                             penalties=penalties or {}, constraints=constraints or {}, distributed=distributed,
                             shard_optimizer=shard_optimizer, sync_batch_norm=sync_batch_norm)
    return compiled_with(model, options)


def compiled_with(model, options: CompileOptions) -> CompiledModel:
    """`model` compiled with `options` made already (a save's, a copy's)."""
    return Trainer(model, options) if options.loss is not None else CompiledModel(model, options)
