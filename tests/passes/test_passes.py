"""Passes: golden IR for the RNN projection hoist and for fusion; fusion decisions and their reasons."""

import torch

import fusegraph as fg
from fusegraph.ir import BATCH, GraphBuilder, Interpreter, TensorType, verify
from fusegraph.passes import fuse_with_report, hoist_rnn_projections


def test_hoist_golden():
    model = fg.Sequential([fg.Input((3, 2)), fg.SimpleRNN(4, name="rnn")])
    hoisted = hoist_rnn_projections(model.graph)
    text = str(hoisted)
    assert "%rnn.x_proj: f32[N,3,4] = matmul(%input, %rnn.weight_ih, transpose_b=True)" in text
    assert "%rnn.x_proj_bias: f32[N,3,4] = bias_add(%rnn.x_proj, %rnn.bias_ih, axis=2)" in text
    assert "scan(%rnn.x_proj_bias, %rnn.weight_hh, %rnn.bias_hh," in text
    assert "graph simple_rnn_cell(%h: f32[N,4], %x_proj: f32[N,4], %weight_hh: f32[4,4], %bias_hh: f32[4])" in text
    assert "gates_x" not in text  # the step projection left the loop
    x = torch.randn(2, 3, 2)
    torch.testing.assert_close(Interpreter(hoisted, model.params).run([x])[0], model.reference(x))


def test_fuse_golden_conv_block():
    model = fg.Sequential([fg.Input((1, 6, 6), name="x"), fg.Conv2D(2, 3, activation="relu", name="c"),
                           fg.MaxPool2D(2, name="p")], name="block")
    fused, decisions = fuse_with_report(model.graph)
    assert str(fused) == "\n".join([
        "graph block(%x: f32[N,1,6,6]) {",
        "  %c.weight: f32[2,1,3,3] = parameter(init=he_normal, trainable=True)",
        "  %c.bias: f32[2] = parameter(init=zeros, trainable=True)",
        "  %p: f32[N,2,2,2] = fused(%x, %c.weight, %c.bias, anchor=conv2d, "
        "kernel=conv2d_bias_add_relu_max_pool2d, pattern=anchor_epilogue) "
        "graph conv2d_bias_add_relu_max_pool2d(%x: f32[N,1,6,6], %c.weight: f32[2,1,3,3], %c.bias: f32[2]) {",
        "    %c.conv: f32[N,2,4,4] = conv2d(%x, %c.weight, stride=(1, 1), padding=((0, 0), (0, 0)), dilation=(1, 1))",
        "    %c.bias_add: f32[N,2,4,4] = bias_add(%c.conv, %c.bias, axis=1)",
        "    %c: f32[N,2,4,4] = relu(%c.bias_add)",
        "    %p: f32[N,2,2,2] = max_pool2d(%c, kernel=(2, 2), stride=(2, 2), padding=((0, 0), (0, 0)))",
        "    return %p",
        "  }",
        "  return %p",
        "}",
    ])
    assert [d.fused for d in decisions] == [True]


def test_two_consumers_stop_the_pool_and_say_why():
    x = fg.Input((1, 6, 6))
    h = fg.Conv2D(2, 3, activation="relu", name="c")(x)
    model = fg.Model(x, [fg.MaxPool2D(2, name="p")(h), fg.Flatten(name="f")(h)])
    fused, decisions = fuse_with_report(model.graph)
    refused = [d for d in decisions if not d.fused]
    assert any(d.nodes == ("p",) and "other consumers" in d.reason for d in refused)
    kinds = [n.attrs["kernel"] if n.op == "fused" else n.op for n in fused.compute_nodes]
    assert kinds == ["conv2d_bias_add_relu", "max_pool2d", "reshape"]


def test_elementwise_chain_is_one_node_and_stores_escaping_values():
    b = GraphBuilder("chain")
    x = b.input("x", TensorType((BATCH, 5)))
    y = b.input("y", TensorType((BATCH, 5)))
    s = b.op("sigmoid", [x], name="s")
    t = b.op("mul", [s, y], name="t")
    u = b.op("tanh", [t], name="u")
    graph = verify(b.build([u, s]))
    fused, _ = fuse_with_report(graph)
    (node,) = fused.compute_nodes
    assert node.op == "fused" and node.attrs["anchor"] == "pointwise"
    assert [v.name for v in node.outputs] == ["s", "u"]


def test_fusion_refuses_what_would_make_a_cycle():
    b = GraphBuilder("cyclic")
    x = b.input("x", TensorType((BATCH, 4)))
    w = b.parameter("w", TensorType((4, 4)), "zeros")
    m = b.op("matmul", [x, w], name="m")
    r = b.op("relu", [m], name="r")
    m2 = b.op("matmul", [r, w], name="m2")  # depends on the group ...
    out = b.op("add", [r, m2], name="out")  # ... so joining `out` to m's group would loop
    fused, decisions = fuse_with_report(verify(b.build([out])))
    assert any("cycle" in d.reason for d in decisions if not d.fused)
    verify(fused)


