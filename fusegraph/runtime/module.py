"""`compiled.to_module()`: a compiled model as a torch.nn.Module whose forward runs fusegraph's forward
kernels and whose backward, through a torch.autograd.Function, runs fusegraph's generated backward
kernels. Its parameters are nn.Parameters sharing storage with the compiled model's weights, so
torch.optim, LR schedulers and gradient clipping in a plain PyTorch loop act on what the kernels
read; running statistics and frozen weights are buffers. state_dict() keys are the source module's
names when the model came from fg.from_torch, else fusegraph's.

Each mode (train: dropout draws, batch norms on the batch's statistics, running statistics updated;
eval: neither) has its own pair of programs: autodiff.vjp_graph split by passes/split_backward.py
into the forward a call runs and the backward run later with the output gradients. A call's saved
activations are its forward's outputs, fresh tensors held by its autograd node, so forwards may run
several times before their backwards."""

from __future__ import annotations

import contextlib
import threading

import torch
from torch import nn

from ..ir import GraphError, check_feeds
from ..ir.ops import has_trait
from ..kernels import INTERPRETER_LOCK
from ..passes import run_pipeline
from ..passes.autodiff import running_state, vjp_graph
from ..passes.eliminate_dead_code import eliminate_dead_code
from ..passes.fold_batch_norms import derived_parameters, fold
from ..passes.split_backward import split_backward
from .plan import TORCH_DTYPE
from .program import Program


class _Halves:
    """One mode's forward and backward programs and what connects them."""

    def __init__(self, compiled, training: bool) -> None:
        source = compiled.source_graph
        full = eliminate_dead_code(vjp_graph(source, training))
        seeds = {v.name for v in full.inputs[len(source.inputs):]}
        self.trainable = [n.name for n in source.param_nodes if n.attrs.get("trainable", True)]
        self.float_inputs = [i for i, v in enumerate(source.inputs) if v.type.is_float]
        gradients = len(self.trainable) + len(self.float_inputs)
        forward, backward, self.saved = split_backward(full, seeds, len(source.outputs), gradients)
        self.outputs = len(source.outputs)
        self.running = [name for name, _ in running_state(full)] if training else []
        self.counters = [n.attrs["counter"] for n in full.nodes
                         if n.op == "batch_norm_train" and n.attrs.get("counter")] if training else []
        self.forward_graph = run_pipeline(forward, compiled.options)[0]
        self.backward_graph = run_pipeline(backward, compiled.options)[0]
        self.forward = Program(self.forward_graph, compiled.target, compiled.counter)
        self.backward = Program(self.backward_graph, compiled.target, compiled.counter)
        self.folded = derived_parameters(self.forward_graph)
        self.random = [k.kernel for program in (self.forward, self.backward) for k in program.kernels
                       if has_trait(k.node, "random")]
        self.output_types = [v.type for v in self.forward_graph.outputs[:self.outputs]]


