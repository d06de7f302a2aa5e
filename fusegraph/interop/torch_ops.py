"""The torch operations from_torch converts, each a handler `(converter, node, *args, **kwargs)` that calls
fusegraph layers (or returns a value of interop/values.py); the tables say which torch module class,
function (torch.nn.functional's, torch's, ATen's as torch.export writes them) or tensor method each
handles. A handler refuses what it cannot convert with the converter's `fail`, naming what to change."""

from __future__ import annotations

import inspect
import operator
from collections.abc import Callable, Sequence
from math import prod
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import nn

from ..ir.ops import OPS, OpDef
from ..nn import (
    Activation,
    AdaptiveAvgPool1D,
    AdaptiveAvgPool2D,
    AdaptiveMaxPool1D,
    AdaptiveMaxPool2D,
    Add,
    AvgPool1D,
    AvgPool2D,
    BatchNorm1D,
    BatchNorm2D,
    ChannelScale,
    ChannelShuffle,
    Concatenate,
    Conv1D,
    Conv2D,
    Dense,
    Dropout,
    Embedding,
    Flatten,
    GlobalAvgPool1D,
    GlobalAvgPool2D,
    LayerNorm,
    LayerScale,
    MaxPool1D,
    MaxPool2D,
    Multiply,
    Permute,
    Reshape,
    Split,
    StochasticDepth,
)
from ..nn.recurrent import PARAM_NAMES
from ..nn.tensor import SymbolicTensor
from .values import (
    RNN_READS,
    ChannelGroups,
    Constant,
    Direction,
    Noise,
    Part,
    Pooled,
    Recurrent,
    Size,
    ViewedWeight,
    Zeros,
)

if TYPE_CHECKING:
    from .from_torch import Converter


def _bind(args: tuple, kwargs: dict, names: Sequence[str], defaults: dict) -> dict:
    """Positional and keyword arguments by parameter name, with defaults (torch's signatures)."""
    bound = dict(defaults)
    bound.update(zip(names, args))
    bound.update(kwargs)
    return bound


def _pair_or_int(value):
    return tuple(value) if isinstance(value, (tuple, list)) else value


def _single(value) -> int | None:
    """1 for an output size of 1 / (1,) / (1, 1); None otherwise."""
    values = value if isinstance(value, (tuple, list)) else (value,)
    return 1 if all(v == 1 for v in values) else None


# -- handlers: (converter, node, args...) -> value ------------------------------------------------------


def _conv(c: Converter, x, weight: torch.Tensor, bias, stride, padding, dilation, groups, ndim: int,
          keys: tuple[str, str | None], padding_mode: str = "zeros") -> SymbolicTensor:
    if padding_mode != "zeros":
        raise c.fail(f"has padding_mode={padding_mode!r}; fusegraph pads with zeros")
    name = c.name_here()
    cls = Conv1D if ndim == 1 else Conv2D
    layer = cls(weight.shape[0], tuple(weight.shape[2:]), strides=_pair_or_int(stride),
                padding=_pair_or_int(padding), dilation=_pair_or_int(dilation), use_bias=bias is not None,
                groups=int(groups), name=name)
    out = layer(c.tensor(x))
    c.copy(name, {"weight": (weight, keys[0])} | ({"bias": (bias, keys[1])} if bias is not None else {}))
    return out


def _conv_module(c: Converter, node, module, x):
    bias = module.bias
    return _conv(c, x, module.weight, bias, module.stride, module.padding, module.dilation, module.groups,
                 1 if isinstance(module, nn.Conv1d) else 2, (f"{node.target}.weight", f"{node.target}.bias"),
                 module.padding_mode)


def _conv_function(ndim: int):
    def handler(c: Converter, node, *args, **kwargs):
        a = _bind(args, kwargs, ("input", "weight", "bias", "stride", "padding", "dilation", "groups"),
                  {"bias": None, "stride": 1, "padding": 0, "dilation": 1, "groups": 1})
        weight, bias = c.value(a["weight"]), c.value(a["bias"])
        if not isinstance(weight, Constant) or not (bias is None or isinstance(bias, Constant)):
            raise c.fail("takes weights computed in forward; fusegraph reads them as parameters of the module")
        return _conv(c, a["input"], weight.tensor, bias.tensor if bias is not None else None, a["stride"],
                     a["padding"], a["dilation"], a["groups"], ndim, (weight.key, bias.key if bias else None))
    return handler


def _dense(c: Converter, x, weight: torch.Tensor, bias, keys: tuple[str, str | None]) -> SymbolicTensor:
    name = c.name_here()
    out = Dense(weight.shape[0], use_bias=bias is not None, name=name)(c.tensor(x))
    c.copy(name, {"weight": (weight, keys[0])} | ({"bias": (bias, keys[1])} if bias is not None else {}))
    return out


def _linear_module(c: Converter, node, module, x):
    return _dense(c, x, module.weight, module.bias, (f"{node.target}.weight", f"{node.target}.bias"))


def _linear_function(c: Converter, node, *args, **kwargs):
    a = _bind(args, kwargs, ("input", "weight", "bias"), {"bias": None})
    weight, bias = c.value(a["weight"]), c.value(a["bias"])
    if not isinstance(weight, Constant) or not (bias is None or isinstance(bias, Constant)):
        raise c.fail("takes weights computed in forward; fusegraph reads them as parameters of the module")
    return _dense(c, a["input"], weight.tensor, bias.tensor if bias is not None else None,
                  (weight.key, bias.key if bias else None))


def _pool(c: Converter, kind: str, ndim: int, x, kernel_size, stride=None, padding=0, dilation=1,
          ceil_mode=False, return_indices=False, count_include_pad=True, divisor_override=None):
    if return_indices:
        raise c.fail("has return_indices=True; fusegraph pools return the pooled values only")
    if _single(dilation) is None:
        raise c.fail(f"has dilation={dilation!r}; fusegraph pools are not dilated")
    if divisor_override is not None:
        raise c.fail("has divisor_override; fusegraph averages over the window")
    cls = {("max", 1): MaxPool1D, ("max", 2): MaxPool2D, ("avg", 1): AvgPool1D, ("avg", 2): AvgPool2D}[kind, ndim]
    strides = None if stride is None or stride == [] or stride == () else _pair_or_int(stride)
    options = {"count_include_pad": bool(count_include_pad)} if kind == "avg" else {}
    return cls(_pair_or_int(kernel_size), strides=strides, padding=_pair_or_int(padding), ceil_mode=bool(ceil_mode),
               name=c.name_here(), **options)(c.tensor(x))