def test_backward_scans_read_sequences_instead_of_handing_them_back():
    """autodiff's backward scan returns x_t and h_(t-1) for the weight gradients; stacked, they are the
    input sequences: the pass drops them (no copy per step) and the projections of both leave the loop."""
    from fusegraph.passes.autodiff import autodiff
    from fusegraph.passes.eliminate_dead_code import eliminate_dead_code
    from fusegraph.passes.forward_scan_passthroughs import forward_scan_passthroughs

    model = fg.Sequential([fg.Input((5, 3)), fg.LSTM(4, name="lstm"), fg.Dense(1)])
    train = eliminate_dead_code(autodiff(model.graph, "mse"))
    backward = next(n for n in train.nodes if n.op == "scan" and n.attrs.get("reverse"))
    steps_in = {v.name for v in backward.attrs["body"].inputs}
    assert steps_in & {v.name for v in backward.attrs["body"].outputs}  # handed back before the pass
    rewritten = forward_scan_passthroughs(train)
    backward = next(n for n in rewritten.nodes if n.op == "scan" and n.attrs.get("reverse"))
    assert not steps_in & {v.name for v in backward.attrs["body"].outputs}
    hoisted = next(n for n in hoist_rnn_projections(rewritten).nodes if n.op == "scan" and n.attrs.get("reverse"))
    assert not any(n.op == "matmul" and n.inputs[0].name.startswith("in_") for n in hoisted.attrs["body"].nodes)
    feeds = [torch.randn(2, 5, 3), torch.randn(2, 1)]
    expected = Interpreter(train, model.params).run(feeds)
    for ours, theirs in zip(Interpreter(rewritten, model.params).run(feeds), expected):
        torch.testing.assert_close(ours, theirs)


def _gated_cell(b: GraphBuilder, width: int):
    """An LSTM-like cell from primitives: x_proj + h_proj split into 4 gates, c_next, and the gates
    joined back (the shape of a backward step's cell gradient)."""
    x_proj = b.input("x_proj", TensorType((BATCH, 4 * width)))
    h_proj = b.input("h_proj", TensorType((BATCH, 4 * width)))
    c = b.input("c", TensorType((BATCH, width)))
    gates = b.op("add", [x_proj, h_proj], name="gates")
    i, f, g, o = b.op("split", [gates], name="gate", axis=1, sizes=(width,) * 4)
    i, f, o = (b.op("sigmoid", [v], name=v.name + "_s") for v in (i, f, o))
    g = b.op("tanh", [g], name="g_t")
    c_next = b.op("add", [b.op("mul", [f, c], name="fc"), b.op("mul", [i, g], name="ig")], name="c_next")
    return c_next, b.op("concat", [b.op("mul", [o, c_next], name="h"), i, f, g], name="joined", axis=1)


def test_a_chain_split_into_gates_and_joined_back_is_one_kernel():
    """The cell gradient of a backward LSTM step: add, split into 4 gates, gate-wide math, concat."""
    b = GraphBuilder("gated")
    graph = verify(b.build(list(_gated_cell(b, 3))))
    fused, decisions = fuse_with_report(graph)
    (kernel,) = [n for n in fused.compute_nodes]
    assert kernel.op == "fused" and kernel.attrs["anchor"] == "pointwise", [d.reason for d in decisions]
    feeds = [torch.randn(4, 12), torch.randn(4, 12), torch.randn(4, 3)]
    from fusegraph.kernels import Target, generate

    outputs = [torch.empty(4, 3), torch.empty(4, 12)]
    generate(kernel, Target("cpu")).run(feeds, outputs)
    for ours, theirs in zip(outputs, Interpreter(graph, {}).run(feeds)):
        torch.testing.assert_close(ours, theirs)


def test_a_gated_chain_feeding_a_matmul_is_computed_in_its_k_loop():
    """dh = dz W with dz made by the gated chain: one kernel, which also stores the chain's values used
    elsewhere; 300 output columns make two column blocks, of which only the first stores them."""
    b = GraphBuilder("cell_grad")
    c_next, dz = _gated_cell(b, 10)
    dh = b.op("matmul", [dz, b.parameter("w", TensorType((40, 300)), "glorot_uniform")], name="dh")
    graph = verify(b.build([dh, c_next, dz]))
    fused, decisions = fuse_with_report(graph)
    (kernel,) = [n for n in fused.compute_nodes if n.op != "parameter"]
    assert kernel.attrs["anchor"] == "matmul" and decisions[-1].pattern == kernel.attrs["pattern"] == "computed_prologue"
    from fusegraph.kernels import Target, generate

    params = {"w": torch.randn(40, 300)}
    feeds = [torch.randn(7, 40), torch.randn(7, 40), torch.randn(7, 10)]
    outputs = [torch.full(v.type.concrete(7), float("nan")) for v in kernel.outputs]
    values = {"x_proj": feeds[0], "h_proj": feeds[1], "c": feeds[2], "w": params["w"]}
    generate(kernel, Target("cpu")).run([values[v.name] for v in kernel.inputs], outputs)
    expected = dict(zip((v.name for v in graph.outputs), Interpreter(graph, params).run(feeds)))
    for value, ours in zip(kernel.outputs, outputs):
        torch.testing.assert_close(ours, expected[value.name], rtol=1e-5, atol=1e-5)


