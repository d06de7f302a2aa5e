"""Input, the functional Model and Sequential: trace layer calls into one IR graph."""

from __future__ import annotations

import warnings
import weakref
from collections.abc import Mapping, Sequence
from math import prod

import torch

from ..ir import BATCH, DTYPES, Graph, GraphBuilder, GraphError, Interpreter, TensorType, as_int, check_feeds, verify
from .init import initialise
from .layer import Layer, default_name
from .tensor import Call, SymbolicTensor
from .torch_module import TorchModel


class InputLayer(Layer):
    """Where a model's data comes in; emitted as the graph's `input` nodes."""


def Input(shape: int | Sequence[int], dtype: str = "float32", name: str | None = None) -> SymbolicTensor:  # noqa: N802
    """A model input of the given shape without the batch dimension (NCHW / NCL / (time, features))."""
    layer = InputLayer(name)
    try:
        dims = (as_int(shape),) if as_int(shape) is not None else tuple(as_int(d) for d in shape)
    except TypeError:
        dims = ()
    if not isinstance(dtype, str) or dtype not in DTYPES:
        raise GraphError(f"Input: dtype {dtype!r} is not supported; use one of {', '.join(DTYPES)}")
    if not dims or not all(d is not None and d > 0 for d in dims):
        raise GraphError(f"Input: shape must be positive integers without the batch dimension, got {shape!r}")
    call = Call(layer, ())
    call.outputs = (SymbolicTensor(TensorType((BATCH, *dims), dtype), call),)
    return call.outputs[0]


def _as_list(x, what: str) -> list[SymbolicTensor]:
    items = list(x) if isinstance(x, (list, tuple)) else [x]
    for item in items:
        if not isinstance(item, SymbolicTensor):
            raise GraphError(f"Model {what} must be outputs of fg.Input or of layers, got {type(item).__name__}")
    return items


def _warn_channels_read_as_time(calls: list[Call]) -> None:
    """A Conv1D / 1-D pool outputs (batch, channels, length) and an RNN reads (batch, time, features): fed
    straight in (through activations or dropout at most), the RNN would step over channels."""
    from .conv import Conv1D
    from .core import Activation, Dropout
    from .pool import _Pool
    from .recurrent import _Recurrent

    for call in calls:
        if not isinstance(call.layer, _Recurrent):
            continue
        source = call.inputs[0].call
        while isinstance(source.layer, (Activation, Dropout)):
            source = source.inputs[0].call
        if isinstance(source.layer, Conv1D) or (isinstance(source.layer, _Pool) and source.layer.ndim == 1):
            warnings.warn(f"{source.layer.describe()} outputs (batch, channels, length) but {call.layer.describe()} "
                          "reads (batch, time, features): it would step over the channels; insert "
                          "fg.Permute((2, 1)) between them", UserWarning, stacklevel=4)


def _trace(outputs: list[SymbolicTensor]) -> list[Call]:
    """Every call the outputs depend on, each after the calls feeding it."""
    order: list[Call] = []
    seen: set[int] = set()

    def visit(call: Call) -> None:
        if id(call) in seen:
            return
        seen.add(id(call))
        for t in call.inputs:
            visit(t.call)
        order.append(call)

    for t in outputs:
        visit(t.call)
    return order


def _assign_names(layers: list[Layer]) -> None:
    taken: dict[str, Layer] = {}
    for layer in layers:
        if layer.name is not None:
            if layer.name in taken and taken[layer.name] is not layer:
                raise GraphError(f"two layers are named '{layer.name}'; layer names must be unique in a model")
            taken[layer.name] = layer
    for layer in layers:
        if layer.name is None:
            base = "input" if isinstance(layer, InputLayer) else default_name(type(layer))
            name, i = base, 0
            while name in taken:
                i += 1
                name = f"{base}_{i}"
            layer.name = name
            taken[name] = layer


