"""Saved models and trainers on disk: `model.save(path)`, `trainer.save(path)` and `fg.load(path)`.

A file holds plain data only: the model's definition (nn/definition.py) and the trainer's options and
counters as JSON text, and tensors by name, written with torch.save and read back with
`torch.load(weights_only=True)`, whose unpickler builds tensors and plain containers and refuses
anything else: loading a file never runs code from it. It is written to a temporary file beside the
target, flushed to disk, then renamed over it, so a crash mid-write leaves the last good file."""

from __future__ import annotations

import json
import os
import tempfile
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from .ir import CheckpointError, FusegraphError

FORMAT = "fusegraph"
VERSION = 1
KINDS = ("model", "trainer")


def write(path: str | os.PathLike, kind: str, body: Mapping[str, Any], tensors: Mapping[str, torch.Tensor]) -> Path:
    """Atomically writes one save: `body` (JSON-able) and `tensors` (name -> tensor, copied to the CPU)."""
    path = Path(path)
    payload = {"format": FORMAT, "version": VERSION, "kind": kind, "body": json.dumps(body),
               "tensors": {name: t.detach().to("cpu").contiguous() for name, t in tensors.items()}}
    folder = path.parent if str(path.parent) else Path(".")
    folder.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".partial", dir=folder)
    try:
        with os.fdopen(handle, "wb") as stream:
            torch.save(payload, stream)
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    directory = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(directory)  # NOTE: the rename itself survives a power cut
    finally:
        os.close(directory)
    return path


def read(path: str | os.PathLike, kind: str | None = None) -> tuple[str, dict, dict[str, torch.Tensor]]:
    """(kind, body, tensors) of a save; a missing, foreign, damaged or (with `kind`) other kind of file is one
    CheckpointError."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such file")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # NOTE: torch's notes on foreign pickles; refusing is ours to say
            payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # NOTE: torch's message says what its safe unpickler refused, if that was it
        raise CheckpointError(f"{path} is not a fusegraph save, or it is damaged (truncated?): "
                              f"{type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not a fusegraph save (no fusegraph header)")
    if payload.get("version") != VERSION:
        raise CheckpointError(f"{path} is a fusegraph save of format version {payload.get('version')!r}; this "
                              f"fusegraph reads version {VERSION}")
    found = payload.get("kind")
    if found not in KINDS or (kind is not None and found != kind):
        raise CheckpointError(f"{path} holds a {found}, not a {kind}")
    tensors = payload.get("tensors")
    try:
        body = json.loads(payload.get("body"))
    except (TypeError, ValueError):
        body = None
    if not isinstance(body, dict) or not isinstance(tensors, dict) or \
            not all(isinstance(t, torch.Tensor) for t in tensors.values()):
        raise CheckpointError(f"{path} is damaged: its body or tensors are not what a fusegraph save holds")
    return found, body, tensors


PARAM = "param."  # a save's tensors: the weights under this prefix, a trainer's optimizer buffers beside them


def as_tensors(weights: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {PARAM + name: t for name, t in weights.items()}


def weights_in(tensors: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {name[len(PARAM):]: t for name, t in tensors.items() if name.startswith(PARAM)}


def load(path: str | os.PathLike, *, custom_layers: Mapping[str, type] | None = None, device: str | None = None,
         distributed: bool = False, shard_optimizer: bool = False, sync_batch_norm: bool = False):
    """The Model (from `model.save`) or the Trainer, ready to continue (from `trainer.save`) saved at `path`.
    `custom_layers`: name -> class for layers of your own (fusegraph's are found by name). A trainer loads
    into one process, or with `distributed=True` (and `shard_optimizer`, `sync_batch_norm`) into a data-parallel run of any
    number of ranks, every rank loading the same file, whatever run saved it."""
    kind, body, tensors = read(path)
    run = {"distributed": distributed, "shard_optimizer": shard_optimizer, "sync_batch_norm": sync_batch_norm} \
        if distributed or shard_optimizer or sync_batch_norm else {}
    return from_parts(kind, body, tensors, custom_layers=custom_layers, device=device, where=str(path), **run)


def from_parts(kind: str, body: Mapping[str, Any], tensors: Mapping[str, torch.Tensor], *,
               custom_layers: Mapping[str, type] | None = None, device: str | None = None, where: str, **run: bool):
    """The Model or Trainer a save's parts describe (what `load` and copying a trainer build)."""
    from .nn.definition import from_definition

    try:
        model = from_definition(body["definition"], custom_layers)
    except (KeyError, TypeError) as error:
        raise CheckpointError(f"{where} is damaged: its model definition lacks {error}") from None
    try:
        model.load_params(weights_in(tensors))
    except FusegraphError as error:
        raise CheckpointError(f"{where}: its weights do not fit its model: {error}") from None
    if kind == "model":
        return model
    from .runtime.checkpoint import trainer_from_save

    return trainer_from_save(model, body, tensors, device=device, where=where, **run)
