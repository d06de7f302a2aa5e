"""fg.compile's options: one frozen record, checked when made, kept in one spelling, carried unchanged."""

import dataclasses
import json

import pytest
import torch

import fusegraph as fg
from fusegraph.passes import CompileOptions


def test_each_bad_option_is_one_clear_error():
    cases = [(dict(fuse="yes"), "fuse must be True or False"),
             (dict(device="tpu"), "device must be 'cuda', 'cpu' or None"),
             (dict(loss="hinge"), "unknown loss 'hinge'"),
             (dict(optimizer=fg.optim.SGD(lr=0.1)), "an optimizer needs a loss"),
             (dict(loss="mse", optimizer=torch.optim.SGD), "optimizer must be one of fg.optim's"),
             (dict(cuda_graphs=1), "cuda_graphs must be True or False"),
             (dict(fp32_precision="tf16"), "fp32_precision must be one of ieee, tf32x3, tf32"),
             (dict(memory_format="nhwc"), "memory_format must be torch.contiguous_format or torch.channels_last"),
             (dict(precision="fp8"), "precision must be one of 'fp32', 'bf16' or 'fp16'"),
             (dict(precision="fp16", loss_scale=fg.LossScale()), "loss_scale applies to training in precision='fp16'")]
    for arguments, message in cases:
        with pytest.raises(fg.GraphError, match=message):
            CompileOptions(**arguments)


def test_options_are_kept_in_one_spelling_and_frozen():
    options = CompileOptions(loss="mse", memory_format=torch.channels_last, precision="fp16")
    assert options.memory_format == "channels_last" and options.precision == "float16"
    assert options.loss_scale == fg.LossScale() and options.scales_loss  # GradScaler's defaults, filled in
    assert not CompileOptions(loss="mse", precision="bf16").scales_loss
    assert CompileOptions(precision="fp32").precision is None
    with pytest.raises(dataclasses.FrozenInstanceError):
        options.fuse = False


def test_options_round_trip_through_json():
    options = CompileOptions(loss="cross_entropy", optimizer=fg.optim.Adam(lr=2e-3, betas=(0.8, 0.95)), fuse=False,
                             memory_format="channels_last", precision="fp16", fp32_precision="ieee",
                             loss_scale=fg.LossScale(growth_interval=7), cuda_graphs=False)
    assert CompileOptions.from_data(json.loads(json.dumps(options.to_data()))) == options
    assert CompileOptions.from_data(options.to_data(), device="cpu").device == "cpu"


def test_the_compiled_model_trainer_and_module_hold_the_options_fg_compile_made():
    model = fg.Sequential([fg.Input((4,)), fg.Dense(3, name="dense")])
    trainer = fg.compile(model, loss="mse", optimizer=fg.optim.SGD(lr=0.1), fuse=False)
    assert trainer.options == CompileOptions(loss="mse", optimizer=fg.optim.SGD(lr=0.1), fuse=False)
    assert trainer.optimizer is trainer.options.optimizer
    halves = trainer.to_module()._runner.mode(False)
    assert len(halves.forward.kernels) == 2  # fuse=False reached to_module(): the dense and its bias add apart
    assert len(fg.compile(model).to_module()._runner.mode(False).forward.kernels) == 1
