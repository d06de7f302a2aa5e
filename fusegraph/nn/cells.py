"""Recurrent cells written with primitive ops, as scan bodies; PyTorch's equations and gate order.

Body inputs: carries (h[, c]), the step input x, then weight_ih, weight_hh, bias_ih, bias_hh.
"""

from __future__ import annotations

from ..ir import BATCH, Graph, GraphBuilder, TensorType, Value

GATES = {"simple_rnn": 1, "lstm": 4, "gru": 3}
CARRIES = {"simple_rnn": ("h",), "lstm": ("h", "c"), "gru": ("h",)}


def _projections(b: GraphBuilder, x: Value, h: Value, w_ih, w_hh, b_ih, b_hh) -> tuple[Value, Value]:
    gx = b.op("matmul", [x, w_ih], name="gates_x", transpose_b=True)
    gx = b.op("bias_add", [gx, b_ih], name="gates_x_b", axis=1)
    gh = b.op("matmul", [h, w_hh], name="gates_h", transpose_b=True)
    gh = b.op("bias_add", [gh, b_hh], name="gates_h_b", axis=1)
    return gx, gh  # type: ignore[return-value]


def _lstm(b, units, h, c, x, *weights):
    gx, gh = _projections(b, x, h, *weights)
    gates = b.op("add", [gx, gh], name="gates")
    i, f, g, o = b.op("split", [gates], name="gate", axis=1, sizes=(units,) * 4, output_names="ifgo")
    i = b.op("sigmoid", [i], name="i")
    f = b.op("sigmoid", [f], name="f")
    g = b.op("tanh", [g], name="g")
    o = b.op("sigmoid", [o], name="o")
    c_next = b.op("add", [b.op("mul", [f, c], name="f_c"), b.op("mul", [i, g], name="i_g")], name="c_next")
    h_next = b.op("mul", [o, b.op("tanh", [c_next], name="tanh_c")], name="h_next")
    return [h_next, c_next, h_next]


def _gru(b, units, h, x, *weights):
    gx, gh = _projections(b, x, h, *weights)
    xr, xz, xn = b.op("split", [gx], name="gate_x", axis=1, sizes=(units,) * 3, output_names="rzn")
    hr, hz, hn = b.op("split", [gh], name="gate_h", axis=1, sizes=(units,) * 3, output_names="rzn")
    r = b.op("sigmoid", [b.op("add", [xr, hr], name="r_pre")], name="r")
    z = b.op("sigmoid", [b.op("add", [xz, hz], name="z_pre")], name="z")
    n = b.op("tanh", [b.op("add", [xn, b.op("mul", [r, hn], name="r_hn")], name="n_pre")], name="n")
    # (1 - z) * n + z * h, written without a constant
    h_next = b.op("add", [n, b.op("mul", [z, b.op("sub", [h, n], name="h_minus_n")], name="z_delta")],
                  name="h_next")
    return [h_next, h_next]


def _simple_rnn(b, units, h, x, *weights):
    gx, gh = _projections(b, x, h, *weights)
    h_next = b.op("tanh", [b.op("add", [gx, gh], name="pre")], name="h_next")
    return [h_next, h_next]


def cell_body(kind: str, units: int, features: int, dtype: str = "float32", layer: str | None = None) -> Graph:
    """The scan body of one step of `kind` ('lstm', 'gru', 'simple_rnn'); its nodes belong to `layer`."""
    b = GraphBuilder(f"{kind}_cell", layer=layer)
    state = TensorType((BATCH, units), dtype)
    carries = [b.input(name, state) for name in CARRIES[kind]]
    x = b.input("x", TensorType((BATCH, features), dtype))
    rows = GATES[kind] * units
    weights = [
        b.input("weight_ih", TensorType((rows, features), dtype)),
        b.input("weight_hh", TensorType((rows, units), dtype)),
        b.input("bias_ih", TensorType((rows,), dtype)),
        b.input("bias_hh", TensorType((rows,), dtype)),
    ]
    step = {"lstm": _lstm, "gru": _gru, "simple_rnn": _simple_rnn}[kind]
    return b.build(step(b, units, *carries, x, *weights))
