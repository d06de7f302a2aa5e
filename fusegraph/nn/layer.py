"""The Layer base class: validate config, emit IR for a call, build the equivalent torch module."""

from __future__ import annotations

import re
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ..ir import GraphBuilder, GraphError, TensorType, Value, as_int
from .tensor import Call, SymbolicTensor


def positive_int(value: Any, what: str, where: str) -> int:
    """`value` as an int (numpy integers accepted); anything else, or <= 0, is a GraphError."""
    number = as_int(value)
    if number is None or number <= 0:
        raise GraphError(f"{where}: {what} must be a positive integer, got {value!r}")
    return number


def flag(value: Any, what: str, where: str) -> bool:
    """`value` as a bool: True or False (numpy bools too); a string like "no" is an error, not true."""
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    raise GraphError(f"{where}: {what} must be True or False, got {value!r}")


_PACKAGE = str(Path(__file__).resolve().parents[1]) + "/"


def user_site() -> str:
    """file:line of the innermost frame outside fusegraph: where the user's code made this happen."""
    frame = sys._getframe(1)
    while frame is not None and frame.f_code.co_filename.startswith(_PACKAGE):
        frame = frame.f_back
    return f"{frame.f_code.co_filename}:{frame.f_lineno}" if frame is not None else "an unknown place"


def default_name(cls: type) -> str:
    """Conv2D → conv2d, MaxPool2D → max_pool2d, SimpleRNN → simple_rnn, LSTM → lstm."""
    return re.sub(r"(?<=[a-z])(?=[A-Z])", "_", cls.__name__).lower()


class Layer:
    """Subclasses implement `emit` (IR for one call) and `torch_module` (the PyTorch equivalent)."""

    def __new__(cls, *args, **kwargs):
        layer = super().__new__(cls)
        layer._init_args = (args, kwargs)  # NOTE: what a saved model rebuilds it from (nn/definition.py)
        layer._created_at = user_site()
        return layer

    def __init__(self, name: str | None = None, trainable: bool = True) -> None:
        if name is not None and (not isinstance(name, str) or not re.fullmatch(r"[A-Za-z_][\w]*", name)):
            raise GraphError(f"{type(self).__name__}: name must be an identifier (letters, digits, _), got {name!r}")
        self.name = name
        self.trainable = flag(trainable, "trainable", f"{type(self).__name__}({name or ''})")
        self.input_types: tuple[TensorType, ...] | None = None

    # -- what subclasses provide -------------------------------------------------------------
    def config(self) -> dict[str, Any]:
        return {}

    def emit(self, b: GraphBuilder, inputs: Sequence[Value], name: str) -> list[Value]:
        raise NotImplementedError

    def torch_module(self, params: Mapping[str, torch.Tensor]) -> nn.Module:
        raise NotImplementedError

    # -- shared machinery ----------------------------------------------------------------------
    def describe(self) -> str:
        if self.name:
            return f"layer '{self.name}' ({type(self).__name__})"
        args = ", ".join(f"{k}={v!r}" for k, v in self.config().items())
        return f"{type(self).__name__}({args})"

    def fail(self, message: str) -> GraphError:
        return GraphError(f"{self.describe()}: {message}")

    def __call__(self, *args: SymbolicTensor | Sequence[SymbolicTensor]) -> SymbolicTensor | list[SymbolicTensor]:
        tensors = tuple(args[0]) if len(args) == 1 and isinstance(args[0], (list, tuple)) else tuple(args)
        for t in tensors:
            if not isinstance(t, SymbolicTensor):
                raise self.fail(f"call it on the output of fg.Input or of another layer, got {type(t).__name__}")
        types = tuple(t.type for t in tensors)
        if self.input_types is not None and types != self.input_types:
            raise self.fail(f"was built for inputs {[str(t) for t in self.input_types]} and cannot be reused "
                            f"on {[str(t) for t in types]}; create a new layer")
        scratch = GraphBuilder()
        values = [scratch.input(f"input{i}", t) for i, t in enumerate(types)]
        name = self.name or default_name(type(self))
        try:
            outputs = self.emit(scratch, values, name)
        except GraphError as error:
            message = str(error)
            if self.name is None:  # NOTE: not yet named by a model: "layer 'conv2d'" could be another one
                message = message.replace(f"layer '{name}'", f"an unnamed {type(self).__name__} layer", 1)
            raise GraphError(f"{message} (the layer created at {self._created_at}, called at {user_site()})") from None
        self.input_types = types
        call = Call(self, tensors)
        call.outputs = tuple(SymbolicTensor(v.type, call) for v in outputs)
        return call.outputs[0] if len(call.outputs) == 1 else list(call.outputs)

    def pipeline(self, b: GraphBuilder, x: Value, name: str, steps: list[tuple[str, list[Value], dict, str]]) -> Value:
        """Emit ops one after another, feeding each the previous result; the last is named `name`."""
        for i, (op, extra, attrs, suffix) in enumerate(steps):
            result = b.op(op, [x, *extra], name=name if i == len(steps) - 1 else f"{name}.{suffix}",
                          layer=name, **attrs)
            assert isinstance(result, Value)
            x = result
        return x

    def __repr__(self) -> str:
        return self.describe()


def copy_into(module: nn.Module, params: Mapping[str, torch.Tensor], mapping: Mapping[str, str]) -> nn.Module:
    """Copy `params[ours]` into `module`'s parameter `theirs` for each (theirs, ours)."""
    own = dict(module.named_parameters())
    with torch.no_grad():
        for theirs, ours in mapping.items():
            own[theirs].copy_(params[ours])
    module.fusegraph_names = dict(mapping)  # read by TorchModel.fusegraph_parameters()
    return module