class Differentiable:
    """A compiled model's forward and backward programs per mode, run through torch.autograd on the weights
    each call binds (a module's own parameters, or the tensors torch.compile passes a partition)."""

    def __init__(self, compiled, what: str) -> None:
        if compiled.options.precision is not None:
            raise GraphError(f"{what} runs in float32: compile without precision= (torch.autocast does not "
                             "reach fusegraph's kernels)")
        self.compiled, self.what = compiled, what
        self._halves: dict[bool, _Halves] = {}
        self._lock = threading.RLock()
        self.step = torch.zeros((), dtype=torch.int64, device=compiled.device)
        self.calls = 0
        self._folded: list | None = None  # the inference graph's folded batch norms, found on first use

    def mode(self, training: bool) -> _Halves:
        if training not in self._halves:
            try:
                self._halves[training] = _Halves(self.compiled, training)
            except GraphError as error:
                raise GraphError(f"{self.what}: gradients in {'train' if training else 'eval'} mode: {error}; "
                                 "in eval mode run under torch.no_grad(), or differentiate in train mode") from None
            for kernel in self._halves[training].random:
                kernel.step = self.step
        return self._halves[training]

    @contextlib.contextmanager
    def locked(self):
        """This model's lock and, in Triton's interpreter, the process-wide interpreter lock."""
        interpreter = INTERPRETER_LOCK if self.compiled.target.interpreted else contextlib.nullcontext()
        with self._lock, interpreter:
            yield

    def infer(self, xs: list[torch.Tensor], tensors: dict[str, torch.Tensor]) -> list[torch.Tensor]:
        """One inference call (no gradients): the compiled model's forward kernels on the weights `tensors`,
        batch norms folded from them."""
        compiled = self.compiled
        feeds = compiled._check_device_and_ids(check_feeds(compiled.source_graph, [x.detach() for x in xs]))
        if self._folded is None:
            self._folded = derived_parameters(compiled.graph)
        with self.locked(), torch.no_grad():
            return compiled.program.run(feeds, {**tensors, **{name: fold(r, tensors) for name, r in self._folded}})

    def __call__(self, xs: list[torch.Tensor], tensors: dict[str, torch.Tensor], training: bool) -> tuple:
        """The outputs of one call on `xs` with the weights `tensors` (fusegraph names), differentiable in
        the inputs and the trainable weights."""
        halves = self.mode(training)
        return _Call.apply(self, halves, tensors, len(xs), *xs, *(tensors[name] for name in halves.trainable))


class FusegraphModule(nn.Module):
    """A compiled fusegraph model as a torch.nn.Module (see the module docstring)."""

    def __init__(self, compiled) -> None:
        super().__init__()
        self._runner = Differentiable(compiled, "to_module")
        self._compiled = compiled
        compiled.shared_weights = True  # torch.optim changes them unseen: folded weights follow on every call
        source = compiled.source_graph
        names = compiled.torch_names
        self.fusegraph_names: dict[str, str] = {}  # state_dict key -> fusegraph parameter name
        for node in source.param_nodes:
            key = names.get(node.name, node.name)
            owner, attribute = _owner(self, key)
            tensor = compiled.params[node.name]
            if node.attrs.get("state"):  # running statistics: buffers, as torch keeps them
                owner.register_buffer(attribute, tensor)
            else:  # NOTE: the same storage, not a copy; a frozen weight is a Parameter that wants no gradient
                owner.register_parameter(attribute, nn.Parameter(tensor, requires_grad=node.attrs["trainable"]))
            self.fusegraph_names[key] = node.name
        for alias, target in getattr(compiled.model, "tied", {}).items():  # tied weights: one Parameter, two names
            key = names.get(alias, alias)
            owner, attribute = _owner(self, key)
            owner.register_parameter(attribute, self.get_parameter(names.get(target, target)))
            self.fusegraph_names[key] = target

    def __reduce__(self):
        # NOTE: the compiled model is rebuilt (runtime/checkpoint.py), then this module's own state (which
        # load_state_dict or torch.optim may have moved) is put back into the new module's shared weights
        state = {key: t.detach().clone() for key, t in self.state_dict().items()}
        return (_rebuilt_module, (self._compiled, state, self.training))

    def _tensors(self) -> dict[str, torch.Tensor]:
        """Every weight by fusegraph name, as the module holds it now (load_state_dict(assign=True) or
        `param.data = ...` may have replaced one); one converted to another dtype (`.half()`, `.double()`)
        or moved to another device is refused: the kernels were compiled for the compiled model's."""
        state = dict(self.named_parameters()) | dict(self.named_buffers())
        tensors = {}
        for key, tensor in state.items():
            if key not in self.fusegraph_names:
                continue
            name = self.fusegraph_names[key]
            own = self._compiled.params[name]
            if tensor.dtype != own.dtype or tensor.device != own.device or tensor.shape != own.shape:
                raise GraphError(f"{key} is now {str(tensor.dtype).removeprefix('torch.')} {tuple(tensor.shape)} on "
                                 f"{tensor.device}, but this module's kernels were compiled for "
                                 f"{str(own.dtype).removeprefix('torch.')} {tuple(own.shape)} on {own.device}; "
                                 "compile again (fg.compile(..., precision=...) for half precision) instead of "
                                 "converting the module")
            tensors[name] = tensor
        return tensors

    def _owns_weights(self, tensors: dict[str, torch.Tensor]) -> bool:
        """Whether every weight is still the very tensor the compiled model reads (not replaced)."""
        params = self._compiled.params
        return all(t.data_ptr() == params[n].data_ptr() and t.stride() == params[n].stride() for n, t in tensors.items())

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, ...]:
        xs = list(inputs[0]) if len(inputs) == 1 and isinstance(inputs[0], (list, tuple)) else list(inputs)
        tensors = self._tensors()
        wanted = torch.is_grad_enabled() and any(t.requires_grad for t in (*xs, *tensors.values()))
        if not self.training and not wanted:  # inference: the compiled model's own kernels...
            if self._owns_weights(tensors):
                with self._runner.locked():
                    return self._compiled(xs)
            outputs = [o.clone() for o in self._runner.infer(xs, tensors)]  # ... on the weights that replaced its own
            return outputs[0] if len(outputs) == 1 else tuple(outputs)
        outputs = self._runner(xs, tensors, self.training)
        return outputs[0] if len(outputs) == 1 else outputs


