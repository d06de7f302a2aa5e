"""Dense, Flatten, Permute, Activation, Dropout and Embedding."""

from __future__ import annotations

import numbers
import zlib
from math import prod

import torch
from torch import nn

from ..ir import BATCH, GraphError, TensorType, as_int
from ..ir.ops import get_op
from .activations import activation_module, activation_step, check_activation, weight_init
from .conv import param_dtype
from .layer import Layer, copy_into, flag, positive_int


class Dense(Layer):
    """y = activation(x @ W.T + b) over the last axis; W is (units, in_features) like nn.Linear."""

    def __init__(self, units: int, activation: str | None = None, use_bias: bool = True,
                 name: str | None = None) -> None:
        super().__init__(name)
        self.units, self.activation, self.use_bias = units, activation, use_bias
        self.units = positive_int(units, "units", self.describe())
        self.use_bias = flag(use_bias, "use_bias", self.describe())
        self.act = check_activation(activation, self.describe())
        self.in_features = 0

    def config(self):
        return {"units": self.units, "activation": self.activation}

    def emit(self, b, inputs, name):
        (x,) = inputs
        if x.type.rank < 2:
            raise GraphError(f"layer '{name}' (Dense) takes (batch, ..., features), got {x.type}")
        self.in_features = x.type.shape[-1]
        dtype = param_dtype(x.type)
        w = b.parameter(f"{name}.weight", TensorType((self.units, self.in_features), dtype),
                        weight_init(self.act), layer=name)
        steps = [("matmul", [w], {"transpose_b": True}, "matmul")]
        if self.use_bias:
            bias = b.parameter(f"{name}.bias", TensorType((self.units,), dtype), "zeros", layer=name)
            steps.append(("bias_add", [bias], {"axis": x.type.rank - 1}, "bias_add"))
        if (act := activation_step(self.act)) is not None:
            steps.append((act[0], [], act[1], "act"))
        return [self.pipeline(b, x, name, steps)]

    def torch_module(self, params):
        linear = nn.Linear(self.in_features, self.units, bias=self.use_bias)
        mapping = {"weight": f"{self.name}.weight"} | ({"bias": f"{self.name}.bias"} if self.use_bias else {})
        return nn.Sequential(copy_into(linear, params, mapping), activation_module(self.act))


class Flatten(Layer):
    """(batch, d1, d2, ...) → (batch, d1*d2*...), in PyTorch's (C-order) element order; a view."""

    def emit(self, b, inputs, name):
        (x,) = inputs
        if not x.type.batched:
            raise GraphError(f"layer '{name}' (Flatten) needs a batched input, got {x.type}")
        return [b.op("reshape", [x], name=name, layer=name, shape=(BATCH, prod(x.type.feature_shape)))]

    def torch_module(self, params):
        return nn.Flatten()


class Reshape(Layer):
    """(batch, ...) → (batch, *target_shape), the elements in order (C-order, as torch's reshape); a view."""

    def __init__(self, target_shape, name: str | None = None) -> None:
        super().__init__(name)
        self.target_shape = tuple(target_shape) if isinstance(target_shape, (tuple, list)) else target_shape
        if not isinstance(self.target_shape, tuple) or not all(isinstance(d, int) and d > 0 for d in self.target_shape):
            raise self.fail(f"target_shape must be positive ints (the batch left out), got {target_shape!r}")

    def config(self):
        return {"target_shape": self.target_shape}

    def emit(self, b, inputs, name):
        (x,) = inputs
        if not x.type.batched or prod(x.type.feature_shape) != prod(self.target_shape):
            raise GraphError(f"layer '{name}' (Reshape) cannot make {x.type} into (batch, "
                             f"{', '.join(map(str, self.target_shape))}): the element counts differ")
        return [b.op("reshape", [x], name=name, layer=name, shape=(BATCH, *self.target_shape))]

    def torch_module(self, params):
        return ReshapeTo(self.target_shape)


class ReshapeTo(nn.Module):
    """The torch side of Reshape."""

    def __init__(self, shape: tuple[int, ...]) -> None:
        super().__init__()
        self.shape = shape

    def forward(self, x):
        return x.reshape(x.shape[0], *self.shape)


class PermuteAxes(nn.Module):
    """The torch side of Permute: x.permute with the batch axis kept first."""

    def __init__(self, dims: tuple[int, ...]) -> None:
        super().__init__()
        self.dims = dims

    def forward(self, x):
        return x.permute(0, *self.dims)


