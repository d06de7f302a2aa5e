"""Random elementwise graphs with gate splits and joins, some feeding a matmul: whatever the fusion
pass makes of them (chains over one gate's elements, producers taken in, computed prologues with
chain values read by the epilogue), the generated kernels compute what the IR interpreter does."""

import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fusegraph.ir import BATCH, GraphBuilder, Interpreter, TensorType, verify
from fusegraph.kernels import LaunchCounter, Target
from fusegraph.passes import run_pipeline
from fusegraph.runtime.program import Program

GATES, WIDTH = 3, 5
UNARY = ["sigmoid", "tanh", "relu", "neg"]
BINARY = ["add", "sub", "mul"]


@st.composite
def gated_graphs(draw):
    b = GraphBuilder("fuzz")
    full = [b.input(f"f{i}", TensorType((BATCH, GATES * WIDTH))) for i in range(2)]
    gate = [b.input(f"g{i}", TensorType((BATCH, WIDTH))) for i in range(2)]
    names = iter(range(1000))
    for _ in range(draw(st.integers(2, 9))):
        kind = draw(st.sampled_from(["unary", "binary", "split", "concat"]))
        if kind == "split":
            gate += b.op("split", [draw(st.sampled_from(full))], name=f"s{next(names)}", axis=1,
                         sizes=(WIDTH,) * GATES)
        elif kind == "concat":
            parts = [draw(st.sampled_from(gate)) for _ in range(GATES)]
            full.append(b.op("concat", parts, name=f"c{next(names)}", axis=1))
        else:
            pool = draw(st.sampled_from([full, gate]))
            operands = [draw(st.sampled_from(pool))]
            op = draw(st.sampled_from(UNARY if kind == "unary" else BINARY))
            if kind == "binary":
                operands.append(draw(st.sampled_from(pool)))
            pool.append(b.op(op, operands, name=f"e{next(names)}"))
    outputs = [full[-1], gate[-1]]
    if draw(st.booleans()):  # a matmul reading the last full-width value, plus a gate-wide term after it
        weight = b.parameter("w", TensorType((GATES * WIDTH, WIDTH)), "glorot_uniform")
        product = b.op("matmul", [full[-1], weight], name="m")
        outputs.append(b.op("add", [product, gate[-1]], name="m_plus"))
    params = {"w": torch.randn(GATES * WIDTH, WIDTH, generator=torch.Generator().manual_seed(0))}
    return verify(b.build(list(dict.fromkeys(outputs)))), params


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(case=gated_graphs(), batch=st.integers(1, 5))
def test_fused_gated_graphs_compute_what_the_interpreter_does(case, batch):
    graph, params = case
    generator = torch.Generator().manual_seed(batch)
    feeds = [torch.randn(v.type.concrete(batch), generator=generator) for v in graph.inputs]
    expected = Interpreter(graph, params).run(feeds)
    fused, _ = run_pipeline(graph)
    ours = Program(fused, Target("cpu"), LaunchCounter()).run(feeds, params)
    for got, want in zip(ours, expected, strict=True):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
