"""SimpleRNN, LSTM and GRU layers: a scan per direction over a cell body, PyTorch's weight layout."""

from __future__ import annotations

from math import sqrt

import torch
from torch import nn

from ..ir import GraphError, TensorType
from .cells import CARRIES, GATES, cell_body
from .layer import Layer, copy_into, flag, positive_int

PARAM_NAMES = ("weight_ih", "weight_hh", "bias_ih", "bias_hh")


class RecurrentOutput(nn.Module):
    """Wraps nn.RNN / nn.LSTM / nn.GRU to return what the fusegraph layer returns."""

    def __init__(self, rnn: nn.RNNBase, return_sequences: bool) -> None:
        super().__init__()
        self.rnn = rnn
        self.return_sequences = return_sequences

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out, state = self.rnn(x)
        if self.return_sequences:
            return out
        h_n = state[0] if isinstance(state, tuple) else state  # (directions, batch, units)
        return h_n.transpose(0, 1).reshape(x.shape[0], -1)


class _Recurrent(Layer):
    kind = "lstm"

    def __init__(self, units: int, return_sequences: bool = False, bidirectional: bool = False,
                 name: str | None = None) -> None:
        super().__init__(name)
        self.units, self.return_sequences, self.bidirectional = units, return_sequences, bidirectional
        self.units = positive_int(units, "units", self.describe())
        self.return_sequences = flag(return_sequences, "return_sequences", self.describe())
        self.bidirectional = flag(bidirectional, "bidirectional", self.describe())
        self.features = 0

    def config(self):
        return {"units": self.units, "return_sequences": self.return_sequences, "bidirectional": self.bidirectional}

    @property
    def directions(self) -> tuple[str, ...]:
        return ("", "_reverse") if self.bidirectional else ("",)

    def emit(self, b, inputs, name):
        (x,) = inputs
        if x.type.rank != 3 or not x.type.batched:
            raise GraphError(
                f"layer '{name}' ({type(self).__name__}) needs a sequence (batch, time, features), got {x.type}; "
                "feed it an Embedding, an RNN with return_sequences=True, or Input((time, features))"
            )
        if not x.type.is_float:
            raise GraphError(f"layer '{name}' ({type(self).__name__}) takes float sequences, got {x.type.dtype}; "
                             "put an Embedding before it for token ids")
        self.features = x.type.shape[2]
        body = cell_body(self.kind, self.units, self.features, x.type.dtype, layer=name)
        rows, bound = GATES[self.kind] * self.units, 1.0 / sqrt(self.units)
        shapes = {"weight_ih": (rows, self.features), "weight_hh": (rows, self.units),
                  "bias_ih": (rows,), "bias_hh": (rows,)}
        results = []
        for suffix in self.directions:
            weights = [b.parameter(f"{name}.{p}{suffix}", TensorType(shapes[p], x.type.dtype), "uniform",
                                   bound=bound, layer=name) for p in PARAM_NAMES]
            outs = b.op("scan", [x, *weights], name=f"{name}{suffix}", layer=name, body=body,
                        num_carries=len(CARRIES[self.kind]), num_seqs=1, reverse=bool(suffix),
                        output_names=(*CARRIES[self.kind], "seq"))
            results.append(outs[-1] if self.return_sequences else outs[0])
        if len(results) == 1:
            return results
        return [b.op("concat", results, name=name, layer=name, axis=results[0].type.rank - 1)]

    def torch_module(self, params):
        cls = {"lstm": nn.LSTM, "gru": nn.GRU, "simple_rnn": nn.RNN}[self.kind]
        rnn = cls(self.features, self.units, batch_first=True, bidirectional=self.bidirectional)
        mapping = {f"{p}_l0{s}": f"{self.name}.{p}{s}" for s in self.directions for p in PARAM_NAMES}
        return RecurrentOutput(copy_into(rnn, params, mapping), self.return_sequences)


class SimpleRNN(_Recurrent):
    kind = "simple_rnn"


class LSTM(_Recurrent):
    kind = "lstm"


class GRU(_Recurrent):
    kind = "gru"
