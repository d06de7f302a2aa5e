"""Random elementwise graphs with gate splits and joins, some feeding a matmul: whatever the fusion
pass makes of them (chains over one gate's elements, producers taken in, computed prologues with
chain values read by the epilogue), the generated kernels compute what the IR interpreter does."""

import torch
from hypothesis import HealthCheck, event, given, settings
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
    compiled_matches_interpreter(*case, batch)


def compiled_matches_interpreter(graph, params: dict, batch: int):
    """Runs `graph` through the whole pipeline and its kernels, checks every output against the IR
    interpreter, and returns the compiled graph."""
    generator = torch.Generator().manual_seed(batch)
    feeds = [torch.randn(v.type.concrete(batch), generator=generator) for v in graph.inputs]
    expected = Interpreter(graph, params).run(feeds)
    fused, _ = run_pipeline(graph)
    ours = Program(fused, Target("cpu"), LaunchCounter()).run(feeds, params)
    for got, want in zip(ours, expected, strict=True):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    return fused


@st.composite
def recurrent_cells(draw):
    """A scan over a random cell: gate tiles of h W^T + b + x_t, then random elementwise ops on gate-wide
    values (tiles and carries) give the new carries and per-step outputs."""
    width, gates, num_carries = draw(st.sampled_from([3, 8])), draw(st.integers(1, 4)), draw(st.integers(1, 2))
    steps = draw(st.integers(1, 4))
    body = GraphBuilder("cell")
    carries = [body.input(f"h{i}", TensorType((BATCH, width))) for i in range(num_carries)]
    x = body.input("x", TensorType((BATCH, gates * width)))
    weight = body.input("w", TensorType((gates * width, width)))
    bias = body.input("b", TensorType((gates * width,)))
    z = body.op("add", [body.op("bias_add", [body.op("matmul", [carries[0], weight], name="zh", transpose_b=True),
                                             bias], name="zb", axis=1), x], name="z")
    pool = list(body.op("split", [z], name="gate", axis=1, sizes=(width,) * gates)) if gates > 1 else [z]
    pool += carries
    for i in range(draw(st.integers(1, 6))):
        op = draw(st.sampled_from(UNARY + BINARY))
        operands = [draw(st.sampled_from(pool)) for _ in range(1 if op in UNARY else 2)]
        pool.append(body.op(op, operands, name=f"e{i}"))
    new_carries = [draw(st.sampled_from(pool[-3:])) for _ in carries]
    per_step = [draw(st.sampled_from(pool))] if draw(st.booleans()) else []
    cell = body.build([*new_carries, *per_step])
    outer = GraphBuilder("fuzz_scan")
    seq = outer.input("seq", TensorType((BATCH, steps, gates * width)))
    weights = [outer.parameter(n, TensorType(s), "zeros") for n, s in (("w", (gates * width, width)), ("b", (gates * width,)))]
    outs = outer.op("scan", [seq, *weights], name="rnn", body=cell, num_carries=num_carries, num_seqs=1,
                    reverse=draw(st.booleans()))
    generator = torch.Generator().manual_seed(steps)
    params = {"w": 0.5 * torch.randn(gates * width, width, generator=generator),
              "b": 0.1 * torch.randn(gates * width, generator=generator)}
    return verify(outer.build(list(outs) if isinstance(outs, tuple) else [outs])), params


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(case=recurrent_cells(), batch=st.integers(1, 5))
def test_persistent_scans_compute_what_the_interpreter_does(case, batch):
    fused = compiled_matches_interpreter(*case, batch)
    (scan,) = [n for n in fused.nodes if n.op == "scan"]
    kernels = scan.attrs["body"].compute_nodes
    event("persistent" if scan.attrs.get("persistent") else "step by step")
    if len(kernels) == 1 and kernels[0].attrs.get("anchor") == "matmul":  # one matmul-anchored kernel per step:
        assert scan.attrs.get("persistent"), scan.attrs["body"]  # the whole loop is one persistent kernel