def _pool_module(kind: str, ndim: int):
    def handler(c: Converter, node, module, x):
        options = {"stride": module.stride, "padding": module.padding, "ceil_mode": module.ceil_mode}
        if kind == "max":
            options |= {"dilation": module.dilation, "return_indices": module.return_indices}
        else:
            options |= {"count_include_pad": module.count_include_pad,
                        "divisor_override": getattr(module, "divisor_override", None)}  # AvgPool1d has none
        return _pool(c, kind, ndim, x, module.kernel_size, **options)
    return handler


def _pool_function(kind: str, ndim: int):
    names = ("input", "kernel_size", "stride", "padding") + (
        ("dilation", "ceil_mode", "return_indices") if kind == "max" else ("ceil_mode", "count_include_pad",
                                                                         "divisor_override"))

    def handler(c: Converter, node, *args, **kwargs):
        a = _bind(args, kwargs, names, {})
        return _pool(c, kind, ndim, a.pop("input"), **a)
    return handler


def _global_average(c: Converter, x, ndim: int, keep: bool):
    tensor = c.tensor(x)
    if tensor.type.rank != ndim + 2:
        raise c.fail(f"averages over the spatial axes of {tensor.type}; expected (batch, channels, "
                     f"{'length' if ndim == 1 else 'height, width'})")
    out = (GlobalAvgPool1D if ndim == 1 else GlobalAvgPool2D)(name=c.name_here())(tensor)
    return Pooled(out, ndim) if keep else out


def _adaptive(c: Converter, kind: str, ndim: int, x, output_size, return_indices: bool = False):
    """A global average where the output is 1 (flattened next for free); otherwise torch's bins."""
    if return_indices:
        raise c.fail("has return_indices=True; fusegraph pools return the pooled values only")
    sizes = tuple(output_size) if isinstance(output_size, (tuple, list)) else (output_size,) * ndim
    if any(s is None for s in sizes):
        tensor = c.tensor(x)  # None keeps that dim's size, as torch
        sizes = tuple(tensor.shape[1 + i] if s is None else s for i, s in enumerate(sizes))
    if kind == "avg" and all(s == 1 for s in sizes):
        return _global_average(c, x, ndim, keep=True)
    cls = {("avg", 1): AdaptiveAvgPool1D, ("avg", 2): AdaptiveAvgPool2D, ("max", 1): AdaptiveMaxPool1D,
           ("max", 2): AdaptiveMaxPool2D}[kind, ndim]
    return cls(sizes, name=c.name_here())(c.tensor(x))


def _adaptive_module(kind: str, ndim: int):
    def handler(c: Converter, node, module, x):
        return _adaptive(c, kind, ndim, x, module.output_size, getattr(module, "return_indices", False))
    return handler


def _adaptive_function(kind: str, ndim: int):
    def handler(c: Converter, node, x, output_size, return_indices=False):
        return _adaptive(c, kind, ndim, x, output_size, return_indices)
    return handler


def _mean(c: Converter, node, x, dim=None, keepdim=False, dtype=None):
    tensor = c.tensor(x)
    rank = tensor.type.rank
    dims = sorted({d % rank for d in (dim if isinstance(dim, (tuple, list)) else (dim,))} if dim is not None else ())
    if rank in (3, 4) and dims == list(range(2, rank)) and dtype is None:
        return _global_average(c, x, rank - 2, keep=keepdim)
    raise c.fail(f"averages over dims {dim!r} of {tensor.type}; fusegraph supports the mean over every axis after "
                 "the channels (a global average pool)")


def _flatten(c: Converter, x, start_dim: int = 1, end_dim: int = -1):
    value = c.value(x)
    if isinstance(value, Pooled):
        return value.tensor
    tensor = c.tensor(x)
    if start_dim != 1 or end_dim not in (-1, tensor.type.rank - 1):
        raise c.fail(f"flattens dims {start_dim}..{end_dim}; fusegraph flattens everything after the batch "
                     "(start_dim=1, end_dim=-1)")
    return tensor if tensor.type.rank == 2 else Flatten(name=c.name_here())(tensor)


def _flatten_module(c: Converter, node, module, x):
    return _flatten(c, x, module.start_dim, module.end_dim)


def _flatten_function(c: Converter, node, x, start_dim=0, end_dim=-1):
    return _flatten(c, x, start_dim, end_dim)


def _view(c: Converter, node, x, *shape):
    shape = tuple(shape[0]) if len(shape) == 1 and isinstance(shape[0], (tuple, list)) else shape
    value = c.value(x)
    sizes = [c.value(s) for s in shape]
    if isinstance(value, Constant) and all(isinstance(s, int) for s in sizes):
        return ViewedWeight(value, tuple(value.tensor.reshape(sizes).shape))
    shuffle = _channel_shuffle_view(c, value, sizes)
    if shuffle is not None:
        return shuffle
    tensor = value.tensor if isinstance(value, Pooled) else c.tensor(x)
    features = prod(tensor.shape)
    batch_first = len(sizes) == 2 and (sizes[0] == -1 and sizes[1] == features or isinstance(sizes[0], Size)
                                       and sizes[0].dim == 0 and sizes[1] in (-1, features))
    if batch_first:
        return tensor if isinstance(value, Pooled) or tensor.type.rank == 2 else Flatten(name=c.name_here())(tensor)
    target = _batch_first_shape(sizes, features)
    if target is None:
        raise c.fail(f"reshapes to {tuple(s if not isinstance(s, Size) else 'x.size(0)' for s in sizes)}; fusegraph "
                     f"reshapes a (batch, {', '.join(map(str, tensor.shape))}) tensor only keeping the batch first: "
                     "x.view(x.size(0), ...) with as many elements, x.flatten(1), nn.Flatten")
    return tensor if target == tensor.shape else Reshape(target, name=c.name_here())(tensor)


