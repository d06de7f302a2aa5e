"""`fg.from_torch(module, example_inputs)`: a PyTorch model as a fusegraph Model, its weights copied.

torch.fx traces the module (each torch.nn layer a `call_module` node; functions, tensor methods and
parameters read with `get_attr` as written), or where it cannot (control flow on shapes), torch.export
(ATen ops, mapped onto the same handlers, its batch left free); ShapeProp runs the example inputs through a copy of
it so every node knows its shape, and each node becomes a call of a fusegraph layer (fusegraph/nn).
Views that only name a shape (`.view(x.size(0), -1)`, an RNN's `out[:, -1]`) resolve to the layer
computing that value. Anything else is refused with one GraphError naming the node, the module path
and type, and what is supported. The Model's `torch_names` maps each of its parameter names to the
source module's state_dict key. The handlers and the tables of what converts are in torch_ops.py;
the values a node may become besides a tensor (a weight, a shape, a pending RNN) in values.py."""

from __future__ import annotations

import copy
import re
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from torch import fx, nn

from ..ir import GraphError
from ..nn import GRU, LSTM, ChannelShuffle, Input, Model, Reshape, SimpleRNN
from ..nn.recurrent import PARAM_NAMES
from ..nn.tensor import SymbolicTensor
from .torch_ops import (
    FUNCTIONS,
    METHODS,
    NAMED_MODULES,
    SUPPORTED_FUNCTIONS,
    SUPPORTED_MODULES,
    module_handler,
    qualified_name,
)
from .values import RNN_READS, ChannelGroups, Constant, Direction, Noise, Part, Pooled, Recurrent, Zeros


def from_torch(module: nn.Module, example_inputs: torch.Tensor | Sequence[torch.Tensor], *,
               name: str | None = None) -> Model:
    """The fusegraph Model computing what `module` computes on inputs shaped like `example_inputs`
    (batch first; the batch size is free), with `module`'s weights; `module` is not changed."""
    if not isinstance(module, nn.Module):
        raise GraphError(f"from_torch takes a torch.nn.Module, got {type(module).__name__}")
    examples = [example_inputs] if isinstance(example_inputs, torch.Tensor) else list(example_inputs)
    if not examples or not all(isinstance(t, torch.Tensor) and t.dim() >= 1 for t in examples):
        raise GraphError("from_torch: example_inputs must be a tensor or a list of tensors, batch first")
    traced, root = _trace(module, examples)
    model, _ = convert(traced, root, examples, name=name or re.sub(r"\W", "_", type(module).__name__).lower())
    return model