class Permute(Layer):
    """Reorders the axes after the batch, numbered from 1 like Keras: `Permute((2, 1))` turns a Conv1D's
    (batch, channels, length) into an RNN's (batch, time, features). A permutation that only moves
    size-1 axes is a view; any other is one copy kernel."""

    def __init__(self, dims, name: str | None = None) -> None:
        super().__init__(name)
        self.dims = dims
        try:
            values = tuple(as_int(d) for d in dims)
        except TypeError:
            values = ()
        if not values or None in values or sorted(values) != list(range(1, len(values) + 1)):  # type: ignore[type-var]
            raise self.fail(f"dims must be a permutation of 1..{max(len(values), 1)} (the axes after the batch, "
                            f"numbered from 1), got {dims!r}")
        self.dims = values

    def config(self):
        return {"dims": self.dims}

    def emit(self, b, inputs, name):
        (x,) = inputs
        if not x.type.batched or x.type.rank - 1 != len(self.dims):
            raise GraphError(f"layer '{name}' (Permute) reorders {len(self.dims)} axes after the batch, but its "
                             f"input is {x.type}; give one number per axis after the batch")
        return [b.op("transpose", [x], name=name, layer=name, perm=(0, *self.dims))]

    def torch_module(self, params):
        return PermuteAxes(self.dims)


class Activation(Layer):
    """`Activation(name, **options)`: the options an activation has, PyTorch's defaults otherwise
    (`negative_slope` of leaky_relu, `alpha` of elu, `axis` of softmax / log_softmax)."""

    def __init__(self, activation: str, name: str | None = None, **options) -> None:
        super().__init__(name)
        self.activation, self.options = activation, {}
        self.act = check_activation(activation, self.describe())
        known = dict(activation_step(self.act)[1]) if self.act is not None else {}
        unknown = sorted(set(options) - set(known))
        if unknown:
            raise self.fail(f"{activation!r} has no option {', '.join(unknown)}; its options: "
                            f"{', '.join(known) or 'none'}")
        for key, value in options.items():
            if isinstance(value, bool) or not isinstance(value, type(known[key])) and not (
                    isinstance(known[key], float) and isinstance(value, int)):
                raise self.fail(f"option {key} must be a {type(known[key]).__name__}, got {value!r}")
        self.options = {k: float(v) if isinstance(known[k], float) else v for k, v in options.items()}

    def config(self):
        return {"activation": self.activation, **self.options}

    def emit(self, b, inputs, name):
        (x,) = inputs
        act = activation_step(self.act)
        if act is None:
            return [x]
        return [b.op(act[0], [x], name=name, layer=name, **{**act[1], **self.options})]

    def torch_module(self, params):
        if self.act is None:
            return activation_module(None)
        op = get_op(self.act)
        return op.module({**op.defaults, **self.options})


class Dropout(Layer):
    """Identity at inference; in training zeroes each element with probability `rate` (seeded)."""

    per_sample = False  # one draw per element, or per sample (StochasticDepth)

    def __init__(self, rate: float, seed: int | None = None, name: str | None = None) -> None:
        super().__init__(name)
        self.rate, self.seed = rate, seed
        if not isinstance(rate, numbers.Real) or isinstance(rate, bool) or not 0.0 <= rate < 1.0:
            raise self.fail(f"rate must be a number in [0, 1), got {rate!r}")
        if seed is not None and as_int(seed) is None:
            raise self.fail(f"seed must be an integer or None, got {seed!r}")
        self.rate, self.seed = float(rate), (None if seed is None else as_int(seed))

    def config(self):
        return {"rate": self.rate}

    def emit(self, b, inputs, name):
        (x,) = inputs
        seed = self.seed if self.seed is not None else zlib.crc32(name.encode())
        drawn = {"per_sample": True} if self.per_sample else {}
        return [b.op("dropout", [x], name=name, layer=name, rate=float(self.rate), seed=seed, **drawn)]

    def torch_module(self, params):
        return nn.Dropout(self.rate)


class StochasticDepth(Dropout):
    """Identity at inference; in training drops each sample whole with probability `rate` and scales the
    kept ones by 1/(1-rate): torchvision's StochasticDepth(p, mode="row") and timm's DropPath, applied to
    a residual branch before its sum."""

    per_sample = True

    def torch_module(self, params):
        return DropSamples(self.rate)


class DropSamples(nn.Module):
    """The torch side of StochasticDepth (torchvision's stochastic_depth, mode "row")."""

    def __init__(self, rate: float) -> None:
        super().__init__()
        self.rate = rate

    def forward(self, x):
        if not self.training or self.rate == 0.0:
            return x
        keep = torch.empty((x.shape[0],) + (1,) * (x.dim() - 1), dtype=x.dtype, device=x.device)
        return x * keep.bernoulli_(1.0 - self.rate).div_(1.0 - self.rate)


class Embedding(Layer):
    """int64 token ids (batch, ...) → vectors (batch, ..., dim); the table is (num_embeddings, dim)."""

    def __init__(self, num_embeddings: int, dim: int, trainable: bool = True, name: str | None = None) -> None:
        super().__init__(name, trainable)
        self.num_embeddings, self.dim = num_embeddings, dim
        self.num_embeddings = positive_int(num_embeddings, "num_embeddings", self.describe())
        self.dim = positive_int(dim, "dim", self.describe())

    def config(self):
        return {"num_embeddings": self.num_embeddings, "dim": self.dim}

    def emit(self, b, inputs, name):
        (ids,) = inputs
        table = b.parameter(f"{name}.weight", TensorType((self.num_embeddings, self.dim)), "normal",
                            trainable=self.trainable, layer=name)
        return [b.op("embedding", [ids, table], name=name, layer=name)]

    def torch_module(self, params):
        module = copy_into(nn.Embedding(self.num_embeddings, self.dim), params, {"weight": f"{self.name}.weight"})
        module.weight.requires_grad_(self.trainable)
        return module


