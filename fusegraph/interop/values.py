"""What a torch graph's node may convert to besides one fusegraph tensor: views of a shape, weights,
and an RNN call waiting for its use (fusegraph/interop/from_torch.py)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

from ..ir import GraphError
from ..nn.tensor import SymbolicTensor

if TYPE_CHECKING:
    from .from_torch import Converter


@dataclass
class Pooled:
    """A global average pool that kept its size-1 axes: (N, C, 1, 1) in torch, (N, C) in fusegraph; read as
    anything but a flatten, `kept` is it reshaped to torch's shape (made once)."""

    tensor: SymbolicTensor
    spatial: int = 2  # the size-1 axes torch keeps
    kept: SymbolicTensor | None = None


@dataclass
class Constant:
    """A parameter or buffer read with get_attr (a functional conv's or linear's weight)."""

    tensor: torch.Tensor
    key: str


@dataclass
class ViewedWeight:
    """A parameter viewed as another shape (timm's layer scale: `x * self.gamma.reshape(1, -1, 1, 1)`): only
    a per-channel scale reads it, keeping the parameter its own shape."""

    weight: Constant
    shape: tuple[int, ...]


@dataclass
class Size:
    """x.size() / x.shape (dim None), or one of its entries."""

    tensor: SymbolicTensor
    dim: int | None = None


@dataclass
class Recurrent:
    """An nn.RNN / LSTM / GRU call, built once its use is known: the whole sequence, or only the last
    step (`out[:, -1]`, `h_n[-1]`), which is the layer without return_sequences."""

    kind: str  # "LSTM", "GRU" or "RNN"
    hidden: int
    layers: int
    bidirectional: bool
    weights: dict[str, tuple[torch.Tensor, str]]  # torch's name ("weight_ih_l0_reverse") -> (tensor, key)
    path: str
    name: str
    x: SymbolicTensor
    converter: Converter
    flat: bool = False  # torch.lstm / aten.lstm: (output, h_n[, c_n]), not nn.LSTM's (output, (h_n, c_n))
    initial: list[list[SymbolicTensor]] | None = None  # per layer, the carries it starts from (None: zeros)
    built: str | None = None
    output: SymbolicTensor | None = None
    finals: list[list[SymbolicTensor]] | None = None  # per layer, its final carries, each direction's in turn

    def build(self, use: str) -> SymbolicTensor:
        if self.built is not None and self.built != use:
            raise GraphError(f"from_torch: the {self.kind} at '{self.path}' is read both as its whole "
                             "output sequence and as its last step; fusegraph builds one of them per RNN")
        if self.output is None:
            self.output = self.converter.recurrent_layers(self, sequence=use == "sequence")
            self.built = use
        return self.output

    def final_states(self) -> list[list[SymbolicTensor]]:
        """Per layer, its final carries (h[, c] of each direction in turn); built as its last step if not yet."""
        if self.output is None:
            self.build("last")
        assert self.finals is not None
        return self.finals


@dataclass
class Direction:
    """One direction's final state of a bidirectional RNN's last layer (h_n[-2]: forward, h_n[-1]: backward)."""

    rnn: Recurrent
    direction: int


RNN_READS = ("its output sequence; for one direction its last step (out[:, -1], h_n[-1]); for two, "
              "torch.cat((h_n[-2], h_n[-1]), dim=1)")


@dataclass
class Part:
    """What getitem has picked out of an RNN's results so far: "seq", "state", "h" or "c"."""

    rnn: Recurrent
    part: str


@dataclass
class Noise:
    """torch.empty(...) / x.new_empty(...) made a keep mask in place: bernoulli_(keep), then div_(keep); times a
    tensor, stochastic depth as torch.compile's graphs inline torchvision's stochastic_depth and timm's drop_path."""

    shape: tuple
    keep: float | None = None
    scaled: bool = False


class Zeros:
    """torch.zeros(...): an RNN's initial state as torch.compile's graphs write it (fusegraph starts from zeros)."""


@dataclass
class ChannelGroups:
    """A map viewed as (batch, groups, channels // groups, ...): the first step of a channel shuffle."""

    tensor: SymbolicTensor
    groups: int
    shuffled: bool = False  # its two group axes swapped (transpose(1, 2)): viewed back, a ChannelShuffle