def convert(traced: fx.GraphModule, root: nn.Module, examples: list[torch.Tensor], *, name: str,
            weights: dict[int, str] | None = None) -> tuple[Model, Converter]:
    """The Model `traced` computes on inputs shaped like `examples`; `weights` names the placeholders (by
    position) that are weights (torch.compile's graphs take parameters and buffers as inputs):
    `model.torch_names` maps the fusegraph parameters they became to those names."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # torch.export's output spec, copied
        shaped = copy.deepcopy(traced)  # NOTE: running it moves a training batch norm's statistics: not the caller's
    with torch.no_grad():
        try:
            fx.passes.shape_prop.ShapeProp(shaped).propagate(*(t.clone() for t in examples))
        except Exception as error:  # noqa: BLE001 - the module's own failure, reported as ours
            raise GraphError(f"from_torch: {type(root).__name__} fails on the example inputs: "
                             f"{type(error).__name__}: {error}") from None
    converter = Converter(root, examples, weights or {})
    for node, shaped_node in zip(traced.graph.nodes, shaped.graph.nodes, strict=True):
        converter.visit(node, shaped_node.meta.get("tensor_meta"))
    if not converter.inputs:
        raise GraphError("from_torch: the graph reads no input but weights; fusegraph models take a batch")
    model = Model(converter.inputs, converter.outputs, name=name, tied=converter.tied, frozen=converter.frozen)
    params = dict(model.params)
    for key, tensor in converter.copies.items():
        expected = params[key]
        if tensor.shape != expected.shape or tensor.dtype != expected.dtype:
            raise GraphError(f"from_torch: {converter.torch_names[key]} is {tuple(tensor.shape)} {tensor.dtype}, "
                             f"but fusegraph's {key} is {tuple(expected.shape)} {expected.dtype}; "
                             "fusegraph models are float32 (or built in the example inputs' dtype)")
        params[key] = tensor
    model.load_params(params)
    model.torch_names = dict(converter.torch_names)
    return model, converter


def refusals(graph_module: fx.GraphModule, weights: set[str]) -> dict[str, str]:
    """Each node of `graph_module` the converter refuses, and why: the graph walked as a conversion walks
    it (a node sees what its producers became), shapes from the example values Dynamo records, the
    placeholders named in `weights` as weights. A refused node's result stands in as a fresh input, as
    eager torch would hand it to the nodes after it."""
    converter = Converter(graph_module, [], {})
    refused: dict[str, str] = {}
    masks: dict[int, list[str]] = {}  # a stochastic depth mask (Noise) -> the nodes making it, in place
    for node in graph_module.graph.nodes:
        example = node.meta.get("example_value", node.meta.get("val"))
        if node.op == "output":
            break
        if node.op == "placeholder":
            converter.env[node.name] = _stand_in(converter, node, example, weights)
            continue
        converter.node = node
        if not _handled(graph_module, node):
            refused[node.name] = "fusegraph has no conversion for it"
            converter.env[node.name] = _stand_in(converter, node, example, weights)
            continue
        try:
            converter.visit(node, example)
        except GraphError as error:
            refused[node.name] = str(error).removeprefix("from_torch: ")
            converter.env[node.name] = _stand_in(converter, node, example, weights)
        except Exception:  # noqa: BLE001 - arguments only the real tensors settle: decided when converted
            converter.env[node.name] = _stand_in(converter, node, example, weights)
        value = converter.env.get(node.name)
        if isinstance(value, Noise):
            masks.setdefault(id(value), []).append(node.name)
    # NOTE: a mask made in place (empty, bernoulli_, div_) whose reader runs eager is made eager too, in order
    for node in graph_module.graph.nodes:
        for arg in node.all_input_nodes if node.name in refused else []:
            for name in masks.get(id(converter.env.get(arg.name)), []):
                refused.setdefault(name, f"makes the random mask {node.name} reads, which runs as eager torch")
    return refused


def _handled(root: nn.Module, node: fx.Node) -> bool:
    """Whether the converter has a handler for `node` (its arguments aside)."""
    if node.op == "call_function":
        return node.target in FUNCTIONS
    if node.op == "call_method":
        return node.target in METHODS
    if node.op == "call_module":
        return module_handler(root.get_submodule(node.target)) is not None
    return node.op == "get_attr"


def _stand_in(converter: Converter, node: fx.Node, example, weights: set[str]):
    """What a node hands the nodes after it when it is not converted here: a weight, or a fresh input of its
    shape (batch first); anything else reads as no tensor, so what reads it is refused too."""
    if not isinstance(example, torch.Tensor):
        return None
    if node.name in weights:
        return Constant(torch.zeros(example.shape, dtype=example.dtype), node.name)
    if example.dim() < 2:
        return None
    return Input(tuple(example.shape[1:]), dtype=str(example.dtype).removeprefix("torch."),
                 name=converter.layer_name(node.name))


class _Tracer(fx.Tracer):
    """torch.fx's tracer, keeping whole the modules fusegraph knows by name (NAMED_MODULES)."""

    def is_leaf_module(self, m: nn.Module, module_qualified_name: str) -> bool:
        return qualified_name(type(m)) in NAMED_MODULES or super().is_leaf_module(m, module_qualified_name)


