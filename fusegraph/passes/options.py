"""What `fg.compile` takes, as one frozen record, checked when it is made (one clear error per bad
argument) and then handed unchanged to the pipeline, the runtime, a Trainer, a `to_module()` module
and a save. Values are kept in one spelling: `memory_format` as a layout name, `precision` as the dtype
activations run in (None: float32), `loss_scale` filled with GradScaler's defaults where one applies."""

from __future__ import annotations

import dataclasses
import numbers
from dataclasses import dataclass
from typing import Any

import torch

from .. import optim
from ..ir import GraphError
from ..precision import LossScale, half_dtype
from .autodiff import LOSSES

DEVICES = (None, "cuda", "cpu")
FP32_PRECISIONS = ("ieee", "tf32x3", "tf32")  # how fp32 dots run on the GPU (kernels/tuning.py's default)
MEMORY_FORMATS = {None: "contiguous", torch.contiguous_format: "contiguous", torch.channels_last: "channels_last",
                  "contiguous": "contiguous", "channels_last": "channels_last"}
# saves written before these were kept lack them
OPTIONAL_IN_SAVES = ("device", "cuda_graphs", "penalties", "constraints", "label_smoothing")
# how this run goes, not kept in a save: it loads anywhere
RUN_ONLY = ("device", "distributed", "shard_optimizer", "sync_batch_norm")


@dataclass(frozen=True)
class CompileOptions:
    """fg.compile's arguments (its docstring says what each does)."""

    fuse: bool = True
    device: str | None = None  # as asked; None: CUDA when there is one, else Triton's interpreter
    loss: str | None = None
    label_smoothing: float = 0.0  # cross_entropy's (torch's): the target spread over the classes by this much
    optimizer: optim.Optimizer | None = None
    cuda_graphs: bool | None = None  # None: on CUDA
    fp32_precision: str | None = None  # None: the tuned default
    memory_format: str = "contiguous"  # how callers store rank-4 inputs and outputs
    precision: str | None = None  # "bfloat16" or "float16": mixed precision; None: float32
    loss_scale: LossScale | None = None  # float16 training's; None where none applies
    penalties: tuple = ()  # (layer name, fg.optim.Penalty) pairs: on that layer's weight, in training
    constraints: tuple = ()  # (layer name, fg.optim.MaxNorm) pairs: after every update
    distributed: bool = False  # data parallel over the initialised torch.distributed process group
    shard_optimizer: bool = False  # with distributed: each rank keeps and updates its slice of the optimizer state
    sync_batch_norm: bool = False  # with distributed: batch norms over every rank's batch together (SyncBatchNorm)

    def __post_init__(self) -> None:
        for name in ("fuse", "cuda_graphs", "distributed", "shard_optimizer", "sync_batch_norm"):
            value = getattr(self, name)
            if not isinstance(value, bool) and not (value is None and name == "cuda_graphs"):
                raise GraphError(f"{name} must be True or False, got {value!r}")
        if self.distributed and self.loss is None:
            raise GraphError("distributed=True trains data parallel: give a loss and an optimizer too")
        if self.sync_batch_norm and not self.distributed:
            raise GraphError("sync_batch_norm=True combines batch norms across a distributed run's ranks: compile "
                             "with distributed=True too")
        if self.sync_batch_norm and self.cuda_graphs:
            raise GraphError("sync_batch_norm=True exchanges statistics between a batch norm's kernels, which a "
                             "captured CUDA graph cannot: leave cuda_graphs unset (it is off then) or False")
        if self.shard_optimizer and not (self.distributed and self.optimizer is not None):
            raise GraphError("shard_optimizer=True shards a distributed run's optimizer state: compile with "
                             "distributed=True and an optimizer")
        if self.device not in DEVICES:
            raise GraphError(f"device must be 'cuda', 'cpu' or None (automatic), got {self.device!r}")
        if self.loss is not None and self.loss not in LOSSES:
            raise GraphError(f"unknown loss {self.loss!r}; use one of {', '.join(LOSSES)}")
        smoothing = self.label_smoothing
        if isinstance(smoothing, bool) or not isinstance(smoothing, numbers.Real) or not 0 <= smoothing <= 1:
            raise GraphError(f"label_smoothing must be a number from 0 to 1 (torch's), got {smoothing!r}")
        if smoothing and self.loss != "cross_entropy":
            raise GraphError(f"label_smoothing applies to loss='cross_entropy' (class targets), not {self.loss!r}")
        object.__setattr__(self, "label_smoothing", float(smoothing))
        if self.optimizer is not None:
            if not isinstance(self.optimizer, optim.Optimizer):
                raise GraphError(f"optimizer must be one of fg.optim's (SGD, Adam, ...), "
                                 f"got {type(self.optimizer).__name__}")
            if self.loss is None:
                raise GraphError("an optimizer needs a loss: fg.compile(model, loss='cross_entropy', optimizer=...)")
        if self.fp32_precision not in (None, *FP32_PRECISIONS):
            raise GraphError(f"fp32_precision must be one of {', '.join(FP32_PRECISIONS)} (or None for the tuned "
                             f"default), got {self.fp32_precision!r}")
        object.__setattr__(self, "penalties", _per_layer("penalties", self.penalties, optim.Penalty, self.loss))
        object.__setattr__(self, "constraints", _per_layer("constraints", self.constraints, optim.MaxNorm, self.loss))
        object.__setattr__(self, "memory_format", _layout_name(self.memory_format))
        object.__setattr__(self, "precision", half_dtype(self.precision))
        object.__setattr__(self, "loss_scale", _loss_scale(self.precision, self.loss, self.loss_scale))

    @property
    def scales_loss(self) -> bool:
        """Whether training multiplies the loss gradient by a dynamic scale (float16 training)."""
        return self.loss_scale is not None

    def to_data(self) -> dict[str, Any]:
        """JSON-ready: the optimizer as its name and hyperparameters, the loss scale as its fields."""
        data = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        if self.optimizer is not None:
            data["optimizer"] = {"name": self.optimizer.name, "hyperparameters": {
                f.name: (list(v) if isinstance(v := getattr(self.optimizer, f.name), tuple) else v)
                for f in dataclasses.fields(self.optimizer) if f.name != "state"}}
        if self.loss_scale is not None:
            data["loss_scale"] = dataclasses.asdict(self.loss_scale)
        for name in ("penalties", "constraints"):
            data[name] = [[layer, dataclasses.asdict(spec)] for layer, spec in getattr(self, name)]
        return data

    @classmethod
    def from_data(cls, data: dict[str, Any], **overrides: Any) -> CompileOptions:
        """The options `to_data` wrote (a KeyError names a missing one), with `overrides` (a device) instead."""
        values = {f.name: data[f.name] for f in dataclasses.fields(cls)
                  if f.name not in (*OPTIONAL_IN_SAVES, *RUN_ONLY) or f.name in data}
        spec = values["optimizer"]
        if spec is not None:
            kind = getattr(optim, spec["name"], None)
            if not (isinstance(kind, type) and issubclass(kind, optim.Optimizer)):
                raise GraphError(f"unknown optimizer {spec['name']!r}")
            values["optimizer"] = kind(**{k: tuple(v) if isinstance(v, list) else v
                                          for k, v in spec["hyperparameters"].items()})
        if values["loss_scale"] is not None:
            values["loss_scale"] = LossScale(**values["loss_scale"])
        for name, kind in (("penalties", optim.Penalty), ("constraints", optim.MaxNorm)):
            values[name] = tuple((layer, kind(**spec)) for layer, spec in values.get(name, ()))
        return cls(**{**values, **overrides})



