"""CompiledModel: a model's graph run as generated Triton kernels (`fg.compile(model)` makes one)."""

from __future__ import annotations

import contextlib
import functools
import threading
from collections.abc import Sequence

import torch

from ..ir import Graph, GraphError, InputError, TensorType, check_feeds
from ..ir.ops import OPS, has_trait
from ..kernels import INTERPRETER_LOCK, LaunchCounter, Target
from ..passes import CompileOptions, run_pipeline
from ..passes.autodiff import autodiff
from ..passes.explain import explain, explain_training
from ..passes.fold_batch_norms import derived_parameters, fold
from ..passes.mixed_precision import LOSS_SCALE, half_precision
from ..passes.options import DEFAULTS
from .device import select_device
from .graphs import SIGNATURES, GraphRunner
from .plan import MEMORY_FORMAT, TORCH_DTYPE, stored_as
from .program import Program


def exclusive(method):
    """Runs `method` holding the model's lock (its working buffers, captured graphs and weights are shared
    by every call) and, in Triton's interpreter, the process-wide interpreter lock."""

    @functools.wraps(method)
    def locked(self, *args, **kwargs):
        interpreter = INTERPRETER_LOCK if self.target.interpreted else contextlib.nullcontext()
        with self._lock, interpreter:
            return method(self, *args, **kwargs)

    return locked


