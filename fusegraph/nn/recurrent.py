"""SimpleRNN, LSTM and GRU layers: a scan per direction over a cell body, PyTorch's weight layout."""

from __future__ import annotations

from math import sqrt

import torch
from torch import nn

from ..ir import BATCH, GraphError, TensorType
from .cells import CARRIES, GATES, cell_body
from .layer import Layer, copy_into, flag, positive_int

PARAM_NAMES = ("weight_ih", "weight_hh", "bias_ih", "bias_hh")


class RecurrentOutput(nn.Module):
    """Wraps nn.RNN / nn.LSTM / nn.GRU to take and return what the fusegraph layer does: the initial
    states batch first, each direction's in turn (h, c for an LSTM), and its final states so."""

    def __init__(self, rnn: nn.RNNBase, return_sequences: bool, return_state: bool = False) -> None:
        super().__init__()
        self.rnn = rnn
        self.return_sequences, self.return_state = return_sequences, return_state

    def forward(self, x: torch.Tensor, *states: torch.Tensor):
        carries = 2 if isinstance(self.rnn, nn.LSTM) else 1
        # torch's states: (directions, batch, units) per carry
        given = [torch.stack(states[k::carries]) for k in range(carries)] if states else None
        out, state = self.rnn(x, None if given is None else tuple(given) if carries == 2 else given[0])
        final = state if isinstance(state, tuple) else (state,)
        result = out if self.return_sequences else final[0].transpose(0, 1).reshape(x.shape[0], -1)
        if not self.return_state:
            return result
        return (result, *(carry[d] for d in range(final[0].shape[0]) for carry in final))


class _Recurrent(Layer):
    kind = "lstm"

    def __init__(self, units: int, return_sequences: bool = False, bidirectional: bool = False,
                 return_state: bool = False, name: str | None = None) -> None:
        super().__init__(name)
        self.units, self.return_sequences, self.bidirectional = units, return_sequences, bidirectional
        self.return_state = return_state
        self.units = positive_int(units, "units", self.describe())
        self.return_sequences = flag(return_sequences, "return_sequences", self.describe())
        self.bidirectional = flag(bidirectional, "bidirectional", self.describe())
        self.return_state = flag(return_state, "return_state", self.describe())
        self.features = 0

    def config(self):
        return {"units": self.units, "return_sequences": self.return_sequences, "bidirectional": self.bidirectional,
                "return_state": self.return_state}

    @property
    def directions(self) -> tuple[str, ...]:
        return ("", "_reverse") if self.bidirectional else ("",)

    def emit(self, b, inputs, name):
        x, states = inputs[0], list(inputs[1:])
        if x.type.rank != 3 or not x.type.batched:
            raise GraphError(
                f"layer '{name}' ({type(self).__name__}) needs a sequence (batch, time, features), got {x.type}; "
                "feed it an Embedding, an RNN with return_sequences=True, or Input((time, features))"
            )
        if not x.type.is_float:
            raise GraphError(f"layer '{name}' ({type(self).__name__}) takes float sequences, got {x.type.dtype}; "
                             "put an Embedding before it for token ids")
        self.features = x.type.shape[2]
        carries = CARRIES[self.kind]
        self._check_states(states, x.type.dtype, name)
        body = cell_body(self.kind, self.units, self.features, x.type.dtype, layer=name)
        rows, bound = GATES[self.kind] * self.units, 1.0 / sqrt(self.units)
        shapes = {"weight_ih": (rows, self.features), "weight_hh": (rows, self.units),
                  "bias_ih": (rows,), "bias_hh": (rows,)}
        results = []
        finals = []
        for d, suffix in enumerate(self.directions):
            weights = [b.parameter(f"{name}.{p}{suffix}", TensorType(shapes[p], x.type.dtype), "uniform",
                                   bound=bound, layer=name) for p in PARAM_NAMES]
            initial = states[d * len(carries):(d + 1) * len(carries)]
            outs = b.op("scan", [*initial, x, *weights], name=f"{name}{suffix}", layer=name, body=body,
                        num_carries=len(carries), num_seqs=1, reverse=bool(suffix), init_carries=bool(initial),
                        output_names=(*carries, "seq"))
            results.append(outs[-1] if self.return_sequences else outs[0])
            finals.extend(outs[:len(carries)])
        if len(results) > 1:
            results = [b.op("concat", results, name=name, layer=name, axis=results[0].type.rank - 1)]
        return results + (finals if self.return_state else [])

    def _check_states(self, states: list, dtype: str, name: str) -> None:
        """Initial states: none (zeros), or each carry of each direction, (batch, units) in the input's dtype."""
        carries = CARRIES[self.kind]
        wanted = [f"{c}{'_reverse' if d else ''}" for d in range(len(self.directions)) for c in carries]
        if not states:
            return
        expected = TensorType((BATCH, self.units), dtype)
        if len(states) != len(wanted) or any(s.type != expected for s in states):
            raise GraphError(f"layer '{name}' ({type(self).__name__}) takes its initial states as ({', '.join(wanted)}) "
                             f"after the sequence, each {expected}; got {[str(s.type) for s in states]}")

    def torch_module(self, params):
        cls = {"lstm": nn.LSTM, "gru": nn.GRU, "simple_rnn": nn.RNN}[self.kind]
        rnn = cls(self.features, self.units, batch_first=True, bidirectional=self.bidirectional)
        mapping = {f"{p}_l0{s}": f"{self.name}.{p}{s}" for s in self.directions for p in PARAM_NAMES}
        return RecurrentOutput(copy_into(rnn, params, mapping), self.return_sequences, self.return_state)


class SimpleRNN(_Recurrent):
    kind = "simple_rnn"


class LSTM(_Recurrent):
    kind = "lstm"


class GRU(_Recurrent):
    kind = "gru"