def _trace(module: nn.Module, examples: list[torch.Tensor]) -> tuple[fx.GraphModule, nn.Module]:
    """(graph, the module its get_attr nodes read): torch.fx's symbolic trace, or where it cannot trace
    (control flow on shapes, say) torch.export's, its batch left free, at ATen level."""
    try:
        return fx.GraphModule(module, _Tracer().trace(module)), module
    except Exception as fx_error:  # noqa: BLE001 - torch.fx's many failure types
        failure = f"torch.fx: {type(fx_error).__name__}: {fx_error}"
    try:
        batch = torch.export.Dim.AUTO
        with warnings.catch_warnings():  # NOTE: nn.LSTM's own _flat_weights bookkeeping, which export reports
            warnings.filterwarnings("ignore", message=".*were assigned during export", category=UserWarning)
            exported = torch.export.export(copy.deepcopy(module), tuple(t.clone() for t in examples),
                                           dynamic_shapes=tuple({0: batch} for _ in examples))
        graph_module = exported.module()
        return graph_module, graph_module
    except Exception as export_error:  # noqa: BLE001
        raise GraphError(f"from_torch: neither torch.fx nor torch.export can trace {type(module).__name__} "
                         f"({failure}; torch.export: {type(export_error).__name__}: {str(export_error)[:300]}). "
                         "Control flow that depends on tensor values cannot be traced; write the forward "
                         "without it") from None