class Model:
    """A model from its inputs and outputs (Keras' functional API); holds the IR graph and parameters."""

    def __init__(self, inputs: SymbolicTensor | Sequence[SymbolicTensor],
                 outputs: SymbolicTensor | Sequence[SymbolicTensor], name: str = "model", *,
                 tied: Mapping[str, str] | None = None, frozen: Sequence[str] = ()) -> None:
        """`tied`: parameter -> the parameter it is ({"decoder.weight": "embed.weight"}: one weight, its
        gradient the sum of both uses); `frozen`: parameters training leaves as they are (as a layer's
        trainable=False does for all of its own)."""
        self.name = name
        self.tied = _resolved_ties(tied)
        if isinstance(frozen, str) or not all(isinstance(name, str) for name in frozen):
            raise GraphError(f"frozen must be a list of parameter names, got {frozen!r}")
        self.frozen = tuple(dict.fromkeys(frozen))
        self._inputs = _as_list(inputs, "inputs")
        self._outputs = _as_list(outputs, "outputs")
        self._single_output = not isinstance(outputs, (list, tuple))
        self._calls = _trace(self._outputs)
        input_calls = [t.call for t in self._inputs]
        for t in self._inputs:
            if not isinstance(t.call.layer, InputLayer):
                raise GraphError(f"Model inputs must come from fg.Input, got the output of {t.call.layer.describe()}")
        for call in self._calls:
            if isinstance(call.layer, InputLayer) and call not in input_calls:
                raise GraphError(f"the outputs depend on an fg.Input of shape {call.outputs[0].shape} "
                                 "that is not among the model's inputs; pass it in inputs=[...]")
        self.layers: list[Layer] = list(dict.fromkeys(c.layer for c in self._calls
                                                      if not isinstance(c.layer, InputLayer)))
        _assign_names([c.layer for c in input_calls] + self.layers)
        _warn_channels_read_as_time(self._calls)
        self.graph: Graph = self._build()
        self._trainer: weakref.ref | None = None
        self._compiled: weakref.WeakSet = weakref.WeakSet()  # compiled models holding copies of the weights
        self.params: dict[str, torch.Tensor] = {}
        self.init(0)

    def _build(self, input_types: Sequence[TensorType] | None = None) -> Graph:
        b = GraphBuilder(self.name, tied=self.tied, frozen=self.frozen)
        env: dict[int, object] = {}
        for t, type_ in zip(self._inputs, input_types or [t.type for t in self._inputs]):
            env[id(t)] = b.input(t.call.layer.name, type_, layer=t.call.layer.name)
        for call in self._calls:
            if isinstance(call.layer, InputLayer):
                continue
            values = call.layer.emit(b, [env[id(t)] for t in call.inputs], call.layer.name)
            env.update(zip((id(t) for t in call.outputs), values))
        graph = verify(b.build([env[id(t)] for t in self._outputs]))  # type: ignore[misc]
        params = {n.name: n for n in graph.param_nodes}
        for name in (*self.tied, *self.tied.values(), *self.frozen):
            if name not in b.asked:
                raise GraphError(f"Model {self.name}: no layer has a parameter {name!r} (tied= and frozen= name "
                                 f"parameters as model.params does: {', '.join(params)})")
        state = next((name for name in (*self.tied, *self.tied.values()) if params.get(self.tied.get(name, name))
                      is not None and params[self.tied.get(name, name)].attrs.get("state")), None)
        if state is not None:
            raise GraphError(f"Model {self.name}: {state} is a layer's state (running statistics), which cannot be "
                             "shared; tie weights only")
        return graph

    def graph_for(self, shapes: Sequence[tuple[int, ...]]) -> Graph:
        """This model's graph for inputs of other feature shapes (a sequence of another length, an image
        of another size; the batch stays free), its layers and weights the same; a GraphError names the
        layer where those shapes cannot go (one whose weights would change shape, a Flatten into a Dense)."""
        types = [t.type.with_shape((t.type.shape[0], *shape)) for t, shape in zip(self._inputs, shapes, strict=True)]
        built = ", ".join(str(t.shape) for t in self._inputs)
        wanted = ", ".join(str(tuple(shape)) for shape in shapes)
        # NOTE: layers note what their inputs were as they emit (in_features, pads: what to_torch() builds
        # from); a graph for other shapes must leave them as the model's own shapes made them
        kept = [(layer, dict(vars(layer))) for layer in self.layers]
        try:
            graph = self._build(types)
        except GraphError as error:
            raise GraphError(f"Model {self.name}, built for inputs {built}, cannot take {wanted}: {error}") from None
        finally:
            for layer, state in kept:
                vars(layer).clear()
                vars(layer).update(state)
        own = {n.name: n.outputs[0].type for n in self.graph.param_nodes}
        for node in graph.param_nodes:
            if own.get(node.name) != node.outputs[0].type:
                raise GraphError(f"Model {self.name}, built for inputs {built}, cannot take {wanted}: the weight "
                                 f"%{node.name} would be {node.outputs[0].type} instead of {own.get(node.name)}")
        return graph

    # -- parameters --------------------------------------------------------------------------
    @property
    def params(self) -> dict[str, torch.Tensor]:
        """Name -> tensor, PyTorch layouts. While a trainer compiled from this model lives (and no weights
        were set here since), its weights: the last completed step's, or after `fit` with early
        stopping the best epoch's, also after an exception or Ctrl-C."""
        trainer = self._trainer() if self._trainer is not None else None
        if trainer is not None and trainer.weights_version != self._weights_version:
            self._params, self._weights_version = trainer.host_weights()
        return self._params

    @params.setter
    def params(self, value: dict[str, torch.Tensor]) -> None:
        self._params = value
        self._trainer = None  # weights set here win over any trainer's

    def compiled_by(self, compiled) -> None:
        """`compiled` holds these weights: load_params reaches it too (held weakly)."""
        self._compiled.add(compiled)

    def follow(self, trainer) -> None:
        """Read `params` through to `trainer` (`weights_version`, `host_weights()`), held weakly."""
        self._trainer = weakref.ref(trainer)
        self._weights_version = trainer.weights_version

    def init(self, seed: int = 0) -> dict[str, torch.Tensor]:
        """(Re)initialise every parameter, deterministically from `seed`; returns `self.params`."""
        self.params = initialise(self.graph, seed)
        return self.params

    def load_params(self, params: Mapping[str, torch.Tensor]) -> None:
        """Copy tensors in by name; names, shapes and dtypes must match exactly. The weights go to every
        compiled model and trainer made from this model too, and `params` goes on following a trainer."""
        if not isinstance(params, Mapping):
            raise GraphError(f"load_params takes a dict name -> tensor, got {type(params).__name__}")
        expected = {node.name: node.attrs["type"] for node in self.graph.param_nodes}
        missing = [n for n in expected if n not in params]
        extra = [n for n in params if n not in expected]
        if missing or extra:
            raise GraphError(f"load_params: missing {missing}, unexpected {extra}; expected names {list(expected)}")
        for name, t in expected.items():
            given = params[name]
            if not isinstance(given, torch.Tensor):
                raise GraphError(f"load_params: {name} must be a torch.Tensor, got {type(given).__name__}")
            if tuple(given.shape) != t.shape:
                raise GraphError(f"load_params: {name} must have shape {t.shape}, got {tuple(given.shape)}")
            if str(given.dtype).removeprefix("torch.") != t.dtype:
                raise GraphError(f"load_params: {name} must be {t.dtype}, got {given.dtype}")
        loaded = {name: params[name].detach().clone() for name in expected}
        for compiled in list(self._compiled):
            compiled.set_weights(loaded)
        trainer = self._trainer() if self._trainer is not None else None
        if trainer is None:
            self.params = loaded
        else:  # NOTE: still the trainer's model: the next steps move these weights, and params shows them
            self._params, self._weights_version = loaded, trainer.weights_version

    def __reduce__(self):
        # NOTE: copied and pickled as its definition and weights, rebuilt by calling the layers again: the
        # copy is a model of its own (independent weights), never a shared graph
        from .definition import definition, rebuilt

        return (rebuilt, (definition(self), {name: t.detach().clone() for name, t in self.params.items()}))

    def save(self, path) -> None:
        """Writes the definition (as data) and the weights (running statistics included) to `path`;
        `fg.load(path)` gives the Model back. Atomic: a crash mid-write keeps the file there was."""
        from ..saving import as_tensors, write
        from .definition import definition

        write(path, "model", {"definition": definition(self)}, as_tensors(self.params))

    def count_params(self, trainable_only: bool = False) -> int:
        """Parameters as torch counts them: frozen ones included (unless trainable_only), state such as a
        batch norm's running statistics (torch's buffers) not."""
        return sum(prod(n.attrs["type"].shape) for n in self.graph.param_nodes
                   if not n.attrs.get("state") and (n.attrs["trainable"] or not trainable_only))

    def layer_params(self, layer: Layer) -> int:
        return sum(prod(n.attrs["type"].shape) for n in self.graph.param_nodes
                   if n.layer == layer.name and not n.attrs.get("state"))

    # -- shapes and reports -------------------------------------------------------------------
    @property
    def output_shape(self) -> tuple[int, ...] | list[tuple[int, ...]]:
        shapes = [t.shape for t in self._outputs]
        return shapes[0] if self._single_output else shapes

    @property
    def input_shape(self) -> tuple[int, ...] | list[tuple[int, ...]]:
        shapes = [t.shape for t in self._inputs]
        return shapes[0] if len(shapes) == 1 else shapes

    def summary(self, print_fn=print) -> str:
        """A Keras-style table: layer (type), output shape, parameter count; then the totals."""
        rows = [("Layer (type)", "Output shape", "Param #")]
        counted: set[int] = set()
        for call in self._calls:
            shapes = ", ".join("(None, " + ", ".join(map(str, t.shape)) + ")" for t in call.outputs)
            count = 0 if id(call.layer) in counted else self.layer_params(call.layer)
            counted.add(id(call.layer))
            rows.append((f"{call.layer.name} ({type(call.layer).__name__})", shapes, f"{count:,}"))
        widths = [max(len(r[i]) for r in rows) for i in range(3)]
        rule = "-" * (sum(widths) + 6)
        lines = [f'Model: "{self.name}"', rule]
        for i, row in enumerate(rows):
            lines.append(f"{row[0]:<{widths[0]}}   {row[1]:<{widths[1]}}   {row[2]:>{widths[2]}}")
            if i == 0:
                lines.append(rule)
        total, trainable = self.count_params(), self.count_params(trainable_only=True)
        lines += [rule, f"Total params: {total:,}", f"Trainable params: {trainable:,}",
                  f"Non-trainable params: {total - trainable:,}"]
        text = "\n".join(lines)
        if print_fn is not None:
            print_fn(text)
        return text

    # -- running -------------------------------------------------------------------------------
    def reference(self, x: torch.Tensor | Sequence[torch.Tensor], *, training: bool = False,
                  seed: int = 0) -> torch.Tensor | list[torch.Tensor]:
        """Run the IR interpreter (each op's torch reference) on `x`, batch first."""
        feeds = check_feeds(self.graph, x)
        with torch.no_grad():
            outputs = Interpreter(self.graph, self.params, training=training, seed=seed).run(feeds)
        return outputs[0] if self._single_output else outputs

    def to_torch(self) -> TorchModel:
        """A torch.nn.Module of real torch.nn layers carrying copies of this model's parameters (eval mode)."""
        slot = {id(t): i for i, t in enumerate(t for c in self._calls for t in c.outputs)}
        program = [(c.layer.name, tuple(slot[id(t)] for t in c.inputs), tuple(slot[id(t)] for t in c.outputs))
                   for c in self._calls if not isinstance(c.layer, InputLayer)]
        params = {**self.params, **{alias: self.params[target] for alias, target in self.tied.items()}}
        modules = {layer.name: layer.torch_module(params) for layer in self.layers}
        torch_model = TorchModel(modules, program, tuple(slot[id(t)] for t in self._inputs),
                                 tuple(slot[id(t)] for t in self._outputs)).eval()
        torch_model.tie(self.tied)
        for parameter in (torch_model.fusegraph_parameters()[name] for name in self.frozen):
            parameter.requires_grad_(False)
        return torch_model

    def features(self, layer_names: Sequence[str]) -> Model:
        """A model with the same inputs whose outputs are the named layers' outputs, sharing these weights
        (e.g. the feature maps after each conv block)."""
        outputs = []
        for name in layer_names:
            call = next((c for c in self._calls if c.layer.name == name), None)
            if call is None:
                raise GraphError(f"no layer named '{name}' in {self.name}; layers: {[layer.name for layer in self.layers]}")
            outputs.append(call.outputs[0])
        sub = Model(self._inputs, outputs, name=f"{self.name}_features")
        sub.load_params({name: self.params[name] for name in sub.params})
        return sub

    # -- transfer learning -------------------------------------------------------------------
    def freeze(self, *layer_names: str) -> None:
        """Training leaves these layers' parameters as they are (Keras's `layer.trainable = False`); compile
        again to train so (a trainer compiled before keeps what it was compiled with). The weights stay."""
        self._set_frozen((*self.frozen, *self._parameters_of(layer_names)))

    def unfreeze(self, *layer_names: str) -> None:
        """Training moves these layers' parameters again (those the layer itself keeps fixed, such as an
        Embedding built with trainable=False or batch-norm statistics, stay so); compile again to train."""
        thawed = set(self._parameters_of(layer_names))
        self._set_frozen(tuple(name for name in self.frozen if name not in thawed))

    def _parameters_of(self, layer_names: Sequence[str]) -> list[str]:
        names = [layer.name for layer in self.layers]
        found = []
        for name in layer_names:
            if name not in names:
                raise GraphError(f"no layer named '{name}' in {self.name}; layers: {names}")
            found += [n.name for n in self.graph.param_nodes if n.name.startswith(f"{name}.")
                      and not n.attrs.get("state")]
        return found

    def _set_frozen(self, frozen: Sequence[str]) -> None:
        weights = {name: t.detach().clone() for name, t in self.params.items()}
        self.frozen = tuple(dict.fromkeys(frozen))
        self.graph = self._build()
        self.params = weights

    def replace_head(self, after: str, head, name: str | None = None, seed: int = 0) -> Model:
        """A new model: this one's layers up to and including the layer named `after`, with their weights
        (copies), then `head` (a layer, a list of layers applied in turn, or a function of the symbolic
        tensor) initialised from `seed`; this model's frozen parameters stay frozen there. E.g. a new
        classifier on a trained feature extractor: `model.replace_head("flatten", fg.Dense(5))`."""
        call = next((c for c in self._calls if c.layer.name == after), None)
        if call is None:
            raise GraphError(f"no layer named '{after}' in {self.name}; layers: {[layer.name for layer in self.layers]}")
        x = call.outputs[0]
        for step in head if isinstance(head, (list, tuple)) else [head]:
            if not callable(step):
                raise GraphError(f"replace_head: the head must be layers or a function of a tensor, got {step!r}")
            x = step(x)
        model = Model(self._inputs, x, name=name or f"{self.name}_tuned")
        model.init(seed)
        kept = {c.layer.name for c in _trace([call.outputs[0]])}
        model.load_params({**model.params, **{k: v for k, v in self.params.items() if k.split(".")[0] in kept}})
        frozen = [n for n in self.frozen if n in model.params]
        if frozen:
            model._set_frozen(frozen)
        return model

    def __repr__(self) -> str:
        return f"<fusegraph Model '{self.name}': {len(self.layers)} layers, {self.count_params():,} params>"


