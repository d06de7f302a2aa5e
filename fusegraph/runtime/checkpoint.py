"""A Trainer's whole state as tensors and plain values: what `state_dict()` returns, `load_state_dict()`
takes back, and `save()` writes beside the model's definition (fusegraph/saving.py), so that a run
continued from it takes the very steps the uninterrupted run would have.

The state: every parameter (float32 masters, batch-norm running statistics and counts, in PyTorch
layouts), the optimizer's buffers per parameter, the step counters (steps taken, which also seeds
dropout's masks; optimizer updates made, Adam's bias correction), the learning rate the next step takes,
float16's loss scale and growth tracker, the epochs trained and the history. What the trainer was
compiled with (loss, optimizer and its hyperparameters, precision, memory format, fp32 precision, fusion,
penalties and constraints) travels with a save; how the run went (device, distributed, a sharded
optimizer) does not: a save loads anywhere."""

from __future__ import annotations

import dataclasses
from typing import Any

import torch

from ..ir import CheckpointError, GraphError
from ..passes import CompileOptions
from ..passes.options import RUN_ONLY
from ..saving import as_tensors, from_parts, weights_in

STATE_VERSION = 1


def _buffer_views(trainer, buffer: torch.Tensor) -> dict[str, torch.Tensor]:
    """Each trainable parameter's part of a flat buffer laid out like the weights' (an optimizer state)."""
    return {name: buffer.as_strided(trainer.params[name].size(), trainer.params[name].stride(),
                                    trainer.params[name].storage_offset()) for name in trainer.trainable}


def state_dict(trainer) -> dict[str, Any]:
    """Tensors (on the CPU, contiguous) and plain values only: torch.load(weights_only=True) reads it."""
    weights, _ = trainer.host_weights()
    state = {}
    if trainer.optimizer is not None:
        for buffer_name, buffer in zip(trainer.optimizer.state, trainer.optimizer_buffers(), strict=True):
            state[buffer_name] = {name: view.detach().to("cpu", memory_format=torch.contiguous_format, copy=True)
                                  for name, view in _buffer_views(trainer, buffer).items()}
    return {"fusegraph_state_version": STATE_VERSION, "model": trainer.source_graph.name,
            "graph_sha256": trainer.source_graph.digest(), "params": weights,
            "optimizer": None if trainer.optimizer is None else {"name": trainer.optimizer.name, "state": state},
            "steps_taken": trainer.steps_taken, "optimizer_steps": trainer.optimizer_steps, "lr": trainer.lr,
            "loss_scale": trainer.loss_scale,
            "growth_tracker": trainer.growth_tracker if trainer.options.scales_loss else None,
            "epochs": trainer.epochs, "history": {k: list(v) for k, v in trainer.history.items()}}


def load_state_dict(trainer, state: Any) -> None:
    """Puts `state` (from `state_dict()` of a trainer of the same model) into `trainer`; whatever differs is
    one CheckpointError naming it, before anything is changed."""
    if not isinstance(state, dict) or state.get("fusegraph_state_version") != STATE_VERSION:
        found = state.get("fusegraph_state_version") if isinstance(state, dict) else type(state).__name__
        raise CheckpointError(f"a trainer state of version {found!r}; this fusegraph reads version {STATE_VERSION}")
    if state.get("graph_sha256") != trainer.source_graph.digest():
        raise CheckpointError(f"the state is of model '{state.get('model')}', whose graph differs from this "
                                f"trainer's model '{trainer.source_graph.name}'")
    params = state.get("params") or {}
    expected = {name: tuple(t.shape) for name, t in trainer.host_weights()[0].items()}
    got = {name: tuple(t.shape) for name, t in params.items() if isinstance(t, torch.Tensor)}
    if got != expected:
        differ = sorted(set(got) ^ set(expected)) or [n for n in expected if got[n] != expected[n]]
        raise CheckpointError(f"the state's parameters differ from the trainer's: {differ}")
    saved, ours = state.get("optimizer"), trainer.optimizer
    if (saved is None) != (ours is None) or (ours is not None and saved.get("name") != ours.name):
        raise CheckpointError(f"the state was saved with optimizer {saved and saved.get('name')}, this trainer has "
                                f"{ours and ours.name}")
    if ours is not None and set(saved["state"]) != set(ours.state):
        raise CheckpointError(f"the state's optimizer buffers {sorted(saved['state'])} are not {list(ours.state)}")
    if (state.get("loss_scale") is None) != (not trainer.options.scales_loss):
        raise CheckpointError("the state's loss scale does not match this trainer's precision (fp16 keeps one)")
    with torch.no_grad():
        for name, tensor in params.items():
            trainer.params[name].copy_(tensor)
        if ours is not None:
            buffers = [torch.empty_like(trainer.flat) for _ in ours.state]  # whole: a sharded trainer keeps its slice
            for buffer_name, buffer in zip(ours.state, buffers, strict=True):
                for name, view in _buffer_views(trainer, buffer).items():
                    view.copy_(saved["state"][buffer_name][name])
            trainer.keep_optimizer_buffers(buffers)
    trainer.steps_taken, trainer.optimizer_steps = int(state["steps_taken"]), int(state["optimizer_steps"])
    if ours is not None:  # the rate a schedule or the user had set (states written before it was kept: the optimizer's)
        trainer.lr = float(state.get("lr") if state.get("lr") is not None else ours.lr)
    trainer._step_number.fill_(trainer.steps_taken)  # dropout's masks between steps (loss_and_grads) are the last step's
    if trainer.options.scales_loss:
        trainer._set_loss_scale(float(state["loss_scale"]), int(state["growth_tracker"]))
    trainer.epochs = int(state.get("epochs", 0))
    trainer.history = {k: [float(v) for v in values] for k, values in (state.get("history") or {}).items()}
    trainer.weights_version += 1  # half copies, folded batch norms and the Model follow