@dataclass
class Converter:
    root: nn.Module
    examples: list[torch.Tensor]
    weights: dict[int, str]  # placeholder position -> name, for placeholders that are weights
    env: dict[str, object] = field(default_factory=dict)
    placeholders: int = 0
    modes: set[bool] = field(default_factory=set)  # the `training` flags of functional dropouts and batch norms
    inputs: list[SymbolicTensor] = field(default_factory=list)
    outputs: list[SymbolicTensor] | SymbolicTensor = field(default_factory=list)
    copies: dict[str, torch.Tensor] = field(default_factory=dict)
    torch_names: dict[str, str] = field(default_factory=dict)
    names: set[str] = field(default_factory=set)
    tied: dict[str, str] = field(default_factory=dict)  # a fusegraph parameter -> the one whose torch tensor it is
    frozen: list[str] = field(default_factory=list)  # fusegraph parameters whose torch Parameter wants no gradient
    _owners: dict[int, tuple[torch.Tensor, str]] = field(default_factory=dict)  # id(torch tensor) -> (it, ours)

    # -- walking the graph ---------------------------------------------------------------------
    def visit(self, node: fx.Node, meta) -> None:
        self.node = node
        if node.op == "placeholder":
            value = self.placeholder(node)
        elif node.op == "get_attr":
            value = Constant(_attribute(self.root, node.target), node.target)
        elif node.op == "call_module" and node.target == "_guards_fn":  # torch.export's input checks
            return
        elif node.op == "call_module":
            value = self.call_module(node)
        elif node.op in ("call_function", "call_method"):
            table = FUNCTIONS if node.op == "call_function" else METHODS
            handler = table.get(node.target)
            if handler is None:
                raise self.unsupported(f"{_callable_name(node)} is not supported", SUPPORTED_FUNCTIONS)
            value = handler(self, node, *node.args, **node.kwargs)
        else:  # output
            (result,) = node.args
            if isinstance(result, (tuple, list)) and len(result) == 1 and _single_output(self.root):
                result = result[0]  # torch.export's graphs return a tuple however the module returns
            results = result if isinstance(result, (tuple, list)) else None
            self.outputs = [self.tensor(r) for r in results] if results is not None else self.tensor(result)
            return
        if isinstance(value, SymbolicTensor) and meta is not None and hasattr(meta, "shape"):
            expected = tuple(meta.shape[1:])
            if value.shape != expected:  # NOTE: a converter bug, or a reshape that moves the batch
                raise self.fail(f"gives shape (batch, {', '.join(map(str, expected))}) in torch but "
                                f"{value.shape} here; fusegraph keeps the batch as the first axis")
        self.env[node.name] = value

    def placeholder(self, node: fx.Node) -> SymbolicTensor | Constant:
        index = self.placeholders
        self.placeholders += 1
        if index >= len(self.examples):
            raise GraphError(f"from_torch: forward takes more inputs than the {len(self.examples)} example(s) given")
        example = self.examples[index]
        if index in self.weights:
            return Constant(example, self.weights[index])
        tensor = Input(tuple(example.shape[1:]), dtype=str(example.dtype).removeprefix("torch."),
                       name=self.layer_name(node.name))
        self.inputs.append(tensor)
        return tensor

    def call_module(self, node: fx.Node):
        """Each call becomes layers of its own (a module called again: new layers, its weights tied to the
        first call's by `copy`)."""
        module = self.root.get_submodule(node.target)
        handler = module_handler(module)
        if handler is None:
            raise self.unsupported(f"module '{node.target}' ({type(module).__name__}) is not supported",
                                   SUPPORTED_MODULES)
        return handler(self, node, module, *node.args, **node.kwargs)

    # -- helpers for handlers ------------------------------------------------------------------
    def where(self) -> str:
        node = self.node
        if node.op == "call_module":
            return f"from_torch: module '{node.target}' ({type(self.root.get_submodule(node.target)).__name__})"
        return f"from_torch: {_callable_name(node)} (node {node.name})"

    def fail(self, message: str) -> GraphError:
        return GraphError(f"{self.where()} {message}")

    def unsupported(self, message: str, supported: str) -> GraphError:
        return GraphError(f"from_torch: {message} (node {self.node.name}); supported: {supported}")

    def replaces(self, arg, value) -> None:
        """An in-place op's result is what later reads of its operand see."""
        if isinstance(arg, fx.Node):
            self.env[arg.name] = value

    def value(self, arg):
        return self.env[arg.name] if isinstance(arg, fx.Node) else arg

    def tensor(self, arg) -> SymbolicTensor:
        value = self.value(arg)
        if isinstance(value, SymbolicTensor):
            return value
        if isinstance(value, Zeros):
            raise self.fail("reads torch.zeros(...) as data; fusegraph supports zeros only as an RNN's initial state")
        if isinstance(value, Constant):
            raise self.fail(f"computes with the weight '{value.key}' as data; fusegraph reads weights only as a "
                            "layer's parameters")
        if isinstance(value, Part) and value.part == "seq":
            return value.rnn.build("sequence")
        if isinstance(value, Pooled):  # read as torch has it: (batch, channels, 1, 1), a view of the average
            if value.kept is None:
                kept = Reshape((value.tensor.shape[0], *(1,) * value.spatial), name=self.layer_name("kept_size_1_axes"))
                value.kept = kept(value.tensor)
            return value.kept
        if isinstance(value, ChannelGroups):  # the grouped view read as a tensor: a reshape
            return self.grouped(value)
        if isinstance(value, (Part, Recurrent, Direction)):
            what = value.part if isinstance(value, Part) else "one direction" if isinstance(value, Direction) \
                else "result"
            path = value.path if isinstance(value, Recurrent) else value.rnn.path
            raise self.fail(f"reads the {what} of the RNN at '{path}'; supported: {RNN_READS}")
        raise self.fail(f"takes {value!r} where a tensor computed from the inputs is needed")

    def grouped(self, value: ChannelGroups) -> SymbolicTensor:
        """(batch, groups, channels // groups, ...), or with the two group axes swapped."""
        tensor, groups = value.tensor, value.groups
        channels, spatial = tensor.shape[0], tuple(tensor.shape[1:])
        if value.shuffled:
            tensor = ChannelShuffle(groups, name=self.layer_name(f"{self.node.name}_shuffled"))(tensor)
        axes = (channels // groups, groups) if value.shuffled else (groups, channels // groups)
        return Reshape((*axes, *spatial), name=self.layer_name(f"{self.node.name}_grouped"))(tensor)

    def layer_name(self, base: str) -> str:
        name = re.sub(r"\W", "_", base)
        name = f"_{name}" if not re.match(r"[A-Za-z_]", name) else name
        unique, n = name, 1
        while unique in self.names:
            unique, n = f"{name}_{n}", n + 1
        self.names.add(unique)
        return unique

    def name_here(self) -> str:
        return self.layer_name(self.node.target if self.node.op == "call_module" else self.node.name)

    def copy(self, layer: str, weights: dict[str, tuple[torch.Tensor, str]]) -> None:
        """Copies each (tensor, torch key) into the fusegraph parameter `layer.<name>`; a torch tensor met
        before (a module called again, tied weights, one Parameter in two calls) ties this parameter to
        the one it became then; a Parameter with requires_grad=False stays frozen."""
        for suffix, (tensor, key) in weights.items():
            ours = f"{layer}.{suffix}"
            self.torch_names[ours] = key
            first = self._owners.get(id(tensor))
            if first is not None:
                if suffix in _RUNNING_STATE:
                    raise self.fail(f"uses the buffer '{key}' a second time (a batch norm called twice); fusegraph "
                                    "keeps a layer's running statistics to itself: give each call its own module")
                self.tied[ours] = first[1]
                continue
            self._owners[id(tensor)] = (tensor, ours)  # NOTE: holding the tensor keeps its id unique
            self.copies[ours] = tensor.detach().clone()
            if isinstance(tensor, nn.Parameter) and not tensor.requires_grad:
                self.frozen.append(ours)

    def recurrent_layers(self, rnn: Recurrent, sequence: bool) -> SymbolicTensor:
        cls = {"LSTM": LSTM, "GRU": GRU, "RNN": SimpleRNN}[rnn.kind]
        directions = ("", "_reverse") if rnn.bidirectional else ("",)
        x, rnn.finals = rnn.x, []
        for k in range(rnn.layers):
            name = rnn.name if rnn.layers == 1 else self.layer_name(f"{rnn.name}_l{k}")
            # its final states too: another RNN may start from them (an encoder's, handed to its decoder)
            layer = cls(rnn.hidden, return_sequences=sequence or k < rnn.layers - 1, bidirectional=rnn.bidirectional,
                        return_state=True, name=name)
            x, *finals = layer(x, *(rnn.initial[k] if rnn.initial else []))
            rnn.finals.append(finals)
            self.copy(name, {f"{p}{d}": rnn.weights[f"{p}_l{k}{d}"] for p in PARAM_NAMES for d in directions})
        return x


_RUNNING_STATE = ("running_mean", "running_var", "num_batches_tracked")  # a batch norm's, which its layer updates


def _single_output(root: nn.Module) -> bool:
    """Whether an exported module's forward returns one tensor (its output spec is a leaf)."""
    spec = getattr(root, "_out_spec", None)
    return spec is not None and spec.is_leaf()


def _attribute(root: nn.Module, target: str) -> torch.Tensor:
    owner, _, name = target.rpartition(".")
    value = getattr(root.get_submodule(owner) if owner else root, name)
    if not isinstance(value, torch.Tensor):
        raise GraphError(f"from_torch: attribute '{target}' ({type(value).__name__}) is read as a value; only "
                         "parameters and buffers (a functional conv's or linear's weights) are supported")
    return value


def _callable_name(node: fx.Node) -> str:
    if node.op == "call_method":
        return f"the tensor method .{node.target}()"
    target = node.target
    module = getattr(target, "__module__", None) or ""
    short = {"torch.nn.functional": "F", "_operator": "operator", "builtins": ""}.get(module, module)
    return f"{short + '.' if short else ''}{getattr(target, '__name__', str(target))}"
