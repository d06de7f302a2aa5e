"""A Model's definition as data: its layers (class and the arguments they were built with), the calls
wiring them, its inputs and outputs. Plain JSON values only, so a saved model is rebuilt by calling
the same layers again, never by unpickling code; the rebuilt graph must print exactly as the saved one.

Layer classes are looked up by name among fusegraph's own (`fusegraph.nn`); a model with layers of
its own needs them passed in (`fg.load(path, custom_layers={"MyLayer": MyLayer})`), as Keras asks."""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from typing import Any

from ..ir import GraphError
from .layer import Layer

VERSION = 1


def _encode(value: Any, where: str) -> Any:
    """A layer argument as JSON: tuples tagged (they are not lists to the layers), anything else refused."""
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return value
    if isinstance(value, tuple):
        return {"tuple": [_encode(v, where) for v in value]}
    if isinstance(value, list):
        return [_encode(v, where) for v in value]
    if isinstance(value, Mapping) and all(isinstance(k, str) for k in value):
        return {"dict": {k: _encode(v, where) for k, v in value.items()}}
    if hasattr(value, "item") and getattr(value, "ndim", None) == 0:  # numpy / torch scalars
        return _encode(value.item(), where)
    raise GraphError(f"{where}: an argument of type {type(value).__name__} ({value!r}) cannot be saved as data; "
                     "build the layer from numbers, strings, booleans, tuples and lists")


def _decode(value: Any) -> Any:
    if isinstance(value, list):
        return [_decode(v) for v in value]
    if isinstance(value, dict):
        if set(value) == {"tuple"}:
            return tuple(_decode(v) for v in value["tuple"])
        if set(value) == {"dict"}:
            return {k: _decode(v) for k, v in value["dict"].items()}
        raise GraphError(f"a saved layer argument has an unknown form: {sorted(value)}")
    return value


def layer_arguments(layer: Layer) -> dict[str, Any]:
    """The arguments `layer` was constructed with, by parameter name, defaults filled in."""
    args, kwargs = getattr(layer, "_init_args", ((), {}))
    signature = inspect.signature(type(layer).__init__)
    bound = signature.bind(layer, *args, **kwargs)
    bound.apply_defaults()
    arguments = dict(bound.arguments)
    arguments.pop(next(iter(signature.parameters)))  # self
    for name, parameter in signature.parameters.items():
        if parameter.kind is inspect.Parameter.VAR_KEYWORD:
            arguments.update(arguments.pop(name, {}))
        elif parameter.kind is inspect.Parameter.VAR_POSITIONAL and arguments.get(name):
            raise GraphError(f"{layer.describe()}: its constructor takes *{name}, which a saved model cannot name; "
                             "give the layer keyword parameters to be saved")
    if "name" in signature.parameters:
        arguments["name"] = layer.name  # the name the model gave it
    return arguments


def definition(model) -> dict[str, Any]:
    """`model` as plain data (see the module docstring)."""
    from .model import InputLayer

    index = {id(call): i for i, call in enumerate(model._calls)}
    calls, layers = [], {}
    for call in model._calls:
        layer = call.layer
        where = layer.describe()
        if isinstance(layer, InputLayer):
            (out,) = call.outputs
            calls.append({"input": {"name": layer.name, "shape": list(out.shape), "dtype": out.dtype}})
            continue
        if layer.name not in layers:
            cls = type(layer)
            layers[layer.name] = {"class": cls.__name__, "module": cls.__module__, "trainable": layer.trainable,
                                  "arguments": {k: _encode(v, where) for k, v in layer_arguments(layer).items()}}
        calls.append({"layer": layer.name,
                      "inputs": [[index[id(t.call)], t.call.outputs.index(t)] for t in call.inputs]})
    refer = lambda t: [index[id(t.call)], t.call.outputs.index(t)]  # noqa: E731
    return {"version": VERSION, "name": model.name, "layers": layers, "calls": calls,
            "inputs": [refer(t) for t in model._inputs], "outputs": [refer(t) for t in model._outputs],
            "single_output": model._single_output, "torch_names": dict(getattr(model, "torch_names", {})),
            "tied": dict(model.tied), "frozen": list(model.frozen),
            "graph_sha256": model.graph.digest()}


def rebuilt(data: Mapping[str, Any], params: Mapping[str, Any]):
    """A model from its definition and weights: what pickling and deep-copying a Model come down to."""
    model = from_definition(data)
    model.load_params(params)
    return model


def _layer_classes(custom: Mapping[str, type] | None) -> dict[str, type]:
    from .. import nn

    classes = {name: value for name, value in vars(nn).items()
               if inspect.isclass(value) and issubclass(value, Layer)}
    for name, value in (custom or {}).items():
        if not (inspect.isclass(value) and issubclass(value, Layer)):
            raise GraphError(f"custom_layers['{name}'] must be a subclass of fg.Layer, got {value!r}")
        classes[name] = value
    return classes


def from_definition(data: Mapping[str, Any], custom_layers: Mapping[str, type] | None = None):
    """The Model `definition` describes, rebuilt by calling its layers; its graph checked against the saved one."""
    from .model import Input, Model

    if not isinstance(data, Mapping) or data.get("version") != VERSION:
        found = data.get("version") if isinstance(data, Mapping) else type(data).__name__
        raise GraphError(f"a model definition of version {found!r}; this fusegraph reads version {VERSION}")
    classes = _layer_classes(custom_layers)
    layers: dict[str, Layer] = {}
    for name, entry in data["layers"].items():
        cls = classes.get(entry["class"])
        if cls is None:
            raise GraphError(f"layer '{name}' is a {entry['module']}.{entry['class']}, which is not one of fusegraph's "
                             f"layers; pass it: fg.load(path, custom_layers={{'{entry['class']}': {entry['class']}}})")
        arguments = {k: _decode(v) for k, v in entry["arguments"].items()}
        try:
            layer = cls(**arguments)
        except TypeError as error:
            raise GraphError(f"layer '{name}' ({entry['class']}) cannot be rebuilt from its saved arguments "
                             f"{arguments}: {error}") from None
        layer.name = name
        layer.trainable = entry["trainable"]
        layers[name] = layer
    outputs: list[tuple] = []
    for call in data["calls"]:
        if "input" in call:
            spec = call["input"]
            outputs.append((Input(tuple(spec["shape"]), dtype=spec["dtype"], name=spec["name"]),))
            continue
        inputs = [outputs[c][i] for c, i in call["inputs"]]
        result = layers[call["layer"]](inputs if len(inputs) != 1 else inputs[0])
        outputs.append(tuple(result) if isinstance(result, list) else (result,))
    model_outputs = [outputs[c][i] for c, i in data["outputs"]]
    model = Model([outputs[c][i] for c, i in data["inputs"]],
                  model_outputs[0] if data["single_output"] else model_outputs, name=data["name"],
                  tied=data.get("tied") or {}, frozen=data.get("frozen") or ())
    if data.get("torch_names"):
        model.torch_names = dict(data["torch_names"])
    if model.graph.digest() != data["graph_sha256"]:
        raise GraphError(f"model '{data['name']}' rebuilt from its saved definition differs from the saved graph "
                         "(saved by another fusegraph version, or a custom layer that changed)")
    return model