class _Call(torch.autograd.Function):
    """One call: forward kernels now, backward kernels when autograd asks."""

    @staticmethod
    def forward(ctx, runner: Differentiable, halves: _Halves, tensors: dict, count: int, *args: torch.Tensor):
        compiled = runner.compiled
        xs = args[:count]
        feeds = compiled._check_device_and_ids(check_feeds(compiled.source_graph, [x.detach() for x in xs]))
        with runner.locked(), torch.no_grad():
            params = {**tensors, **{name: fold(recipe, tensors) for name, recipe in halves.folded}}
            if halves.random:
                runner.calls += 1
                runner.step.fill_(runner.calls)
            results = halves.forward.run(feeds, params)
            outputs = results[:halves.outputs]
            running = results[halves.outputs:halves.outputs + len(halves.running)]
            for name, value in zip(halves.running, running, strict=True):
                tensors[name].copy_(value)
            for name in halves.counters:
                tensors[name].add_(1)
        ctx.runner, ctx.halves, ctx.tensors, ctx.count, ctx.step = runner, halves, tensors, count, runner.calls
        ctx.saved = results[halves.outputs + len(halves.running):]  # NOTE: this call's own tensors
        ctx.output_types = [(o.shape, o.dtype) for o in outputs]
        non_float = [o for o in outputs if not o.is_floating_point()]
        if non_float:
            ctx.mark_non_differentiable(*non_float)
        return tuple(outputs)

    @staticmethod
    def backward(ctx, *grads: torch.Tensor):
        runner, halves = ctx.runner, ctx.halves
        seeds = [(g if g is not None else torch.zeros(shape, dtype=dtype, device=runner.step.device))
                 .to(TORCH_DTYPE[t.dtype]).contiguous()  # NOTE: autograd hands expanded (stride 0) gradients
                 for g, (shape, dtype), t in zip(grads, ctx.output_types, halves.output_types, strict=True)]
        with runner.locked(), torch.no_grad():
            if halves.random:
                runner.step.fill_(ctx.step)  # the masks this call's forward drew
            results = halves.backward.run([*ctx.saved, *seeds], ctx.tensors)
        param_grads = results[:len(halves.trainable)]
        input_grads = dict(zip(halves.float_inputs, results[len(halves.trainable):], strict=True))
        ctx.saved = ctx.tensors = None
        return (None, None, None, None, *(input_grads.get(i) for i in range(ctx.count)), *param_grads)


def _owner(root: nn.Module, key: str) -> tuple[nn.Module, str]:
    """The (nested, created as needed) module holding dotted `key`'s last part: state_dict() then has `key`."""
    *path, attribute = key.split(".")
    owner = root
    for part in path:
        if part not in owner._modules:
            owner.add_module(part, nn.Module())
        owner = owner._modules[part]
    return owner, attribute


def _rebuilt_module(compiled, state: dict[str, torch.Tensor], training: bool) -> FusegraphModule:
    module = compiled.to_module()
    module.load_state_dict(state)
    return module.train(training)
