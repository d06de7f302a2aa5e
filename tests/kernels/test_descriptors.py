"""TMA tensor descriptors (kernels/descriptors.py), run by Triton's interpreter (tensor_descriptors(True)):
the conv forward and input gradient reading a tap's inputs as a box of pixels shifted (the copy engine's zero
fill as the padding) and the packed filters by box; the matmul's operands by box. Each against torch's own
modules, forward and every gradient (fp32: the suite's kernel tolerances), and each launch seen to take the
descriptor path it was meant to."""

import pytest
import torch

import fusegraph as fg
from fusegraph.kernels import codegen
from fusegraph.kernels.conv import pixel_box
from fusegraph.kernels.descriptors import descriptor
from fusegraph.kernels.target import interpreter_tiles, tensor_descriptors
from tests.conftest import assert_compiled_matches_torch, assert_grads_match_torch, feeds_for, targets_for


@pytest.fixture
def launched(monkeypatch) -> list[tuple[str, dict]]:
    """(kernel name, keyword arguments) of every launch, which still runs."""
    seen = []
    run = codegen.Kernel.__getitem__

    def record(kernel, grid):
        launch = run(kernel, grid)

        def recorded(*args, **kwargs):
            seen.append((kernel.source.name, kwargs))
            return launch(*args, **kwargs)
        return recorded

    monkeypatch.setattr(codegen.Kernel, "__getitem__", record)
    return seen


@pytest.mark.parametrize("batch, height, width, padding", [
    (1, 4, 272, "same"),  # two boxes across a row: the second starts at column 256, its tail past the edge
    (8, 16, 16, "same"),  # boxes of 4 whole images
    (2, 8, 8, "valid"),  # a 'valid' conv's 6 x 6 outputs in 8 x 8 boxes; its input gradient reads past them
])
def test_convs_read_boxes_of_pixels_and_filters(batch, height, width, padding, launched):
    x = fg.Input((16, height, width))
    h = fg.Conv2D(32, 3, padding=padding, activation="relu")(fg.Conv2D(16, 3, padding="same")(x))
    model = fg.Model(x, fg.Conv2D(8, 3, padding="same")(h))
    model.init(0)
    feeds = [f.contiguous(memory_format=torch.channels_last) for f in feeds_for(model, batch)]
    with tensor_descriptors(True), interpreter_tiles("small"):
        assert_compiled_matches_torch(model, feeds, memory_format="channels_last")
        assert_grads_match_torch(model, feeds, targets_for(model, "mse", batch), "mse", memory_format="channels_last")
    forward = [kw for name, kw in launched if name.startswith("conv2d") and "X_DESC" in kw]
    inputs = [kw for name, kw in launched if name.startswith("conv2d_bwd_input") and kw["TAP_MAJOR"]]
    assert forward and all(kw["W_DESC"] for kw in forward)
    assert any(kw["X_DESC"] and kw["BOX_N"] * kw["BOX_H"] * kw["BOX_W"] == kw["BLOCK_M"] for kw in forward)
    assert inputs and all(kw["W_DESC"] for kw in inputs)
    assert any(kw["DY_DESC"] for kw in inputs)


def test_a_strided_conv_keeps_its_input_on_pointers(launched):
    x = fg.Input((16, 8, 8))
    model = fg.Model(x, fg.Conv2D(16, 3, strides=2, padding="same")(x))
    model.init(0)
    feeds = [f.contiguous(memory_format=torch.channels_last) for f in feeds_for(model, 2)]
    with tensor_descriptors(True), interpreter_tiles("small"):
        assert_compiled_matches_torch(model, feeds, memory_format="channels_last")
    (kw,) = [kw for name, kw in launched if name.startswith("conv2d")]
    assert kw["W_DESC"] and not kw["X_DESC"]  # a stride-2 tap is no box of the input


def test_dense_layers_and_an_lstm_read_their_operands_by_box(launched):
    mlp = fg.Sequential([fg.Input((300,)), fg.Dense(264, activation="relu"), fg.Dense(20),
                         fg.Dense(12, activation="softmax")])  # K = 300: a second K block with its tail
    rnn = fg.Sequential([fg.Input((5, 8)), fg.LSTM(16), fg.Dense(4)])
    with tensor_descriptors(True), interpreter_tiles("small"):
        for model, batch in ((mlp, 300), (rnn, 6)):
            model.init(0)
            feeds = feeds_for(model, batch)
            assert_compiled_matches_torch(model, feeds)
            assert_grads_match_torch(model, feeds, targets_for(model, "mse", batch), "mse")
    matmuls = [(name, kw) for name, kw in launched if name.startswith("matmul")]
    assert {name.split("_")[1] for name, _ in matmuls} >= {"tn", "bias", "bwd"}  # x^T dy, forward, dy W
    assert all(kw["A_DESC"] and kw["B_DESC"] for _, kw in matmuls)


def test_the_pixel_box_tiles_maps_without_waste_or_declines():
    assert pixel_box(32, 56, 56, 128) == (2, 8, 8)  # 56 = 7 x 8 both ways: no pixel computed twice
    assert pixel_box(128, 14, 14, 128) == (32, 2, 2)  # 14 = 7 x 2: boxes of 32 images' 2 x 2 pixels
    assert pixel_box(3, 14, 14, 128) is None  # 588 pixels: every such box computes 768 or more, rows 640
    assert pixel_box(1, 4, 272, 1024) == (1, 4, 256)  # never over the copy engine's 256 a side


def test_what_the_copy_engine_cannot_address_gets_no_descriptor():
    x = torch.zeros(2, 6, 3)
    assert descriptor(x, (2, 6, 3), (18, 3, 1), (1, 8, 4)) is None  # 12-byte rows
    assert descriptor(x[:, :, 1:], (2, 6, 2), (18, 3, 1), (1, 8, 2)) is None  # base off its 16 bytes
    y = torch.zeros(4, 8)
    assert descriptor(y, (4, 8), (8, 1), (4, 512)) is None  # a box side over 256
    assert descriptor(y, (4, 8), (8, 1), (4, 8)) is not None