def _per_layer(what: str, given, kind: type, loss: str | None) -> tuple:
    """{layer name: spec} (or its pairs) as sorted (name, spec) pairs, each spec a `kind`."""
    pairs = tuple(given.items()) if isinstance(given, dict) else tuple(tuple(pair) for pair in given or ())
    for pair in pairs:
        if len(pair) != 2 or not isinstance(pair[0], str) or not isinstance(pair[1], kind):
            raise GraphError(f"{what} maps layer names to fg.optim.{kind.__name__} objects, e.g. "
                             f"{{'fc1': fg.optim.{kind.__name__}(...)}}; got {given!r}")
    if pairs and loss is None:
        raise GraphError(f"{what} apply in training: compile with a loss and an optimizer too")
    return tuple(sorted(pairs))


def _layout_name(value) -> str:
    try:
        return MEMORY_FORMATS[value]
    except (KeyError, TypeError):
        raise GraphError(f"memory_format must be torch.contiguous_format or torch.channels_last (or their names), "
                         f"got {value!r}") from None


def _loss_scale(half: str | None, loss: str | None, loss_scale) -> LossScale | None:
    """float16 training's loss scale (GradScaler's defaults unless given); None where none applies."""
    if loss_scale is not None:
        if not isinstance(loss_scale, LossScale):
            raise GraphError(f"loss_scale must be a fg.LossScale, got {type(loss_scale).__name__}")
        if half != "float16" or loss is None:
            raise GraphError("loss_scale applies to training in precision='fp16' (bf16 has float32's exponent "
                             "range and needs none)")
    if half != "float16" or loss is None:
        return None
    return loss_scale or LossScale()


DEFAULTS = CompileOptions()