def test_a_chain_takes_in_elementwise_producers_only_it_reads():
    """c = sigmoid(x) * tanh(y): the tanh is made from an input the chain does not make, beside it."""
    b = GraphBuilder("siblings")
    x = b.input("x", TensorType((BATCH, 5)))
    y = b.input("y", TensorType((BATCH, 5)))
    c = b.op("mul", [b.op("sigmoid", [x], name="s"), b.op("tanh", [y], name="t")], name="c")
    graph = verify(b.build([c]))
    fused, _ = fuse_with_report(graph)
    (node,) = fused.compute_nodes
    assert node.op == "fused" and [m.op for m in node.attrs["body"].compute_nodes] == ["sigmoid", "tanh", "mul"]


def test_narrow_scans_become_persistent_and_drop_the_steps_nobody_reads():
    from fusegraph.passes import run_pipeline

    model = fg.zoo.lstm_classifier(vocab_size=50, seq_len=5, embed_dim=4, units=6)
    graph, decisions = run_pipeline(model.graph)
    (scan,) = [n for n in graph.nodes if n.op == "scan"]
    assert scan.attrs["persistent"] and scan.attrs["kernel"] == "lstm_cell_persistent"
    assert [v.name for v in scan.outputs] == ["lstm.h", "lstm.c"]  # the unread h sequence is gone
    (decision,) = [d for d in decisions if d.kernel == "persistent scan"]
    assert decision.fused and decision.nodes == ("lstm.h",)
    tokens = torch.randint(0, 50, (3, 5))
    torch.testing.assert_close(Interpreter(graph, model.params).run([tokens])[0], model.reference(tokens))


def test_scans_that_cannot_be_persistent_say_why():
    from fusegraph.kernels.scan import MAX_WIDTH
    from fusegraph.passes import CompileOptions, run_pipeline
    from fusegraph.passes.persistent_scans import blocker

    wide = fg.Sequential([fg.Input((3, 2)), fg.GRU(MAX_WIDTH["float32"] + 1, name="gru")])
    graph, decisions = run_pipeline(wide.graph)
    (scan,) = [n for n in graph.nodes if n.op == "scan"]
    assert "persistent" not in scan.attrs
    (decision,) = [d for d in decisions if d.kernel == "persistent scan"]
    assert not decision.fused and f"33 columns is over {MAX_WIDTH['float32']}" in decision.reason
    (unfused,) = [n for n in run_pipeline(wide.graph, CompileOptions(fuse=False))[0].nodes if n.op == "scan"]
    assert "kernels, not one matmul-anchored kernel" in blocker(unfused)


def test_backward_scans_are_persistent_too_once_dx_leaves_the_loop():
    from fusegraph.passes import run_pipeline
    from fusegraph.passes.autodiff import autodiff

    x = fg.Input((3, 2))
    model = fg.Model(x, fg.GRU(4, name="top")(fg.GRU(4, return_sequences=True, name="bottom")(x)))
    train, _ = run_pipeline(autodiff(model.graph, "mse"))
    backward = [n for n in train.nodes if n.op == "scan" and n.attrs.get("init_carries")]
    assert len(backward) == 2 and all(n.role.backward and n.attrs["kernel"] == "d_gru_cell_persistent" for n in backward)
    # the top layer's input gradient (dz_t W_ih) is one matmul after its backward loop, not one per step
    top = next(n for n in backward if n.layer == "top")
    assert [n.op for n in top.attrs["body"].compute_nodes] == ["fused"]
    assert any(n.op == "matmul" and n.layer == "top" and n.inputs[0].name in {v.name for v in top.outputs}
               for n in train.nodes)


def test_the_pipeline_runs_alone_in_a_fresh_process():
    """Passes ask the kernel templates' checks (a softmax epilogue's row) without importing kernels/ by name:
    the first question loads them, even when nothing but the pipeline was imported."""
    import subprocess
    import sys

    script = ("import fusegraph as fg\nfrom fusegraph.passes import run_pipeline\n"
              "graph, decisions = run_pipeline(fg.zoo.lenet().graph)\n"
              "print([d.kernel for d in decisions if d.fused and 'softmax' in d.kernel])\n")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "matmul_bias_add_softmax" in done.stdout
