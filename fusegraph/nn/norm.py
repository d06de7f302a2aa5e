"""BatchNorm1D / BatchNorm2D and LayerNorm: torch's nn.BatchNorm1d / 2d and nn.LayerNorm, with their parameter
and buffer names."""

from __future__ import annotations

import torch
from torch import nn

from ..ir import GraphError, TensorType
from ..ir.ops.norm import EPS, LAYER_NORM_EPS, MOMENTUM
from .conv import param_dtype
from .layer import Layer, copy_into


class _BatchNorm(Layer):
    ranks: tuple[int, ...] = ()
    shape_text = ""

    def __init__(self, eps: float = EPS, momentum: float = MOMENTUM, name: str | None = None) -> None:
        super().__init__(name)
        self.eps, self.momentum = eps, momentum  # as given, for messages naming the layer
        for what, value, low, high in (("eps", eps, 0.0, None), ("momentum", momentum, 0.0, 1.0)):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value < low or \
                    (value <= low if what == "eps" else value > high):
                bounds = "a positive number" if what == "eps" else "a number in [0, 1]"
                raise self.fail(f"{what} must be {bounds}, got {value!r}")
        self.eps, self.momentum = float(eps), float(momentum)
        self.channels = 0

    def config(self):
        return {"eps": self.eps, "momentum": self.momentum}

    def emit(self, b, inputs, name):
        (x,) = inputs
        if x.type.rank not in self.ranks:
            raise GraphError(f"layer '{name}' ({type(self).__name__}) takes {self.shape_text}, got {x.type}")
        self.channels = x.type.shape[1]
        vector = TensorType((self.channels,), param_dtype(x.type))
        weight = b.parameter(f"{name}.weight", vector, "ones", layer=name)
        bias = b.parameter(f"{name}.bias", vector, "zeros", layer=name)
        # running statistics: model state the trainer updates, not trained
        # state=True: torch's buffers, not parameters (count_params leaves them out, as torch's parameters() does)
        mean = b.parameter(f"{name}.running_mean", vector, "zeros", trainable=False, layer=name, state=True)
        var = b.parameter(f"{name}.running_var", vector, "ones", trainable=False, layer=name, state=True)
        counter = b.parameter(f"{name}.num_batches_tracked", TensorType((), "int64"), "zeros", trainable=False,
                              layer=name, state=True)
        return [b.op("batch_norm", [x, mean, var, weight, bias], name=name, layer=name, eps=self.eps,
                     momentum=self.momentum, axis=1, counter=counter.name)]

    def torch_module(self, params):
        module = (nn.BatchNorm2d if 4 in self.ranks else nn.BatchNorm1d)(self.channels, eps=self.eps,
                                                                          momentum=self.momentum)
        with torch.no_grad():
            for buffer in ("running_mean", "running_var", "num_batches_tracked"):
                getattr(module, buffer).copy_(params[f"{self.name}.{buffer}"])
        return copy_into(module, params, {"weight": f"{self.name}.weight", "bias": f"{self.name}.bias"})


class BatchNorm1D(_BatchNorm):
    """Normalises each channel of (batch, channels) or (batch, channels, length) over the batch (and length)."""

    ranks, shape_text = (2, 3), "(batch, channels) or (batch, channels, length)"


class BatchNorm2D(_BatchNorm):
    """Normalises each channel of (batch, channels, height, width) over the batch and the pixels."""

    ranks, shape_text = (4,), "(batch, channels, height, width)"


class LayerNorm(Layer):
    """Normalises each sample over its last axis, then scales and shifts it per feature: torch's
    nn.LayerNorm(last dim) (parameters `weight`, `bias`); over channels after a Permute for a
    channels-first map, as ConvNeXt does."""

    def __init__(self, eps: float = LAYER_NORM_EPS, name: str | None = None) -> None:
        super().__init__(name)
        self.eps = eps
        if isinstance(eps, bool) or not isinstance(eps, (int, float)) or eps <= 0:
            raise self.fail(f"eps must be a positive number, got {eps!r}")
        self.eps = float(eps)
        self.features = 0

    def config(self):
        return {"eps": self.eps}

    def emit(self, b, inputs, name):
        (x,) = inputs
        if not x.type.batched or x.type.rank < 2:
            raise GraphError(f"layer '{name}' (LayerNorm) takes (batch, ..., features), got {x.type}")
        self.features = x.type.shape[-1]
        vector = TensorType((self.features,), param_dtype(x.type))
        weight = b.parameter(f"{name}.weight", vector, "ones", layer=name)
        bias = b.parameter(f"{name}.bias", vector, "zeros", layer=name)
        return [b.op("layer_norm", [x, weight, bias], name=name, layer=name, eps=self.eps)]

    def torch_module(self, params):
        module = nn.LayerNorm(self.features, eps=self.eps)
        return copy_into(module, params, {"weight": f"{self.name}.weight", "bias": f"{self.name}.bias"})