def compile_options(compiled) -> dict[str, Any]:
    """What it was compiled with, as JSON: a save's "options" (its device is not kept: a save loads anywhere)."""
    data = compiled.options.to_data()
    for name in RUN_ONLY:  # a save from a distributed run loads into one process, or another run
        del data[name]
    return data


def to_save(trainer) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """The state split for a save: plain values (JSON) and tensors by flat name."""
    state = state_dict(trainer)
    tensors = as_tensors(state.pop("params"))
    if state["optimizer"] is not None:
        for buffer_name, per_param in state["optimizer"].pop("state").items():
            tensors.update({f"optim.{buffer_name}.{name}": t for name, t in per_param.items()})
    return state, tensors


def trainer_from_save(model, body: dict, tensors: dict[str, torch.Tensor], device: str | None, where: str,
                      **run: bool):
    """The Trainer a save describes, compiled as it was (`run`: distributed, shard_optimizer, for this run)
    and holding its state."""
    from .entry import compiled_with

    try:
        options, state = CompileOptions.from_data(body["options"], device=device, **run), dict(body["state"])
        state["params"] = weights_in(tensors)
        if state.get("optimizer") is not None:
            buffers: dict[str, dict[str, torch.Tensor]] = {name: {} for name in options.optimizer.state}
            for key, tensor in tensors.items():
                if key.startswith("optim."):
                    buffer_name, param = key[len("optim."):].split(".", 1)
                    buffers.setdefault(buffer_name, {})[param] = tensor
            state["optimizer"]["state"] = buffers
    except (KeyError, TypeError, AttributeError) as error:
        raise CheckpointError(f"{where} is damaged: its trainer part lacks or misstates {error}") from None
    except GraphError as error:  # options that do not hold
        raise CheckpointError(f"{where}: its compile options do not hold: {error}") from None
    trainer = compiled_with(model, options)
    trainer.load_state_dict(state)
    return trainer


def _model_of(compiled):
    model = getattr(compiled, "model", None)
    if model is None or not hasattr(model, "_calls"):
        raise TypeError("a model compiled from a bare graph cannot be copied or pickled; compile a fg.Model")
    return model


def reduce_compiled(compiled):
    """Pickling / deep-copying a CompiledModel or Trainer: its model's definition, weights and state, and
    how it was compiled; the copy is compiled anew and holds copies of everything."""
    from ..nn.definition import definition

    model = _model_of(compiled)
    if hasattr(compiled, "optimizer"):  # a Trainer
        state, tensors = to_save(compiled)
        body = {"definition": definition(model), "options": compile_options(compiled), "state": state}
        return (_rebuilt_trainer, (body, tensors, compiled.device))
    weights = {name: t.detach().to("cpu", memory_format=torch.contiguous_format, copy=True)
               for name, t in compiled.params.items()}
    options = dataclasses.replace(compiled.options, device=compiled.device)  # a copy runs where it ran
    return (_rebuilt_compiled, (definition(model), weights, options.to_data()))


def _rebuilt_compiled(data, weights, options):
    from ..nn.definition import rebuilt
    from .entry import compiled_with

    return compiled_with(rebuilt(data, weights), CompileOptions.from_data(options))


def _rebuilt_trainer(body, tensors, device):
    return from_parts("trainer", body, tensors, device=device, where="a copied trainer")
