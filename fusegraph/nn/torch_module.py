"""The PyTorch oracle: a functional model replayed over real torch.nn modules."""

from __future__ import annotations

import torch
from torch import nn


class TorchModel(nn.Module):
    """Runs `program`: each step feeds slots to one module (`modules[layer]`) and fills its output slots."""

    def __init__(self, modules: dict[str, nn.Module], program: list[tuple[str, tuple[int, ...], tuple[int, ...]]],
                 input_slots: tuple[int, ...], output_slots: tuple[int, ...]) -> None:
        super().__init__()
        self.layers = nn.ModuleDict(modules)
        self.program = program
        self.input_slots = input_slots
        self.output_slots = output_slots

    def fusegraph_parameters(self) -> dict[str, nn.Parameter]:
        """This module's parameters keyed by their fusegraph names ("conv1.weight", ...)."""
        found = {}
        for module in self.modules():
            for theirs, ours in getattr(module, "fusegraph_names", {}).items():
                found[ours] = module.get_parameter(theirs)
        return found

    def tie(self, tied: dict[str, str]) -> None:
        """Makes each tied parameter the very Parameter of the one it is tied to (one tensor, one gradient)."""
        owners = {ours: (module, theirs) for module in self.modules()
                  for theirs, ours in getattr(module, "fusegraph_names", {}).items()}
        for alias, target in tied.items():
            module, theirs = owners[alias]
            owner = module.get_submodule(theirs.rpartition(".")[0]) if "." in theirs else module
            setattr(owner, theirs.rpartition(".")[2], self.fusegraph_parameters()[target])

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor | list[torch.Tensor]:
        slots: dict[int, torch.Tensor] = dict(zip(self.input_slots, inputs))
        for layer, ins, outs in self.program:
            result = self.layers[layer](*(slots[i] for i in ins))
            results = result if isinstance(result, (tuple, list)) else (result,)
            slots.update(zip(outs, results))
        outputs = [slots[i] for i in self.output_slots]
        return outputs[0] if len(outputs) == 1 else outputs