class ChannelShuffle(Layer):
    """ShuffleNet's channel shuffle: the channels in `groups` groups, interleaved (torchvision's
    channel_shuffle: view as (batch, groups, channels // groups, ...), swap those two, view back)."""

    def __init__(self, groups: int, name: str | None = None) -> None:
        super().__init__(name)
        self.groups = positive_int(groups, "groups", self.describe() if name else "ChannelShuffle")

    def config(self):
        return {"groups": self.groups}

    def emit(self, b, inputs, name):
        (x,) = inputs
        return [b.op("channel_shuffle", [x], name=name, layer=name, groups=self.groups)]

    def torch_module(self, params):
        return ShuffleChannels(self.groups)


class ShuffleChannels(nn.Module):
    """The torch side of ChannelShuffle."""

    def __init__(self, groups: int) -> None:
        super().__init__()
        self.groups = groups

    def forward(self, x):
        n, c = x.shape[:2]
        return x.reshape(n, self.groups, c // self.groups, *x.shape[2:]).transpose(1, 2).reshape(x.shape)


class Split(Layer):
    """`Split(sizes, axis=1)(x)`: the pieces of x along `axis` (counting the batch as 0), as torch.split;
    an int is that many equal pieces (torch.chunk)."""

    def __init__(self, sizes, axis: int = 1, name: str | None = None) -> None:
        super().__init__(name)
        self.sizes, self.axis = sizes, axis
        if not (isinstance(sizes, int) and sizes > 0 or isinstance(sizes, (tuple, list)) and sizes
                and all(isinstance(s, int) and s > 0 for s in sizes)):
            raise self.fail(f"sizes must be a positive int (equal pieces) or positive ints, got {sizes!r}")
        if not isinstance(axis, int) or axis == 0:
            raise self.fail(f"axis must be an int other than 0 (the batch), got {axis!r}")

    def config(self):
        return {"sizes": self.sizes, "axis": self.axis}

    def emit(self, b, inputs, name):
        (x,) = inputs
        length = x.type.shape[self.axis % x.type.rank]
        sizes = self.sizes
        if isinstance(sizes, int):
            if length % sizes:
                raise GraphError(f"layer '{name}' (Split) cannot split {length} into {sizes} equal pieces")
            sizes = (length // sizes,) * sizes
        outputs = b.op("split", [x], name=name, layer=name, axis=self.axis, sizes=tuple(sizes))
        return list(outputs) if isinstance(outputs, tuple) else [outputs]

    def torch_module(self, params):
        return SplitInto(self.sizes, self.axis)


class SplitInto(nn.Module):
    """The torch side of Split."""

    def __init__(self, sizes, axis: int) -> None:
        super().__init__()
        self.sizes, self.axis = sizes, axis

    def forward(self, x):
        if isinstance(self.sizes, int):
            return list(torch.chunk(x, self.sizes, self.axis))
        return list(torch.split(x, list(self.sizes), self.axis))


class LayerScale(Layer):
    """Each channel times a learned scale, started at `init_value` (ConvNeXt's layer scale, CaiT's): its
    `weight` is shaped as torch broadcasts it, (channels, 1, ...) for a map, (features,) for a vector; with
    `vector=True`, (channels,) for a map too (timm keeps it so and views it as (1, channels, 1, 1))."""

    def __init__(self, init_value: float = 1e-6, vector: bool = False, name: str | None = None) -> None:
        super().__init__(name)
        if isinstance(init_value, bool) or not isinstance(init_value, (int, float)):
            raise self.fail(f"init_value must be a number, got {init_value!r}")
        if not isinstance(vector, bool):
            raise self.fail(f"vector must be True or False, got {vector!r}")
        self.init_value = float(init_value)
        self.vector = vector
        self.shape: tuple[int, ...] = ()

    def config(self):
        return {"init_value": self.init_value, "vector": self.vector}

    def emit(self, b, inputs, name):
        (x,) = inputs
        if not x.type.batched or x.type.rank < 2:
            raise GraphError(f"layer '{name}' (LayerScale) takes (batch, channels, ...), got {x.type}")
        self.shape = (x.type.shape[1],) if self.vector else (x.type.shape[1], *(1,) * (x.type.rank - 2))
        weight = b.parameter(f"{name}.weight", TensorType(self.shape, param_dtype(x.type)), "constant", layer=name,
                             value=self.init_value)
        return [b.op("channel_mul", [x, weight], name=name, layer=name, axis=1)]

    def torch_module(self, params):
        return copy_into(ChannelWeights(self.shape), params, {"weight": f"{self.name}.weight"})


class ChannelWeights(nn.Module):
    """The torch side of LayerScale: `weight * x`, the weight broadcast over what follows the channels."""

    def __init__(self, shape: tuple[int, ...]) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(shape))

    def forward(self, x):
        return self.weight.reshape(-1, *(1,) * (x.dim() - 2)) * x
