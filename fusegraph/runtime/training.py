"""Training: `fg.compile(model, loss=..., optimizer=...)` gives a Trainer with train_step, fit,
evaluate and predict. Trainable parameters, their gradients and the optimizer's state each live in
one flat buffer, so the backward writes every gradient in place and one kernel launch updates all
parameters; frozen parameters live outside it and never change."""

from __future__ import annotations

import math
import numbers
import warnings
from math import prod

import torch

from ..ir import GraphError, InputError, TensorType
from ..kernels import load_kernel
from ..kernels import optim as optim_kernels
from ..passes import CompileOptions, run_pipeline
from ..passes.autodiff import batch_counters, loss_graph, running_state
from ..passes.mixed_precision import LOSS_SCALE
from . import checkpoint
from .compiled import CompiledModel, exclusive
from .distributed import DataParallel
from .loops import Loops
from .plan import TORCH_DTYPE, in_layout
from .program import Program
from .samples import as_inputs, as_tensor

SKIPS_BEFORE_WARNING = 50  # float16 steps skipped in a row before a run is called stuck (2 ** 50 of scale)


class Trainer(Loops, CompiledModel):
    def __init__(self, model, options: CompileOptions) -> None:
        if options.loss is None:
            raise GraphError("a Trainer needs a loss: fg.compile(model, loss='cross_entropy', optimizer=...)")
        super().__init__(model, options)
        optimizer = options.optimizer
        self._flatten_parameters()
        self.eval_source = loss_graph(self.source_graph, options.loss, options.label_smoothing)
        self.eval_graph, _ = run_pipeline(self.eval_source, options)
        self.eval_program = Program(self.eval_graph, self.target, self.counter)
        self._evaluation = self._runner(lambda feeds: self.eval_program.run(feeds, self.params_for(self.eval_graph)))
        self.steps_taken = 0  # completed steps: a step counts once it is done
        self.optimizer_steps = 0  # the updates made (Adam's bias correction...): float16 skips overflowing steps
        self.history: dict[str, list[float]] = {}
        self.epochs = 0  # epochs fit() has completed, over every call
        self.skipped_in_a_row = 0  # float16 steps skipped since the last update
        # gradients land straight in flat_grads, where the optimizer kernel reads them
        self._step_runner = self._runner(lambda feeds: self.train_program.run(feeds, self.params_for(self.train_graph),
                                                                              self._bind))
        self._step_number = torch.zeros((), dtype=torch.int64, device=self.device)
        for kernel in self._random_kernels:
            kernel.step = self._step_number  # a new dropout mask every step
        if optimizer is not None:
            self.states = [torch.zeros_like(self.flat) for _ in optimizer.state]
            if optimizer.name == "Adagrad":
                self.states[0].fill_(optimizer.initial_accumulator_value)
            self.optimizer_kernel = load_kernel(optim_kernels.render(optimizer), self.counter)
            if optimizer.clip_grad_norm > 0:
                self.squares_kernel = load_kernel(optim_kernels.render_squares(), self.counter)
                self._squares = torch.zeros((), dtype=torch.float32, device=self.device)
        self._lr = None if optimizer is None else optimizer.lr
        self._penalties = self._layer_weights(options.penalties, "penalties")
        self._constraints = self._layer_weights(options.constraints, "constraints")
        if self._penalties:
            self.penalty_kernel = load_kernel(optim_kernels.render_penalty(), self.counter)
            self._penalty_value = torch.zeros((), dtype=torch.float32, device=self.device)
        if self._constraints:
            self.max_norm_kernel = load_kernel(optim_kernels.render_max_norm(), self.counter)
        if options.scales_loss:
            self.nonfinite_kernel = load_kernel(optim_kernels.render_nonfinite(), self.counter)
            self._found_nonfinite = torch.zeros((), dtype=torch.int32, device=self.device)
        # the first sample of this step's batch in the whole batch: dropout keys its masks by a sample's place there
        self._first_sample = torch.zeros((), dtype=torch.int64, device=self.device)
        for kernel in self._random_kernels:
            kernel.first_sample = self._first_sample
        self.parallel = DataParallel(self) if options.distributed else None
        if self.parallel is not None:
            self._join()
        if hasattr(model, "follow"):
            model.follow(self)

    def _layer_weights(self, specs: tuple, what: str) -> list[tuple[str, object]]:
        """(the weight's name, spec) for each (layer, spec) of `penalties` or `constraints`: a layer's trainable
        weight (its bias is left alone, as Keras's kernel_regularizer / kernel_constraint do)."""
        if specs and self.optimizer is None:
            raise GraphError(f"{what} apply in training steps: compile with an optimizer too")
        found = []
        for layer, spec in specs:
            name = f"{layer}.weight"
            if name not in self.flat_ranges:
                layers = sorted(n.rsplit(".", 1)[0] for n in self.flat_ranges if n.endswith(".weight"))
                raise GraphError(f"{what}: '{layer}' is no layer with a trainable weight in {self.source_graph.name}; those "
                                 f"with one: {', '.join(layers)}")
            found.append((name, spec))
        return found

    def _join(self) -> None:
        """A distributed trainer's start: the same model and options on every rank, rank 0's weights and
        running statistics, and with a sharded optimizer only this rank's slice of its state."""
        parallel = self.parallel
        parallel.verify_same({"model": self.source_graph.digest(), "options": checkpoint.compile_options(self),
                              "shard_optimizer": self.options.shard_optimizer,
                              "sync_batch_norm": self.options.sync_batch_norm, "parameters": self.flat.numel()})
        if parallel.sharded:
            self.states = [state[parallel.lo:parallel.hi].clone() for state in self.states]
        self._sync_plan = self._sync_batch_norms(self.train_program)
        self._send_buckets_as_written(self.train_program, self.train_graph)
        parallel.broadcast_from_first([self.flat, *self._running_tensors()], "taking rank 0's weights at the start")
        self.weights_version += 1  # half copies and folded batch norms follow

    def _send_buckets_as_written(self, program, graph) -> None:
        """The backward nodes writing trainable gradients: after each, the buckets it completes go out."""
        param_of = {v.name: name for v, name in zip(graph.outputs[1:1 + len(self.trainable)], self.trainable)}
        producers = {node.name: [param_of[v.name] for v in node.outputs if v.name in param_of] for node in graph.nodes}
        producers = {node: names for node, names in producers.items() if names}
        if program is self.train_program:
            self.parallel.plan_buckets(self.flat_ranges, producers)
        if self.options.sync_batch_norm:
            return  # NOTE: its gradient sums are collectives inside the backward too: buckets wait, so ranks agree on order
        for node in producers:
            program.after_step[node] = lambda node=node: self.parallel.gradients_written(node)

    def _sync_batch_norms(self, program) -> list[tuple[str, int, str]]:
        """With sync_batch_norm: `program`'s batch norms combine every rank's statistics and gradient sums
        between their two kernels; returns what they combine, in order (a rank with no sample does its part)."""
        if self.parallel is None or not self.options.sync_batch_norm:
            return []
        plan = []
        for kernel in program.kernels:
            if kernel.node.op == "batch_norm_train":
                kernel.kernel.sync_statistics = self.parallel.sync_statistics
                plan.append(("statistics", kernel.node.inputs[0].type.shape[1], self.device))
            elif kernel.node.op == "batch_norm_train_bwd":
                kernel.kernel.sync_sums = self.parallel.sync_sums
                plan.append(("sums", kernel.node.inputs[0].type.shape[1], self.device))
        return plan

    def _running_tensors(self) -> list[torch.Tensor]:
        """The batch norms' running statistics and counts: what a step changes besides the flat weights."""
        return [self.params[name] for name, _ in self._running] + [self.params[name] for name in self._counters]

    def optimizer_buffers(self) -> list[torch.Tensor]:
        """The optimizer's state as whole flat buffers (a sharded run gathers its ranks' slices: every rank
        calls it)."""
        if self.parallel is not None and self.parallel.sharded:
            return self.parallel.gathered(self.states, self.flat.numel())
        return self.states

    def keep_optimizer_buffers(self, buffers: list[torch.Tensor]) -> None:
        """Whole flat optimizer buffers in: a sharded trainer keeps its slice."""
        if self.parallel is not None and self.parallel.sharded:
            for state, whole in zip(self.states, buffers, strict=True):
                state.copy_(whole[self.parallel.lo:self.parallel.hi])
        else:
            for state, whole in zip(self.states, buffers, strict=True):
                if state is not whole:
                    state.copy_(whole)

    def memory_report(self, batch: int) -> dict[str, int]:
        """The inference plan's bytes (CompiledModel.memory_report), and the training state's on this rank:
        weights, gradients, and the optimizer state it keeps (a sharded run: its slice) beside the whole."""
        report = super().memory_report(batch)
        whole = self.flat.numel() * self.flat.element_size() * len(self.states) if self.optimizer else 0
        report.update(weight_bytes=self.flat.numel() * self.flat.element_size(),
                      gradient_bytes=self.flat_grads.numel() * self.flat_grads.element_size(),
                      optimizer_state_bytes=sum(s.numel() * s.element_size() for s in self.states)
                      if self.optimizer else 0, optimizer_state_bytes_unsharded=whole)
        return report

    @property
    def lr(self) -> float | None:
        """The learning rate the next step takes: the optimizer's at first; set it between steps
        (`trainer.lr = 0.01`), or let a schedule set it each epoch (fit's `lr_schedule`)."""
        return self._lr

    @lr.setter
    def lr(self, value: float) -> None:
        if self.optimizer is None:
            raise GraphError("this trainer has no optimizer, so no learning rate: compile with optimizer=...")
        if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value) or value < 0:
            raise InputError(f"the learning rate must be a finite number >= 0, got {value!r}")
        self._lr = float(value)

    @property
    def optimizer(self):
        """The fg.optim optimizer it was compiled with (None: gradients and evaluation only)."""
        return self.options.optimizer

    # -- keeping the work -------------------------------------------------------------------------
    @exclusive
    def state_dict(self) -> dict:
        """Weights, optimizer buffers, step counters, loss scale, epochs and history: tensors and plain values
        only (torch.save / torch.load(weights_only=True) take it). See runtime/checkpoint.py."""
        return checkpoint.state_dict(self)

    @exclusive
    def load_state_dict(self, state: dict) -> None:
        """Continue from `state` (another trainer's `state_dict()` for the same model and optimizer): the next
        step is the one the saved trainer would have taken. A state that does not fit is a CheckpointError."""
        checkpoint.load_state_dict(self, state)

    @exclusive
    def save(self, path) -> None:
        """The model's definition, the state and the compile options, atomically to `path`: `fg.load(path)`
        gives a Trainer that continues exactly."""
        from ..nn.definition import definition
        from ..saving import write

        if not hasattr(self.model, "_calls"):
            raise GraphError("save() needs a trainer compiled from a fg.Model (this one was compiled from a bare graph)")
        state, tensors = checkpoint.to_save(self)  # NOTE: a sharded run gathers its optimizer state: every rank saves
        if self.parallel is None or self.parallel.rank == 0:
            write(path, "trainer", {"definition": definition(self.model), "options": checkpoint.compile_options(self),
                                    "state": state}, tensors)
        if self.parallel is not None:
            self.parallel.barrier(f"waiting for rank 0 to write {path}")

    @exclusive
    def host_weights(self) -> tuple[dict[str, torch.Tensor], int]:
        """A host copy of every parameter as of the last completed step, and the version it is."""
        return ({name: t.detach().to("cpu", memory_format=torch.contiguous_format, copy=True)
                 for name, t in self.params.items()}, self.weights_version)

    def _flatten_parameters(self) -> None:
        """The float32 weights in one flat buffer (the optimizer's), their gradients in another in the
        dtype the step computes them in; in mixed precision a third holds the half copy the step reads."""
        sizes = {name: prod(self.params[name].shape) for name in self.trainable}
        gradients = self.train_graph.outputs[1:1 + len(self.trainable)]
        total = sum(sizes.values())
        self.flat = torch.empty(total, device=self.device)
        grad_dtype = TORCH_DTYPE[gradients[0].type.dtype] if gradients else torch.float32
        self.flat_grads = torch.empty(total, dtype=grad_dtype, device=self.device)
        half = self.options.precision
        self.flat_half = torch.empty(total, dtype=TORCH_DTYPE[half], device=self.device) if half else None
        self.grad_views: dict[str, torch.Tensor] = {}
        self.flat_ranges: dict[str, slice] = {}  # each trainable parameter's part of the flat buffers
        offset = 0
        # a weight and its gradient are stored alike (the optimizer walks both flat), as the step reads them
        stored = {n.name: n.outputs[0].type for n in self.train_graph.param_nodes}
        for name in self.trainable:
            shape, n = tuple(self.params[name].shape), sizes[name]
            layout = stored.get(name, TensorType(shape))
            view = in_layout(self.flat[offset:offset + n], layout, shape)
            view.copy_(self.params[name])
            self.params[name] = view
            if self.flat_half is not None:
                self.casts[name] = in_layout(self.flat_half[offset:offset + n], layout, shape)
                self.casts[name].copy_(view)
            self.grad_views[name] = in_layout(self.flat_grads[offset:offset + n], layout, shape)
            self.flat_ranges[name] = slice(offset, offset + n)
            offset += n
        self._bind = {v.name: self.grad_views[name] for v, name in zip(gradients, self.trainable, strict=True)}
        # batch norms' running statistics: which step output replaces which parameter, and the step counters
        at = {v.name: i for i, v in enumerate(self.train_graph.outputs)}
        self._running = [(name, at[new.name]) for name, new in running_state(self.train_source)]
        self._counters = batch_counters(self.train_source)
        self._logits_at = 1 + len(self.trainable)

    # -- one step ------------------------------------------------------------------------------
    @exclusive
    def train_step(self, x, y) -> float:
        """Forward, loss, backward and one optimizer update; returns the batch's mean loss."""
        return float(self._step(x, y)[0])

    def _step(self, x, y) -> list[torch.Tensor]:
        """One step on (x, y); distributed, this rank's part of the batch (the ranks' parts in rank order make
        the whole), or x None where this rank has no sample of it; the whole batch's count of right answers
        is then `batch_correct` (summed with the losses: fit's progress shows the whole batch's accuracy)."""
        if self.optimizer is None:
            raise GraphError("compile with an optimizer to train, e.g. fg.compile(model, loss=..., "
                             "optimizer=fg.optim.Adam())")
        step = self.steps_taken + 1
        self._step_number.fill_(step)
        count = 0 if x is None else len(as_inputs(x)[0])
        if self.parallel is not None:
            starts_at = self.parallel.begin_step(count)
            if self._random_kernels:
                self._first_sample.fill_(starts_at)
        if x is None:  # nothing to run: a zero gradient, and a share of nought in the average (and batch norms)
            self.flat_grads.zero_()
            self.parallel.idle_batch_norms(self._sync_plan)
            outputs, launches = None, 0
        else:
            self.params_for(self.train_graph)  # NOTE: a CUDA graph replay runs no Python: refresh the half copies first
            outputs = self._run_training(x, y, *self._training_for(x, self._step_runner, self._bind))
            launches = self.last_launches
        if self.parallel is not None:
            right = 0 if outputs is None else self._correct(outputs[self._logits_at], as_tensor(y, "y").to(self.device))
            loss, self.batch_correct = self.parallel.finish_step(None if outputs is None else outputs[0], right)
            outputs = [torch.tensor(loss), *(outputs[1:] if outputs is not None else [])]
        launches += self._update(outputs)
        if self._penalties:  # the training loss includes the weights' penalties, as Keras's does
            outputs = [outputs[0] + self._penalty_value, *outputs[1:]]
        self.steps_taken = step
        self.weights_version += 1
        if self.options.precision is not None:
            self._casts_version = self.weights_version  # the optimizer wrote the half copies too
        self.last_launches = launches
        return outputs

    def _update(self, outputs: list[torch.Tensor]) -> int:
        """The optimizer's update (unless float16 gradients overflowed: then the loss scale backs off) and the
        running statistics' new values: all of it or, if interrupted, none. Returns the launches it made."""
        state = [self.flat, *self.states, *(self.params[name] for name, _ in self._running),
                 *(self.params[name] for name in self._counters), *([self.flat_half] if self.options.precision else [])]
        # the interpreter runs a launch's programs one by one in Python: Ctrl-C can land between them
        before = [t.clone() for t in state] if self.target.interpreted else None
        host = (self.optimizer_steps, self.loss_scale, self.growth_tracker)
        try:
            launches = self._optimizer_step()
            if len(outputs) > 1:  # not a rank that had no sample
                for name, at in self._running:
                    self.params[name].copy_(outputs[at])
            for name in self._counters:
                self.params[name].add_(1)
            if self.parallel is not None and (self._running or self._counters):
                self.parallel.broadcast_from_first(self._running_tensors(), "sharing rank 0's running statistics")
        except BaseException:
            for tensor, saved in zip(state, before or []):  # NOTE: on a GPU, launched work runs to the end
                tensor.copy_(saved)
            self.optimizer_steps = host[0]
            if self.options.scales_loss:
                self._set_loss_scale(*host[1:])
                self._found_nonfinite.zero_()  # the check never clears its flag itself
            raise
        return launches

    def _optimizer_step(self) -> int:
        """One optimizer launch over the flat buffers, after float16's check for overflowed gradients, which
        skips it and backs the loss scale off when they did (GradScaler.step and update). Weight penalties join
        the gradients before; max-norm constraints rescale the weights after."""
        launches = 0
        if self._penalties:
            self._penalty_value.zero_()
            scale = self.loss_scale if self.options.scales_loss else 1.0
            for name, penalty in self._penalties:
                part = self.flat_ranges[name]
                optim_kernels.launch_penalty(self.penalty_kernel, self.target, self.flat[part], self.flat_grads[part],
                                             self._penalty_value, penalty, scale)
                launches += 1
        if self.options.scales_loss:
            optim_kernels.launch_nonfinite(self.nonfinite_kernel, self.target, self.flat_grads, self._found_nonfinite)
            launches += 1
            found = bool(self._found_nonfinite)  # NOTE: one device-to-host sync, as GradScaler.step makes
            if found:
                self._found_nonfinite.zero_()
            self._warn_if_stuck(found)
            unscale = 1.0 / self.loss_scale
            self._set_loss_scale(*self.options.loss_scale.update(self.loss_scale, self.growth_tracker, found))
            if found:
                return launches
        else:
            unscale = 1.0
        self.optimizer_steps += 1
        squares = None
        if self.optimizer.clip_grad_norm > 0:  # the global norm of every gradient, read by the update's launch
            optim_kernels.launch_squares(self.squares_kernel, self.target, self.flat_grads, self._squares, unscale)
            squares, launches = self._squares, launches + 1
        update = {"inv_scale": unscale, "lr": self._lr, "squares": squares}
        if self.parallel is not None and self.parallel.sharded:  # this rank's slice, then every slice to every rank
            part = slice(self.parallel.lo, self.parallel.hi)
            half = None if self.flat_half is None else self.flat_half[part]
            optim_kernels.launch(self.optimizer_kernel, self.optimizer, self.target, self.flat[part],
                                 self.flat_grads[part], self.states, self.optimizer_steps, half_copy=half, **update)
            self.parallel.share_slices([self.flat, *([self.flat_half] if self.flat_half is not None else [])])
        else:
            optim_kernels.launch(self.optimizer_kernel, self.optimizer, self.target, self.flat, self.flat_grads,
                                 self.states, self.optimizer_steps, half_copy=self.flat_half, **update)
        for name, constraint in self._constraints:
            part = self.flat_ranges[name]
            optim_kernels.launch_max_norm(self.max_norm_kernel, self.target, self.flat[part],
                                          None if self.flat_half is None else self.flat_half[part],
                                          self.params[name].shape[0], constraint)
        return launches + 1 + len(self._constraints)

    def _warn_if_stuck(self, found: bool) -> None:
        """A run of SKIPS_BEFORE_WARNING skipped float16 steps is not a scale finding its level: the
        gradients are not finite at any scale (an input, a weight or a loss that is). Said once per run,
        naming the first parameter whose gradient is not finite."""
        self.skipped_in_a_row = self.skipped_in_a_row + 1 if found else 0
        if self.skipped_in_a_row != SKIPS_BEFORE_WARNING:
            return
        first = next((name for name, grad in self.grad_views.items() if not bool(torch.isfinite(grad).all())), None)
        warnings.warn(f"{SKIPS_BEFORE_WARNING} float16 steps in a row were skipped (loss scale now {self.loss_scale:g}): "
                      f"the gradient of {first or 'some parameter'} is not finite at any scale; look for inf or NaN "
                      "in the inputs, the weights or the loss", RuntimeWarning, stacklevel=5)

    def _set_loss_scale(self, scale: float, growth_tracker: int) -> None:
        if scale != self.loss_scale:
            self.runtime_params[LOSS_SCALE].fill_(scale)
        self.loss_scale, self.growth_tracker = scale, growth_tracker

    def _running_values(self) -> list[torch.Tensor]:
        return [self.params[name].clone() for name, _ in self._running] + [self.params[n].clone() for n in self._counters]

    def snapshot(self) -> tuple:
        """The weights and running statistics as they are now (host copies do not follow later steps)."""
        return self.flat.clone(), self._running_values()

    def restore(self, snapshot: tuple) -> None:
        """Back to a `snapshot()`: the trainer, the Model and to_torch() follow."""
        flat, running = snapshot
        self.flat.copy_(flat)
        names = [name for name, _ in self._running] + self._counters
        for name, saved in zip(names, running, strict=True):
            self.params[name].copy_(saved)
        self.weights_version += 1