class CompiledModel:
    """Callable on torch tensors, batch first; returns a tensor (or a list for several outputs).
    Safe to call from several threads: calls on one model run one at a time."""

    def __init__(self, model, options: CompileOptions = DEFAULTS) -> None:
        graph = getattr(model, "graph", None)
        if not isinstance(graph, Graph):
            raise GraphError(f"fg.compile takes a fusegraph Model, got {type(model).__name__}")
        self.options = options
        self.source_graph = graph
        self.model = model  # what a copy or a pickle rebuilds it from
        self.weights_version = 0  # bumped whenever the weights change: copies and folded weights follow
        self._lock = threading.RLock()
        self.device = select_device(options.device)
        if options.precision == "bfloat16" and self.device != "cuda":
            raise GraphError("precision='bf16' runs on the GPU only (Triton's interpreter has no bfloat16); "
                             "on the CPU use precision='fp16' or float32")
        self.graph, self.decisions = run_pipeline(graph, options)
        if options.loss is not None:
            half = next((n for n in graph.param_nodes if n.outputs[0].type.dtype in ("float16", "bfloat16")), None)
            if half is not None:
                raise GraphError(f"{half.where}: training keeps float32 master weights, but %{half.name} is "
                                 f"{half.outputs[0].type.dtype}; build the model with dtype='float32' and train "
                                 "it with precision='bf16' or 'fp16'")
            self.train_source = autodiff(graph, options.loss, options.label_smoothing)
            self.train_graph, self.train_decisions = run_pipeline(self.train_source, options, training=True)
        if options.cuda_graphs and self.device != "cuda":
            raise GraphError(f"cuda_graphs=True needs the GPU, but this model is compiled for {self.device}")
        # NOTE: SyncBatchNorm's collectives run between kernels, which a captured graph cannot
        self.cuda_graphs = (self.device == "cuda" and not options.sync_batch_norm if options.cuda_graphs is None
                            else options.cuda_graphs)
        self.target = Target(self.device, options.fp32_precision)
        # each weight stored as the graph reads it: a conv's channels-last weights are packed here, once
        stored = {n.name: n.outputs[0].type for n in self.graph.param_nodes}
        self.params = {name: _packed(t.detach().to(self.device), stored.get(name), t.dtype)
                       for name, t in model.params.items()}
        self.torch_names: dict[str, str] = dict(getattr(model, "torch_names", {}))  # from fg.from_torch
        self.shared_weights = False  # to_module() hands the weights to torch.optim
        self.casts: dict[str, torch.Tensor] = {}  # in mixed precision: each weight's half copy the kernels read
        self._casts_version: int | None = 0  # the weights version the copies were made from
        self.runtime_params: dict[str, torch.Tensor] = {}  # what graphs read that the model has not: the loss scale
        # GradScaler's scale and growth tracker, on the host (None without float16 training)
        self.loss_scale = options.loss_scale.init_scale if options.scales_loss else None
        self.growth_tracker = 0
        if options.scales_loss:
            self.runtime_params[LOSS_SCALE] = torch.full((), self.loss_scale, device=self.device)
        self._range_check_cache: dict[int, list] = {}
        self._shaped: dict[tuple, tuple[Graph, Graph, GraphRunner]] = {}  # other input shapes' programs
        self._shaped_training: dict[tuple, tuple[Graph, Graph, GraphRunner]] = {}  # (shapes, bound) -> training's
        self._recipes: dict[int, list] = {}
        self._graph_runners: list[GraphRunner] = []
        self.counter = LaunchCounter()
        self.program = Program(self.graph, self.target, self.counter)
        self._derived: dict[int, tuple[int, dict[str, torch.Tensor]]] = {}  # per graph: (weights version, values)
        self._forward = self._runner(lambda feeds: self.program.run(feeds, self.params_for(self.graph)))
        if options.loss is not None:
            self.train_program = Program(self.train_graph, self.target, self.counter)
            self.trainable = [n.name for n in graph.param_nodes if n.attrs.get("trainable", True)]
            self._random_kernels = [k.kernel for k in self.train_program.kernels if has_trait(k.node, "random")]
            self._gradients = self._runner(lambda feeds: self.train_program.run(feeds,
                                                                                 self.params_for(self.train_graph)))
        self._single_output = not isinstance(getattr(model, "output_shape", None), list)
        self.last_launches = 0
        if hasattr(model, "compiled_by"):
            model.compiled_by(self)

    def params_for(self, graph: Graph) -> dict[str, torch.Tensor]:
        """The weights `graph` reads, each in the dtype it reads: the model's (in mixed precision, half
        copies of them), the runtime's (the loss scale), and those derived from them (a batch norm folded
        into the layer before it, computed from the float32 weights). Copies are refreshed in place when
        the weights have changed since (a captured CUDA graph keeps reading the same tensors)."""
        if id(graph) not in self._recipes:
            self._add_casts(graph)
            self._recipes[id(graph)] = derived_parameters(graph)
        version = self.weights_version
        if self._casts_version != version:
            with torch.no_grad():
                for name, copy in self.casts.items():
                    copy.copy_(self.params[name])
            self._casts_version = version
        bound = {**self.params, **self.casts, **self.runtime_params} if self.casts or self.runtime_params else self.params
        derived = self._recipes[id(graph)]
        if not derived:
            return bound
        seen, values = self._derived.get(id(graph), (None, {}))
        if seen != version or self.shared_weights:
            stored = {n.name: n.outputs[0].type for n in graph.param_nodes}
            with torch.no_grad():
                for name, recipe in derived:
                    value = fold(recipe, self.params)
                    if name in values:
                        values[name].copy_(value)
                    else:
                        values[name] = _packed(value, stored[name])
            self._derived[id(graph)] = (version, values)
        return {**bound, **values}

    def _add_casts(self, graph: Graph) -> None:
        """A half copy of each model weight `graph` reads in another dtype than the model keeps it in."""
        for node in graph.param_nodes:
            t, master = node.outputs[0].type, self.params.get(node.name)
            if master is not None and TORCH_DTYPE[t.dtype] != master.dtype and node.name not in self.casts:
                self.casts[node.name] = _packed(master, t)

    def _runner(self, run) -> GraphRunner:
        """CUDA graph replay where asked for (every argument a program's kernels take is fixed per input
        shape: what changes between calls, like the dropout step, is read from device memory)."""
        runner = GraphRunner(run, self.counter, limit=SIGNATURES if self.cuda_graphs else 0)
        self._graph_runners.append(runner)
        return runner

    def cuda_graph_status(self) -> str:
        """How calls so far have run: "captured" (replayed as CUDA graphs), "capture failed: <reason>"
        (launched one by one instead), "off" (cuda_graphs=False or no GPU), or "not called yet"."""
        if not self.cuda_graphs:
            return "off"
        failed = next((r.failed for r in self._graph_runners if r.failed is not None), None)
        if failed is not None:
            return f"capture failed: {failed}"
        return "captured" if any(r.captured for r in self._graph_runners) else "not called yet"

    @exclusive
    def set_weights(self, params: dict[str, torch.Tensor]) -> None:
        """Copies `params` (name -> tensor, PyTorch layouts) into this model's weights, in place (captured
        CUDA graphs and to_module() parameters read the same tensors)."""
        with torch.no_grad():
            for name, tensor in params.items():
                self.params[name].copy_(tensor)
        self.weights_version += 1

    def __reduce__(self):
        from .checkpoint import reduce_compiled

        return reduce_compiled(self)

    def to_module(self) -> torch.nn.Module:
        """This model as a torch.nn.Module: forward and backward run fusegraph's kernels (through a
        torch.autograd.Function); its parameters share storage with this model's weights, for torch.optim
        in a plain PyTorch loop; state_dict() names are the source module's after fg.from_torch."""
        from .module import FusegraphModule

        return FusegraphModule(self)

    @property
    def kernels(self) -> list[str]:
        """The generated Triton source of each kernel, in launch order (scan bodies included)."""
        return [k.kernel.source.source for k in self.program.kernels]

    @property
    def kernel_names(self) -> list[str]:
        return [k.kernel.name for k in self.program.kernels]

    def explain(self, batch: int = 64) -> str:
        """What fused into each kernel, what did not and why, and the analytic bytes and launches saved;
        with a loss, the training step's launches and what the backward saves."""
        options = self.options
        if options.loss is not None:  # the training step's own forward, not the inference one again
            text = explain_training(self.train_graph, batch, self.train_decisions if options.fuse else [])
            text += "\n(calls and predict() run the inference graph: fg.compile(model).explain() reports it)"
        else:  # NOTE: unfused in the same precision, so the bytes saved are fusion's alone
            source = half_precision(self.source_graph, options.precision) if options.precision else self.source_graph
            text = explain(source, self.graph, self.decisions if options.fuse else [], batch)
        if options.precision:
            text += (f"\n(mixed precision: {options.precision} activations, weights and gradients; float32 accumulation, "
                     "losses, batch-norm statistics and master weights"
                     + (f"; loss scale {self.loss_scale:g})" if options.scales_loss else ")"))
        if not options.fuse:
            text += "\n(compiled with fuse=False)"
        if self.cuda_graphs:
            text += "\n(on CUDA each call replays these launches as one CUDA graph, captured per input shape)"
        parallel = getattr(self, "parallel", None)
        if parallel is not None:
            overlap = ("each bucket's all-reduce starting as soon as the backward kernel writing its last gradient "
                       "has run, while the backward goes on" if not (self.cuda_graphs or self.options.sync_batch_norm)
                       else "all after the backward (which runs as one captured CUDA graph, the all-reduces outside "
                       "it)" if self.cuda_graphs else "all after the backward, whose batch norms hold collectives of "
                       "their own")
            text += (f"\n(data parallel, rank {parallel.rank} of {parallel.world}: the flat gradients are averaged "
                     f"across ranks in buckets of whole parameters (25 MB or more), {overlap}; then the optimizer "
                     + ("updates this rank's slice and the slices are broadcast (ZeRO-1)" if parallel.sharded
                        else "runs identically on every rank")
                     + ("; batch norms combine every rank's statistics and gradient sums between their kernels)"
                        if self.options.sync_batch_norm else "; batch-norm statistics are rank 0's)"))
        shapes = ", ".join(str(shape) for shape in dict.fromkeys(
            (tuple(v.type.feature_shape for v in self.source_graph.inputs), *self._shaped,
             *(shapes for shapes, _ in self._shaped_training))))
        text += (f"\n(inputs of other feature shapes than {self.model_shapes} compile a program of their own on "
                 f"their first call or training step, kept: so far {shapes})")
        return text

    def memory_report(self, batch: int) -> dict[str, int]:
        plan = self.program.plan
        return {"planned_bytes": plan.peak_bytes(batch), "unplanned_bytes": plan.unplanned_bytes(batch, self.graph),
                "buffers": len(plan.slot_values)}

    def _range_checks(self, graph: Graph) -> list:
        """(node, input index, rows, what) for every input of `graph` used as an index: found once."""
        cache = self._range_check_cache
        if id(graph) not in cache:
            inputs = {v.name for v in graph.inputs}
            checks = []
            for node in _all_nodes(graph):
                index_inputs = OPS[node.op].index_inputs
                for at, rows, what in index_inputs(node) if index_inputs is not None else []:
                    if node.inputs[at].name in inputs:
                        checks.append((node, at, rows, what))
            cache[id(graph)] = checks
        return cache[id(graph)]

    def _check_device_and_ids(self, feeds: list[torch.Tensor], graph: Graph | None = None) -> list[torch.Tensor]:
        """The feeds (checked against the model's declared inputs) as `graph` reads them: its layout and,
        in mixed precision, its dtype."""
        graph = graph or self.graph
        checked = []
        for value, tensor in zip(graph.inputs, feeds):
            if tensor.device.type != self.device:
                raise InputError(f"input '{value.name}' is on {tensor.device.type} but the model was compiled for "
                                 f"{self.device}; move it with .to('{self.device}')")
            checked.append(stored_as(tensor, value.type))  # NCHW or NHWC, and float32 or half, as the graph keeps it
        names = {v.name: t for v, t in zip(graph.inputs, checked)}
        # NOTE: kernels do not bounds-check a gather (the interpreter would read wild memory), so ids are checked here
        for node, index, rows, what in self._range_checks(graph):
            ids = names[node.inputs[index].name]
            if not ids.numel():
                continue
            low, high = torch.stack(torch.aminmax(ids)).tolist()  # NOTE: one device-to-host sync, not two
            if low < 0 or high >= rows:
                raise InputError(f"{node.where}: {what} must lie in [0, {rows}), got values in [{low}, {high}]")
        return checked

    @exclusive
    def loss_and_grads(self, x: torch.Tensor | Sequence[torch.Tensor],
                       y: torch.Tensor) -> tuple[float, dict[str, torch.Tensor]]:
        """The mean loss on (x, y) and the gradient of every trainable parameter, keyed like model.params
        (frozen parameters have no entry: no kernel computes their gradient). Batch norms normalise with
        the batch's statistics, as in torch's train mode; their running statistics are left as they are
        (a training step updates them)."""
        if self.options.loss is None:
            raise GraphError("compile with loss=... to get gradients, e.g. fg.compile(model, loss='cross_entropy')")
        outputs = self._run_training(x, y, *self._training_for(x, self._gradients))
        grads = outputs[1:1 + len(self.trainable)]
        unscale = 1.0 / self.loss_scale if self.options.scales_loss else 1.0
        # NOTE: contiguous copies in the weights' dtype, like model.params: a packed (channels-last) conv weight's
        # gradient included; in mixed precision unscaled in float32, as GradScaler.unscale_ does
        return float(outputs[0]), {name: g.to(self.params[name].dtype, memory_format=torch.contiguous_format,
                                              copy=True).mul_(unscale)
                                   for name, g in zip(self.trainable, grads, strict=True)}

    def _run_training(self, x, y, source: Graph, graph: Graph, runner: GraphRunner) -> list[torch.Tensor]:
        xs = list(x) if isinstance(x, (list, tuple)) else [x]
        feeds = self._check_device_and_ids(check_feeds(source, [*xs, y]), graph)
        with torch.no_grad():
            outputs = runner(feeds)
        self.last_launches = runner.last_launches
        return outputs

    @exclusive
    def __call__(self, x: torch.Tensor | Sequence[torch.Tensor]) -> torch.Tensor | list[torch.Tensor]:
        source, graph, forward = self._shaped_for(x)
        feeds = self._check_device_and_ids(check_feeds(source, x), graph)
        self.params_for(graph)  # NOTE: a CUDA graph replay runs no Python: refresh folded weights first
        with torch.no_grad():
            outputs = forward(feeds, copy=True)
        self.last_launches = forward.last_launches
        return outputs[0] if self._single_output else outputs

    @property
    def model_shapes(self) -> tuple:
        """The feature shapes (after the batch) of the inputs the model was built for."""
        return tuple(v.type.feature_shape for v in self.source_graph.inputs)

    def _other_shapes(self, x) -> tuple | None:
        """The feature shapes of inputs `x` where they differ from the model's own and the model may be
        built for them (same ranks); None otherwise (check_feeds then says what is wrong, if anything)."""
        xs = list(x) if isinstance(x, (list, tuple)) else [x]
        own = self.model_shapes
        shapes = tuple(tuple(t.shape[1:]) if isinstance(t, torch.Tensor) else None for t in xs)
        if shapes == own or len(shapes) != len(own) or None in shapes or not hasattr(self.model, "graph_for") \
                or any(len(s) != len(o) for s, o in zip(shapes, own)):
            return None
        return shapes

    def _source_for(self, shapes: tuple, x) -> Graph:
        """The model's graph for inputs of feature shapes `shapes`, or an InputError saying why not."""
        try:
            return self.model.graph_for(shapes)
        except GraphError as error:
            try:
                check_feeds(self.source_graph, x)
            except InputError as mismatch:
                raise InputError(f"{mismatch}; inputs of other shapes get a program of their own where the "
                                 f"model can take them, but {error}") from None
            raise

    def _training_for(self, x, runner: GraphRunner,
                      bind: dict[str, torch.Tensor] | None = None) -> tuple[Graph, Graph, GraphRunner]:
        """(training source, compiled training graph, runner) for inputs shaped like `x`: the model's own
        with `runner`, or, for other feature shapes, a training program compiled for them once and kept,
        writing its gradients into `bind` as `runner` does. Its graph must be the model's own but for
        shapes (the same outputs, weights stored alike), so the flat buffers and indices serve both."""
        shapes = self._other_shapes(x)
        if shapes is None:
            return self.train_source, self.train_graph, runner
        key = (shapes, bind is not None)
        if key not in self._shaped_training:
            source = autodiff(self._source_for(shapes, x), self.options.loss, self.options.label_smoothing)
            graph, _ = run_pipeline(source, self.options, training=True)
            stored = {n.name: n.outputs[0].type.layout for n in graph.param_nodes}
            if [v.name for v in graph.outputs] != [v.name for v in self.train_graph.outputs] or \
                    stored != {n.name: n.outputs[0].type.layout for n in self.train_graph.param_nodes}:
                raise InputError(f"{self.model.name} cannot train on inputs of feature shapes {shapes}: its training "
                                 f"graph for them differs from the one for {self.model_shapes} beyond shapes")
            program = Program(graph, self.target, self.counter)
            step, first = getattr(self, "_step_number", None), getattr(self, "_first_sample", None)
            for kernel in program.kernels:
                if step is not None and has_trait(kernel.node, "random"):
                    kernel.kernel.step = step  # the step's dropout masks, as in the model's own program
                    kernel.kernel.first_sample = first
            if getattr(self, "parallel", None) is not None:  # a Trainer's, data parallel
                self._sync_batch_norms(program)
                self._send_buckets_as_written(program, graph)
            self._shaped_training[key] = (source, graph, self._runner(
                lambda feeds: program.run(feeds, self.params_for(graph), bind)))
        return self._shaped_training[key]

    def _shaped_for(self, x) -> tuple[Graph, Graph, GraphRunner]:
        """(source graph, compiled graph, runner) for inputs shaped like `x`: the model's own, or, for other
        feature shapes (another sequence length, image size), a program compiled for them once and kept."""
        shapes = self._other_shapes(x)
        if shapes is None:
            return self.source_graph, self.graph, self._forward
        if shapes not in self._shaped:
            source = self._source_for(shapes, x)
            graph, _ = run_pipeline(source, self.options)
            program = Program(graph, self.target, self.counter)
            self._shaped[shapes] = (source, graph,
                                    self._runner(lambda feeds: program.run(feeds, self.params_for(graph))))
        return self._shaped[shapes]


def _packed(tensor: torch.Tensor, stored: TensorType | None, dtype: torch.dtype | None = None) -> torch.Tensor:
    """A copy of `tensor` (never the caller's) in the layout the graph stores it in, in `dtype` (by default
    the graph's)."""
    layout = MEMORY_FORMAT[stored.layout] if stored is not None else torch.contiguous_format
    if dtype is None:
        dtype = TORCH_DTYPE[stored.dtype] if stored is not None else tensor.dtype
    return tensor.to(dtype, memory_format=layout, copy=True)


def _all_nodes(graph: Graph):
    for node in graph.nodes:
        yield node
        if node.op == "fused":
            yield from _all_nodes(node.attrs["body"])