class Sequential(Model):
    """A stack of layers, each fed the previous one's output: `Sequential([fg.Input(...), layer, ...])`."""

    def __init__(self, layers: Sequence[SymbolicTensor | Layer], name: str = "sequential") -> None:
        items = list(layers)
        if not items or not isinstance(items[0], SymbolicTensor):
            raise GraphError("Sequential needs fg.Input(shape) as its first item, then layers")
        x = items[0]
        for layer in items[1:]:
            if not isinstance(layer, Layer):
                raise GraphError(f"Sequential items after the Input must be layers, got {type(layer).__name__}")
            out = layer(x)
            if isinstance(out, list):
                raise GraphError(f"{layer.describe()} has several outputs and cannot be used in Sequential")
            x = out
        super().__init__(items[0], x, name=name)


def _resolved_ties(tied: Mapping[str, str] | None) -> dict[str, str]:
    """Each tied parameter -> the one it finally is (a -> b -> c: a -> c); a cycle or a parameter tied to
    itself is refused."""
    if tied is None:
        return {}
    if not isinstance(tied, Mapping) or not all(isinstance(k, str) and isinstance(v, str) for k, v in tied.items()):
        raise GraphError(f"tied must map parameter names to parameter names, got {tied!r}")
    resolved = {}
    for name in tied:
        seen, target = [name], tied[name]
        while target in tied:
            if target in seen:
                raise GraphError(f"tied parameters form a cycle: {' -> '.join([*seen, target])}")
            seen.append(target)
            target = tied[target]
        if target == name:
            raise GraphError(f"tied: {name} is tied to itself")
        resolved[name] = target
    return resolved