def _batch_first_shape(sizes: list, features: int) -> tuple[int, ...] | None:
    """The shape after the batch that `.view(*sizes)` gives a sample of `features` elements, if the view
    keeps the batch first (x.size(0) first, or -1 before sizes given in full); None otherwise."""
    if len(sizes) < 2 or not all(isinstance(s, int) and (s > 0 or s == -1) for s in sizes[1:]):
        return None
    rest = list(sizes[1:])
    known = prod(s for s in rest if s != -1)
    if isinstance(sizes[0], Size) and sizes[0].dim == 0:
        if rest.count(-1) == 1 and known and features % known == 0:
            rest[rest.index(-1)] = features // known
    elif not (sizes[0] == -1 and -1 not in rest):
        return None
    return tuple(rest) if -1 not in rest and prod(rest) == features else None


def _channel_shuffle_view(c: Converter, value, sizes: list):
    """torchvision's channel_shuffle: x.view(N, g, C // g, H, W), then transpose(1, 2), then x.view(N, C, H, W):
    the first view gives ChannelGroups, the last (of the swapped groups) a ChannelShuffle; None otherwise."""
    # the batch: x.size(0), -1, or the number itself (Dynamo's graphs spell static shapes out)
    batch = bool(sizes) and (isinstance(sizes[0], Size) and sizes[0].dim == 0 or isinstance(sizes[0], int))
    if isinstance(value, ChannelGroups):
        tensor = value.tensor
        if value.shuffled and batch and len(sizes) == len(tensor.shape) + 1 and \
                sizes[1] in (-1, tensor.shape[0]) and tuple(sizes[2:]) == tuple(tensor.shape[1:]):
            return ChannelShuffle(value.groups, name=c.name_here())(tensor)
        return None  # any other view of the grouped map: a reshape of it
    if not isinstance(value, SymbolicTensor) or not batch or len(sizes) != len(value.shape) + 2:
        return None
    channels, spatial = value.shape[0], tuple(value.shape[1:])
    groups, per_group = sizes[1], sizes[2]
    if isinstance(groups, int) and groups > 0 and per_group in (-1, channels // groups) and \
            channels % groups == 0 and tuple(sizes[3:]) == spatial:
        return ChannelGroups(value, groups)
    return None


def _size(c: Converter, node, x, dim=None):
    return Size(c.tensor(x), dim)


def _getattr(c: Converter, node, x, attribute):
    if attribute == "shape":
        return Size(c.tensor(x))
    if attribute == "ndim":
        return c.tensor(x).type.rank
    raise c.fail(f"reads .{attribute}; only .shape and .ndim are supported")


def _assert(c: Converter, node, condition, message=None):
    """torch._assert on sizes (timm's `_assert(x.ndim == 4, ...)`): checked now, on the example's shape."""
    value = c.value(condition)
    if not isinstance(value, bool):
        raise c.fail("asserts on a tensor's values; fusegraph checks assertions on sizes only")
    if not value:
        raise c.fail(f"fails its assertion on the example inputs: {c.value(message) if message else ''}")


def _softmax(name: str):
    def handler(c: Converter, node, x, dim=None, *args, **kwargs):
        tensor = c.tensor(x)
        if dim is None or dim % tensor.type.rank != tensor.type.rank - 1:
            raise c.fail(f"takes dim={dim!r}; fusegraph's {name} runs over the last dim (dim=-1)")
        return Activation(name, name=c.name_here())(tensor)
    return handler


def _softmax_module(name: str):
    def handler(c: Converter, node, module, x):
        return _softmax(name)(c, node, x, module.dim)
    return handler


def _activation_options(c: Converter, op: OpDef, given: dict) -> dict:
    """The op's attrs among a call's arguments (named as PyTorch names them); an argument it has no attr
    for must keep the value its TorchForms fixes, and `inplace` makes no difference to the value."""
    given.pop("inplace", None)
    for key, value in given.items():
        if key in op.torch.fixed and value != op.torch.fixed[key]:
            raise c.fail(f"has {key}={value!r}; fusegraph's {op.name} takes {key}={op.torch.fixed[key]!r} only")
        if key not in op.defaults and key not in op.torch.fixed:
            raise c.fail(f"has {key}={value!r}; fusegraph's {op.name} takes "
                         f"{', '.join(op.defaults) or 'no options'}")
    return {key: given[key] for key in op.defaults if key in given}


def _activation_module(op: OpDef) -> Callable:
    def handler(c: Converter, node, module, x):
        given = {key: getattr(module, key) for key in (*op.defaults, *op.torch.fixed) if hasattr(module, key)}
        return Activation(op.name, name=c.name_here(), **_activation_options(c, op, given))(c.tensor(x))
    return handler


def _activation_call(op: OpDef) -> Callable:
    """A function's or method's call: options by name, or by position in the function's own order (the
    op's attrs' order for a builtin whose parameters Python cannot see)."""
    def handler(c: Converter, node, x, *args, **kwargs):
        names = (_parameter_names(node.target) if node.op == "call_function" else None) or list(op.defaults)
        if len(args) > len(names):
            raise c.fail(f"passes {len(args)} options by position; fusegraph's {op.name} takes "
                         f"{', '.join(op.defaults) or 'none'}")
        given = {**dict(zip(names, args)), **kwargs}
        out = Activation(op.name, name=c.name_here(), **_activation_options(c, op, dict(given)))(c.tensor(x))
        if given.get("inplace"):
            c.replaces(x, out)
        return out
    return handler


def _in_place(handler: Callable) -> Callable:
    """An in-place call (x.relu_()): its value also stands for x from here on, for code that reads x again."""
    def in_place(c: Converter, node, x, *args, **kwargs):
        out = handler(c, node, x, *args, **kwargs)
        c.replaces(x, out)
        return out
    return in_place


def _parameter_names(fn) -> list[str] | None:
    """The names of a PyTorch callable's arguments after its input; None where Python cannot see them."""
    schema = getattr(fn, "_schema", None)  # an ATen overload
    if schema is not None:
        return [argument.name for argument in schema.arguments[1:]]
    try:
        return list(inspect.signature(fn).parameters)[1:]
    except (TypeError, ValueError):
        return None


def _dropout(c: Converter, x, p: float):
    tensor = c.tensor(x)
    return tensor if p == 0 else Dropout(p, name=c.name_here())(tensor)


def _dropout_function(c: Converter, node, x, p=0.5, training=True, inplace=False):
    c.modes.add(bool(training))
    return _dropout(c, x, p)


def _batch_norm_function(c: Converter, node, *args, **kwargs):
    a = _bind(args, kwargs, ("input", "running_mean", "running_var", "weight", "bias", "training", "momentum", "eps"),
              {"weight": None, "bias": None, "training": False, "momentum": 0.1, "eps": 1e-5})
    vectors = [c.value(a[k]) for k in ("running_mean", "running_var", "weight", "bias")]
    if not all(isinstance(v, Constant) for v in vectors) or a["momentum"] is None:
        raise c.fail("needs running statistics, weight and bias that are the module's buffers and parameters, "
                     "and a momentum (not None), as fusegraph's BatchNorm1D / BatchNorm2D keep")
    c.modes.add(bool(a["training"]))
    x = c.tensor(a["input"])
    name = c.name_here()
    out = (BatchNorm2D if x.type.rank == 4 else BatchNorm1D)(eps=a["eps"], momentum=a["momentum"], name=name)(x)
    c.copy(name, {k: (v.tensor, v.key) for k, v in zip(("running_mean", "running_var", "weight", "bias"), vectors)})
    counter = vectors[0].key.removesuffix("running_mean") + "num_batches_tracked"
    if vectors[0].key.endswith(".running_mean") and counter in dict(c.root.named_buffers()):  # torch.export's
        c.copy(name, {"num_batches_tracked": (c.root.get_buffer(counter), counter)})
    return out


def _embedding_module(c: Converter, node, module, ids):
    for option, default in (("padding_idx", None), ("max_norm", None), ("scale_grad_by_freq", False),
                            ("sparse", False)):
        if getattr(module, option) != default:
            raise c.fail(f"has {option}={getattr(module, option)!r}; fusegraph embeddings have none")
    name = c.name_here()
    out = Embedding(module.num_embeddings, module.embedding_dim, trainable=module.weight.requires_grad,
                    name=name)(c.tensor(ids))
    c.copy(name, {"weight": (module.weight, f"{node.target}.weight")})
    return out


def _layer_norm(c: Converter, x, normalized_shape, weight, bias, eps, keys: tuple[str, str]) -> SymbolicTensor:
    tensor = c.tensor(x)
    shape = tuple(normalized_shape) if isinstance(normalized_shape, (tuple, list)) else (normalized_shape,)
    if shape != (tensor.shape[-1],):
        raise c.fail(f"normalises over {shape}; fusegraph's LayerNorm normalises over the last axis only "
                     f"({tensor.shape[-1]},)")
    if weight is None or bias is None:
        raise c.fail("has no weight or no bias (elementwise_affine=False or bias=False); fusegraph's LayerNorm "
                     "has both")
    name = c.name_here()
    out = LayerNorm(eps=float(eps), name=name)(tensor)
    c.copy(name, {"weight": (weight, keys[0]), "bias": (bias, keys[1])})
    return out


def _layer_norm_module(c: Converter, node, module, x):
    return _layer_norm(c, x, module.normalized_shape, module.weight, getattr(module, "bias", None), module.eps,
                       (f"{node.target}.weight", f"{node.target}.bias"))


def _layer_norm_function(c: Converter, node, *args, **kwargs):
    a = _bind(args, kwargs, ("input", "normalized_shape", "weight", "bias", "eps"),
              {"weight": None, "bias": None, "eps": 1e-5})
    weight, bias = c.value(a["weight"]), c.value(a["bias"])
    if not all(isinstance(v, Constant) for v in (weight, bias)):
        raise c.fail("takes a weight and bias computed in forward, or none; fusegraph reads them as the module's "
                     "parameters")
    return _layer_norm(c, a["input"], a["normalized_shape"], weight.tensor, bias.tensor, a["eps"],
                       (weight.key, bias.key))


def _batch_norm_module(c: Converter, node, module, x):
    if not (module.affine and module.track_running_stats) or module.momentum is None:
        raise c.fail("needs affine=True, track_running_stats=True and a momentum (not None), as fusegraph's "
                     "BatchNorm1D / BatchNorm2D keep")
    name = c.name_here()
    cls = BatchNorm2D if isinstance(module, nn.BatchNorm2d) else BatchNorm1D
    out = cls(eps=module.eps, momentum=module.momentum, name=name)(c.tensor(x))
    c.copy(name, {k: (getattr(module, k), f"{node.target}.{k}")
                  for k in ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")})
    return out


def _recurrent_module(c: Converter, node, module, x, state=None):
    for option, ok, needed in (("batch_first", module.batch_first, "batch_first=True"),
                               ("bias", module.bias, "bias=True"),
                               ("proj_size", getattr(module, "proj_size", 0) == 0, "proj_size=0"),
                               ("dropout", module.dropout == 0 or module.num_layers == 1, "dropout=0 between layers"),
                               ("nonlinearity", getattr(module, "nonlinearity", "tanh") == "tanh",
                                "nonlinearity='tanh'")):
        if not ok:
            raise c.fail(f"has {option}={getattr(module, option)!r}; fusegraph RNNs need {needed}")
    directions = ("", "_reverse") if module.bidirectional else ("",)
    weights = {f"{p}_l{k}{d}": (module.get_parameter(f"{p}_l{k}{d}"), f"{node.target}.{p}_l{k}{d}")
               for k in range(module.num_layers) for p in PARAM_NAMES for d in directions}
    rnn = Recurrent(type(module).__name__, module.hidden_size, module.num_layers, module.bidirectional, weights,
                    node.target, c.name_here(), c.tensor(x), c)
    rnn.initial = _initial_states(c, rnn, state)
    return rnn


def _initial_states(c: Converter, rnn: Recurrent, state) -> list[list[SymbolicTensor]] | None:
    """Per layer, the carries an RNN starts from: None for zeros (no state, or torch.zeros); the final
    states of another RNN of the same form (an encoder's (h_n, c_n) handed to its decoder)."""
    given = [c.value(s) for s in state] if isinstance(state, (tuple, list)) else [c.value(state)]
    if state is None or all(isinstance(v, Zeros) for v in given):
        return None
    lstm = rnn.kind == "LSTM"
    whole = len(given) == 1 and isinstance(given[0], Part) and given[0].part == "state"
    unpacked = all(isinstance(v, Part) for v in given) and [v.part for v in given] == (["h", "c"] if lstm else ["h"]) \
        and len({id(v.rnn) for v in given}) == 1
    if not (whole or unpacked):
        raise c.fail("is given an initial state fusegraph cannot read; it takes zeros, or the final states of "
                     "another RNN of the same form (an encoder's (h_n, c_n) handed to a decoder). States put the "
                     "batch on axis 1: one given as an input or computed in forward is not supported yet")
    source = given[0].rnn
    form = (source.kind, source.hidden, source.layers, source.bidirectional)
    if form != (rnn.kind, rnn.hidden, rnn.layers, rnn.bidirectional):
        raise c.fail(f"starts from the final states of the {source.kind} at '{source.path}' ({source.layers} "
                     f"layer(s) of {source.hidden}, bidirectional={source.bidirectional}); fusegraph hands states "
                     f"only between RNNs of the same form ({rnn.kind}, {rnn.layers} layer(s) of {rnn.hidden}, "
                     f"bidirectional={rnn.bidirectional})")
    return source.final_states()


def _zeros(c: Converter, node, *size, **kwargs):
    return Zeros()


def _recurrent_function(kind: str):
    """torch.lstm / gru / rnn_tanh as torch.compile's graphs call them: (input, hx, weights, has_biases,
    num_layers, dropout, train, bidirectional, batch_first)."""
    def handler(c: Converter, node, x, hx, params, has_biases, num_layers, dropout, train, bidirectional,
                batch_first):
        for option, ok, needed in (("batch_first", batch_first, "batch_first=True"), ("bias", has_biases, "bias=True"),
                                   ("dropout", dropout == 0 or num_layers == 1, "dropout=0 between layers")):
            if not ok:
                raise c.fail(f"has {option}; fusegraph RNNs need {needed}")
        tensors = [c.value(p) for p in params]
        if not all(isinstance(t, Constant) for t in tensors):
            raise c.fail("takes weights computed in forward; fusegraph reads them as the module's parameters")
        directions = ("", "_reverse") if bidirectional else ("",)
        names = [f"{p}_l{k}{d}" for k in range(num_layers) for d in directions for p in PARAM_NAMES]
        if len(names) != len(tensors):
            raise c.fail(f"takes {len(tensors)} weights; expected {len(names)} (projections are not supported)")
        weights = {name: (t.tensor, t.key) for name, t in zip(names, tensors)}
        hidden = tensors[1].tensor.shape[1]
        rnn = Recurrent(kind, hidden, num_layers, bidirectional, weights, node.name, c.name_here(), c.tensor(x), c,
                        flat=True)
        rnn.initial = _initial_states(c, rnn, hx)
        return rnn
    return handler


def _aten_slice(c: Converter, node, x, dim=0, start=None, end=None, step=1):
    """x[..., :, ...] as torch.export writes it: a whole-axis slice is the value itself (an RNN's output
    sequence stays one, for the select of its last step that follows)."""
    if start in (None, 0) and (end is None or end >= 2 ** 31 - 1) and step == 1:
        return c.value(x)
    raise c.fail(f"slices dim {dim} to [{start}:{end}:{step}]; fusegraph supports indexing an RNN's results only")


def _aten_add_(c: Converter, node, a, b, *, alpha=1):
    """An in-place add as torch.export writes it: a batch norm counting its steps (its num_batches_tracked
    buffer, which fusegraph's batch norm keeps itself), else an add."""
    counter = c.value(a)
    if isinstance(counter, Constant) and counter.key.rsplit(".", 1)[-1] == "num_batches_tracked":
        return counter
    return _add(c, node, a, b, alpha=alpha)


def _aten_embedding(c: Converter, node, weight, indices, padding_idx=-1, scale_grad_by_freq=False, sparse=False):
    return _embedding_function(c, node, indices, weight, None if padding_idx == -1 else padding_idx,
                               scale_grad_by_freq=scale_grad_by_freq, sparse=sparse)


def _aten_batch_norm(c: Converter, node, x, weight, bias, running_mean, running_var, training, momentum, eps,
                     cudnn_enabled=True):
    return _batch_norm_function(c, node, x, running_mean, running_var, weight, bias, training, momentum, eps)


def _embedding_function(c: Converter, node, *args, **kwargs):
    a = _bind(args, kwargs, ("input", "weight", "padding_idx", "max_norm", "norm_type", "scale_grad_by_freq",
                             "sparse"), {"padding_idx": None, "max_norm": None, "scale_grad_by_freq": False,
                                         "sparse": False})
    weight = c.value(a["weight"])
    if not isinstance(weight, Constant):
        raise c.fail("takes a table computed in forward; fusegraph reads it as the module's parameter")
    for option, default in (("padding_idx", None), ("max_norm", None), ("scale_grad_by_freq", False),
                            ("sparse", False)):
        if a[option] != default:
            raise c.fail(f"has {option}={a[option]!r}; fusegraph embeddings have none")
    name = c.name_here()
    table = weight.tensor
    out = Embedding(table.shape[0], table.shape[1], trainable=table.requires_grad, name=name)(c.tensor(a["input"]))
    c.copy(name, {"weight": (table, weight.key)})
    return out


def _getitem(c: Converter, node, container, index):
    value = c.value(container)
    if isinstance(value, Size):
        if value.dim is None and index == 0:
            return Size(value.tensor, 0)
        return value.tensor.shape[index - 1] if isinstance(index, int) and index > 0 else value
    if isinstance(value, Recurrent):
        parts = ("seq", "h", "c") if value.flat else ("seq", "state")
        if not isinstance(index, int) or not -len(parts) <= index < len(parts):
            raise c.fail(f"picks {index!r} out of the RNN at '{value.path}'; supported: {RNN_READS}")
        return Part(value, parts[index])
    if isinstance(value, Part):
        rnn, lstm = value.rnn, value.rnn.kind == "LSTM"
        if value.part == "state" and lstm:
            return Part(rnn, ("h", "c")[index])
        last = rnn.layers * (2 if rnn.bidirectional else 1) - 1
        is_h = value.part == "h" or value.part == "state" and not lstm
        is_last_step = value.part == "seq" and isinstance(index, tuple) and len(index) in (2, 3) and \
            index[0] == slice(None) and index[1] == -1 and all(i == slice(None) for i in index[2:])
        if (is_h and index in (-1, last) or is_last_step) and not rnn.bidirectional:
            return rnn.build("last")
        if is_h and rnn.bidirectional and index in (-2, -1, last - 1, last):
            return Direction(rnn, 1 if index in (-1, last) else 0)
        raise c.fail(f"picks {index!r} out of the RNN at '{rnn.path}'; supported: {RNN_READS}")
    if isinstance(value, (tuple, list)):
        return value[index]
    raise c.fail(f"indexes a tensor with {index!r}; fusegraph supports indexing an RNN's results only")


def _layer_scale(c: Converter, weight: Constant | ViewedWeight, x: SymbolicTensor) -> SymbolicTensor:
    """A parameter times a map, per channel: torchvision ConvNeXt's layer scale (weight (C, 1, 1) * x), or
    timm's (x * gamma.reshape(1, -1, 1, 1), gamma of shape (C,))."""
    shape = weight.shape if isinstance(weight, ViewedWeight) else tuple(weight.tensor.shape)
    weight = weight.weight if isinstance(weight, ViewedWeight) else weight
    per_channel = (x.shape[0], *(1,) * (len(x.shape) - 1))
    if shape not in (per_channel, (1, *per_channel)):
        raise c.fail(f"multiplies {x.type} by the weight '{weight.key}' of shape {shape}; fusegraph multiplies a map "
                     f"by a per-channel weight ({x.shape[0]}, 1, ...) (a layer scale)")
    name = c.name_here()
    out = LayerScale(vector=weight.tensor.dim() == 1, name=name)(x)
    c.copy(name, {"weight": (weight.tensor, weight.key)})
    return out


def _sizes(operation: Callable) -> Callable:
    """Arithmetic on sizes read off a tensor's shape (x.size(1) // groups): plain ints, computed now."""
    def handler(c: Converter, node, a, b):
        values = [c.value(v) for v in (a, b)]
        if not all(isinstance(v, int) for v in values):
            raise c.fail("computes with a tensor's values; fusegraph computes only with sizes of its shape here")
        return operation(*values)
    return handler


def _add(c: Converter, node, a, b, *, alpha=1):
    if all(isinstance(c.value(v), int) for v in (a, b)):
        return c.value(a) + c.value(b)
    if not all(isinstance(c.value(v), (SymbolicTensor, Part)) for v in (a, b)):
        raise c.fail("adds a constant; fusegraph adds two tensors of the same shape (a residual)")
    if alpha != 1:
        raise c.fail(f"has alpha={alpha!r}; fusegraph adds with alpha=1")
    return Add(name=c.name_here())([c.tensor(a), c.tensor(b)])


def _mul(c: Converter, node, a, b):
    """Two maps of one shape, elementwise; or a map by per-sample channel weights of torch shape (batch,
    channels, 1, 1) (squeeze-and-excitation's gate, either side of the *); two sizes, their product."""
    if all(isinstance(c.value(v), int) for v in (a, b)):
        return c.value(a) * c.value(b)
    for noise, data in ((c.value(a), b), (c.value(b), a)):
        if isinstance(noise, Noise):
            return _dropped_samples(c, node, noise, data)
    for weight, data in ((c.value(a), b), (c.value(b), a)):
        if isinstance(weight, (Constant, ViewedWeight)) and isinstance(c.value(data), SymbolicTensor):
            return _layer_scale(c, weight, c.tensor(data))
    if not all(isinstance(c.value(v), (SymbolicTensor, Part, Pooled)) for v in (a, b)):
        raise c.fail("multiplies by a constant; fusegraph multiplies two tensors (of one shape, or a map by "
                     "per-sample channel weights)")
    x, y = c.tensor(a), c.tensor(b)
    if x.shape == y.shape:
        return Multiply(name=c.name_here())([x, y])
    for data, gate, value in ((x, y, c.value(b)), (y, x, c.value(a))):
        if len(gate.shape) == len(data.shape) and gate.shape[0] == data.shape[0] and set(gate.shape[1:]) == {1}:
            weights = value.tensor if isinstance(value, Pooled) else Flatten(name=c.layer_name("gate_weights"))(gate)
            return ChannelScale(name=c.name_here())([data, weights])
    raise c.fail(f"multiplies {x.type} by {y.type}; fusegraph multiplies tensors of one shape, or a map by "
                 "per-sample channel weights (batch, channels, 1, 1)")


def _empty(c: Converter, node, *size, **kwargs):
    return Noise(tuple(size[0]) if len(size) == 1 and isinstance(size[0], (tuple, list)) else size)


def _new_empty(c: Converter, node, x, size, **kwargs):
    return Noise(tuple(size))


def _bernoulli_(c: Converter, node, x, p=0.5, **kwargs):
    noise = c.value(x)
    if not isinstance(noise, Noise) or not isinstance(p, (int, float)):
        raise c.fail("draws random numbers; fusegraph draws them only for stochastic depth "
                     "(torch.empty(batch, 1, ...).bernoulli_(keep).div_(keep) times a tensor)")
    noise.keep = float(p)  # NOTE: in place, as torch's bernoulli_: the nodes after it read the same object
    return noise


def _div_(c: Converter, node, x, other):
    noise = c.value(x)
    if not isinstance(noise, Noise) or noise.keep is None or other != noise.keep:
        raise c.fail("divides in place; fusegraph supports it only scaling a stochastic depth mask by its keep "
                     "probability")
    noise.scaled = True
    return noise


def _dropped_samples(c: Converter, node, noise: Noise, data) -> SymbolicTensor:
    """x * mask, where mask drops whole samples: StochasticDepth(1 - keep)."""
    tensor = c.tensor(data)
    example = node.meta.get("example_value", node.meta.get("val"))
    batch = example.shape[0] if isinstance(example, torch.Tensor) else None
    first = noise.shape[0] if noise.shape else None
    per_sample = isinstance(first, Size) and first.dim == 0 or isinstance(first, int) and first == batch
    mask = noise.keep is not None and noise.scaled and per_sample and len(noise.shape) == len(tensor.shape) + 1 \
        and all(d == 1 for d in noise.shape[1:])
    why = None if mask else ("multiplies by random numbers other than a stochastic depth mask; fusegraph supports "
                             "torch.empty(batch, 1, ...).bernoulli_(keep).div_(keep) (torchvision's stochastic_depth "
                             "in mode 'row', timm's drop_path with scale_by_keep)")
    return _drop_samples(c, data, 1.0 - (noise.keep or 0.0), why)


def _cat(c: Converter, node, tensors, dim=0):
    parts = [c.value(t) for t in tensors]
    if any(isinstance(p, Direction) for p in parts):
        rank = 2
        if [getattr(p, "direction", None) for p in parts] != [0, 1] or parts[0].rnn is not parts[1].rnn \
                or dim % rank != 1:
            raise c.fail(f"concatenates single directions of an RNN's final state; supported: {RNN_READS}")
        return parts[0].rnn.build("last")
    values = [c.tensor(t) for t in tensors]
    if len(values) == 1:  # a list of one (DenseNet's first layer): the tensor itself
        return values[0]
    axis = dim % values[0].type.rank
    if axis == 0:
        raise c.fail("concatenates along the batch (dim=0); fusegraph concatenates along dim >= 1")
    return Concatenate(axis=axis, name=c.name_here())(values)


def _permute(c: Converter, node, x, *dims):
    dims = tuple(dims[0]) if len(dims) == 1 and isinstance(dims[0], (tuple, list)) else dims
    tensor = c.tensor(x)
    dims = tuple(d % tensor.type.rank for d in dims)
    if not dims or dims[0] != 0:
        raise c.fail(f"permutes to {dims}; the batch must stay first")
    return Permute(dims[1:], name=c.name_here())(tensor)


def _transpose(c: Converter, node, x, dim0, dim1):
    value = c.value(x)
    if isinstance(value, ChannelGroups):
        if {dim0 % 5, dim1 % 5} != {1, 2} or value.shuffled:
            raise c.fail(f"swaps dims {dim0}, {dim1} of a map grouped by channels; fusegraph supports swapping the "
                         "groups (1, 2) of a channel shuffle")
        return ChannelGroups(value.tensor, value.groups, shuffled=True)
    rank = c.tensor(x).type.rank
    perm = list(range(rank))
    perm[dim0 % rank], perm[dim1 % rank] = perm[dim1 % rank], perm[dim0 % rank]
    return _permute(c, node, x, tuple(perm))


def _identity(c: Converter, node, x, *args, **kwargs):
    return c.value(x) if isinstance(c.value(x), (Pooled, ChannelGroups)) else c.tensor(x)


def _chunk(c: Converter, node, x, chunks, dim=0):
    tensor = c.tensor(x)
    if dim % (tensor.type.rank) == 0:
        raise c.fail("splits the batch (dim=0); fusegraph splits along dim >= 1")
    return Split(int(chunks), axis=dim % tensor.type.rank, name=c.name_here())(tensor)


def _split(c: Converter, node, x, split_size_or_sections, dim=0):
    tensor = c.tensor(x)
    axis = dim % tensor.type.rank
    if axis == 0:
        raise c.fail("splits the batch (dim=0); fusegraph splits along dim >= 1")
    length = tensor.type.shape[axis]
    sizes = split_size_or_sections
    if isinstance(sizes, int):
        sizes = [sizes] * (length // sizes) + ([length % sizes] if length % sizes else [])
    pieces = Split(tuple(int(s) for s in sizes), axis=axis, name=c.name_here())(tensor)
    return pieces if isinstance(pieces, list) else [pieces]


def _identity_module(c: Converter, node, module, x):
    return _identity(c, node, x)


def _drop_samples(c: Converter, x, rate: float, why: str | None):
    """A residual branch dropped per sample in training (whatever mode the module was traced in: fusegraph's
    training graph drops, its inference graph does not, as for nn.Dropout)."""
    if why is not None:
        raise c.fail(why)
    if not 0.0 <= rate < 1.0:
        raise c.fail(f"drops with probability {rate}; fusegraph's StochasticDepth takes a rate in [0, 1)")
    tensor = c.tensor(x)
    return tensor if rate == 0 else StochasticDepth(rate, name=c.name_here())(tensor)


def _stochastic_depth_module(c: Converter, node, module, x):
    why = (None if module.mode == "row" else
           f"has mode={module.mode!r} (the whole batch dropped together); fusegraph drops per sample: mode='row'")
    return _drop_samples(c, x, float(module.p), why)


def _drop_path_module(c: Converter, node, module, x):
    why = (None if getattr(module, "scale_by_keep", True) or module.drop_prob == 0 else
           "has scale_by_keep=False; fusegraph's StochasticDepth scales the kept samples by 1/(1-rate)")
    return _drop_samples(c, x, float(module.drop_prob), why)


MODULES: dict[type, Callable] = {
    nn.Conv1d: _conv_module, nn.Conv2d: _conv_module, nn.Linear: _linear_module,
    nn.MaxPool1d: _pool_module("max", 1), nn.MaxPool2d: _pool_module("max", 2),
    nn.AvgPool1d: _pool_module("avg", 1), nn.AvgPool2d: _pool_module("avg", 2),
    nn.AdaptiveAvgPool1d: _adaptive_module("avg", 1), nn.AdaptiveAvgPool2d: _adaptive_module("avg", 2),
    nn.AdaptiveMaxPool1d: _adaptive_module("max", 1), nn.AdaptiveMaxPool2d: _adaptive_module("max", 2),
    nn.Flatten: _flatten_module, nn.Identity: _identity_module,
    nn.Softmax: _softmax_module("softmax"), nn.LogSoftmax: _softmax_module("log_softmax"),
    nn.Dropout: lambda c, node, module, x: _dropout(c, x, module.p),
    nn.Embedding: _embedding_module, nn.BatchNorm1d: _batch_norm_module, nn.BatchNorm2d: _batch_norm_module,
    nn.LayerNorm: _layer_norm_module,
    nn.LSTM: _recurrent_module, nn.GRU: _recurrent_module, nn.RNN: _recurrent_module,
}

# modules of packages fusegraph does not import, known by where they are defined; torch.fx keeps them
# whole (their forward branches on self.training)
NAMED_MODULES: dict[str, Callable] = {
    "torchvision.ops.stochastic_depth.StochasticDepth": _stochastic_depth_module,
    "timm.layers.drop.DropPath": _drop_path_module,
    "timm.models.layers.drop.DropPath": _drop_path_module,
}


def qualified_name(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


def module_handler(module: nn.Module) -> Callable | None:
    """The handler converting calls of `module`: by its class, else by its class's qualified name."""
    return MODULES.get(type(module)) or NAMED_MODULES.get(qualified_name(type(module)))


FUNCTIONS: dict[Callable, Callable] = {
    F.conv1d: _conv_function(1), F.conv2d: _conv_function(2), torch.conv1d: _conv_function(1),
    torch.conv2d: _conv_function(2), F.linear: _linear_function,
    F.max_pool1d: _pool_function("max", 1), F.max_pool2d: _pool_function("max", 2),
    F.avg_pool1d: _pool_function("avg", 1), F.avg_pool2d: _pool_function("avg", 2),
    F.adaptive_avg_pool1d: _adaptive_function("avg", 1), F.adaptive_avg_pool2d: _adaptive_function("avg", 2),
    F.adaptive_max_pool1d: _adaptive_function("max", 1), F.adaptive_max_pool2d: _adaptive_function("max", 2),
    torch.mean: _mean, torch.flatten: _flatten_function, torch.reshape: _view,
    F.softmax: _softmax("softmax"), torch.softmax: _softmax("softmax"),
    F.log_softmax: _softmax("log_softmax"), torch.log_softmax: _softmax("log_softmax"),
    F.dropout: _dropout_function, F.batch_norm: _batch_norm_function, F.layer_norm: _layer_norm_function,
    operator.add: _add, torch.add: _add, operator.iadd: _add,
    operator.mul: _mul, torch.mul: _mul, operator.imul: _mul,
    operator.floordiv: _sizes(operator.floordiv), operator.sub: _sizes(operator.sub),
    **{compare: _sizes(compare) for compare in (operator.eq, operator.ne, operator.lt, operator.le, operator.gt,
                                                operator.ge)},
    torch._assert: _assert,
    torch.cat: _cat, torch.concat: _cat, torch.chunk: _chunk, torch.split: _split, torch.permute: _permute,
    torch.transpose: _transpose, torch.empty: _empty,
    operator.getitem: _getitem, getattr: _getattr, torch.zeros: _zeros, F.embedding: _embedding_function,
    torch.lstm: _recurrent_function("LSTM"), torch.gru: _recurrent_function("GRU"),
    torch.rnn_tanh: _recurrent_function("RNN"),
}

METHODS: dict[str, Callable] = {
    "view": _view, "reshape": _view, "flatten": _flatten_function, "size": _size, "mean": _mean,
    "softmax": _softmax("softmax"), "log_softmax": _softmax("log_softmax"), "add": _add, "mul": _mul,
    "permute": _permute, "transpose": _transpose, "contiguous": _identity, "chunk": _chunk, "split": _split,
    "new_empty": _new_empty, "bernoulli_": _bernoulli_, "div_": _div_,
}

_aten = torch.ops.aten
# torch.export's ATen-level graphs (its training IR): the same handlers, where the signature is torch's
FUNCTIONS.update({
    _aten.conv1d.default: _conv_function(1), _aten.conv2d.default: _conv_function(2),
    _aten.conv1d.padding: _conv_function(1), _aten.conv2d.padding: _conv_function(2),
    _aten.linear.default: _linear_function, _aten.max_pool1d.default: _pool_function("max", 1),
    _aten.max_pool2d.default: _pool_function("max", 2), _aten.avg_pool1d.default: _pool_function("avg", 1),
    _aten.avg_pool2d.default: _pool_function("avg", 2), _aten.adaptive_avg_pool1d.default: _adaptive_function("avg", 1),
    _aten.adaptive_avg_pool2d.default: _adaptive_function("avg", 2), _aten.mean.dim: _mean,
    _aten.flatten.using_ints: _flatten_function, _aten.view.default: _view, _aten.reshape.default: _view,
    _aten.sym_size.int: _size, _aten.softmax.int: _softmax("softmax"),
    _aten.log_softmax.int: _softmax("log_softmax"), _aten.dropout.default: _dropout_function,
    _aten.embedding.default: _aten_embedding, _aten.batch_norm.default: _aten_batch_norm,
    _aten.layer_norm.default: _layer_norm_function,
    _aten.add.Tensor: _add, _aten.add_.Tensor: _aten_add_, _aten.mul.Tensor: _mul, _aten.cat.default: _cat,
    _aten.permute.default: _permute,
    _aten.transpose.int: _transpose, _aten.contiguous.default: _identity, _aten.clone.default: _identity,
    _aten.split.Tensor: _split, _aten.split_with_sizes.default: _split, _aten.chunk.default: _chunk, _aten.zeros.default: _zeros,
    _aten.lstm.input: _recurrent_function("LSTM"), _aten.gru.input: _recurrent_function("GRU"),
    _aten.rnn_tanh.input: _recurrent_function("RNN"), _aten.slice.Tensor: _aten_slice,
    _aten.select.int: lambda c, node, x, dim, index: _getitem(c, node, x, index if dim == 0 else
                                                              (slice(None),) * dim + (index,)),
})

# every activation, from the PyTorch spellings its op declares (ir/ops/pointwise.py: activation())
ACTIVATIONS = [op for op in OPS.values() if op.torch is not None]
MODULES.update({cls: _activation_module(op) for op in ACTIVATIONS for cls in op.torch.modules})
FUNCTIONS.update({fn: _activation_call(op) for op in ACTIVATIONS for fn in op.torch.functions})
METHODS.update({method: _activation_call(op) for op in ACTIVATIONS for method in op.torch.methods})
FUNCTIONS.update({fn: _in_place(_activation_call(op)) for op in ACTIVATIONS for fn in op.torch.in_place_functions})
METHODS.update({method: _in_place(_activation_call(op)) for op in ACTIVATIONS for method in op.torch.in_place_methods})

SUPPORTED_MODULES = ", ".join(sorted([cls.__name__ for cls in MODULES] + [*NAMED_MODULES]))
SUPPORTED_FUNCTIONS = ("F.conv1d/conv2d/linear with parameter weights, F.max_pool*/avg_pool*/adaptive_*_pool*, "
                       f"activations ({', '.join(op.name for op in ACTIVATIONS)}, softmax, log_softmax) as "
                       "functions and methods, F.dropout, torch.flatten / .view / .reshape to (batch, -1), mean "
                       "over the spatial axes, + / torch.add of two tensors, torch.cat, .permute / .transpose "
                       "keeping the batch first, .size() / .shape, and indexing an RNN's results")
