"""Generated kernels read like the IR they run: values, pointers and kernels named from it, the IR as
a comment on top, and no generated name ever shadowing a template's own variable."""

import re

import fusegraph as fg
from tests.conftest import assert_compiled_matches_torch, feeds_for


def test_an_lstm_kernel_reads_like_the_cell():
    compiled = fg.compile(fg.Sequential([fg.Input((3, 2)), fg.LSTM(4, name="lstm")]))
    (source,) = [s for s in compiled.kernels if "def lstm_cell_persistent(" in s]
    assert source.startswith("# every step of scan %lstm.h runs:\n# %gates_h: f32[N,16] = matmul(")
    for line in ("i = _sigmoid(gates_0)", "f_c = f * carry_c", "c_next = f_c + i_g", "h_next = o * tanh_c"):
        assert line in source, line
    assert "def lstm_cell_persistent(\n    x_proj_ptr, weight_hh_ptr, bias_hh_ptr, h_next_ptr, c_next_ptr," in source
    assert not re.search(r"\b(t\d+|in\d+_ptr|out\d+_ptr)\b", source)


def test_equal_layers_generate_equal_kernels_with_arguments_named_for_their_roles():
    """Pointers are x, w, bias, out; values lose their layer prefix: two equal conv layers are one
    kernel text, which Triton compiles once."""
    x = fg.Input((3, 8, 8))
    h = fg.Conv2D(4, 3, padding="same", activation="relu", name="first")(x)
    model = fg.Model(x, fg.Conv2D(4, 3, padding="same", activation="relu", name="second")(h))
    first, second = fg.compile(model).kernels
    assert "(\n    x_ptr, w_ptr, bias_ptr, out_ptr," in first and "bias = tl.load(bias_ptr + cols" in first
    function = first.index("@triton.jit")
    assert first[function:] == second[second.index("@triton.jit"):] and first[:function] != second[:function]


def test_values_named_like_template_variables_stay_apart():
    """Layers named like the templates' own variables (acc, offs, mask, x, w, a, rows) still compute
    torch's numbers: the generated names step around the template's."""
    x = fg.Input((2, 6, 6), name="x")
    h = fg.Conv2D(3, 3, padding="same", activation="gelu", name="acc")(fg.Activation("silu", name="w")(x))
    h = fg.MaxPool2D(2, name="offs")(h)
    h = fg.Dense(4, activation="elu", name="a")(fg.Activation("tanh", name="mask")(fg.Flatten(name="rows")(h)))
    model = fg.Model(x, fg.Activation("sigmoid", name="x_mask")(h))
    compiled = assert_compiled_matches_torch(model, feeds_for(model, 2))
    assert compiled.kernel_names == ["silu_conv2d_bias_add_gelu_max_pool2d", "tanh_matmul_bias_add_elu_sigmoid"]


# constexprs whose value the node decides: their branches are left out when the kernel is rendered
DECIDED_BY_THE_NODE = ("IS_MAX", "FROM_POSITIONS", "WITH_POSITIONS", "LOG", "BCE", "REVERSE", "DW_CL", "FROM_VARIANCE")


def test_every_zoo_kernel_reads_cleanly():
    """Every zoo model's kernels, inference and training: lines within 100 characters (the IR comment
    header too), no placeholder arithmetic (`0 * N`), no line that only renames a value (a loop's carried
    tiles rotating excepted), no branch on a constexpr the node decides."""
    from fusegraph.nn.zoo import LOSSES

    sources = {}
    for name, build in fg.zoo.MODELS.items():
        trainer = fg.compile(build(), loss=LOSSES[name])
        for program in (trainer.program, trainer.train_program):
            sources.update({k.kernel.name: k.kernel.source.source for k in program.kernels})
    assert len(sources) > 40
    for kernel, source in sources.items():
        for line in source.splitlines():
            assert len(line) <= 100, (kernel, line)
            assert "0 * N" not in line, (kernel, line)
            rename = re.fullmatch(r"\s+(\w+) = (\w+)", line)
            assert rename is None or rename.group(2) in (f"next_{rename.group(1)}", "step") or \
                rename.group(1) == "t", (kernel, line)
            assert not re.fullmatch(rf"\s+(el)?if (not )?({'|'.join(DECIDED_BY_THE_NODE)}):", line), (kernel, line)
