"""Mixed-precision training (precision="fp16" runs in the interpreter) against torch.autocast (float16, on
the CPU) with torch.amp.GradScaler: losses, the loss scale's trajectory (skipped steps, growth), master
weights, batch-norm running statistics. Tolerance: float16's (tests/conftest.py HALF_TOL, rtol = atol
= 1e-2) on weights and gradients; the losses agree to 1e-3 relative, the loss scale exactly. bf16
needs the GPU (tests/runtime/test_gpu.py); its kernels compile for sm_90 (tests/kernels/test_gpu_compile.py)."""

import pytest
import torch
import torch.nn.functional as F

import fusegraph as fg
from fusegraph.passes.autodiff import autodiff
from fusegraph.passes.mixed_precision import LOSS_SCALE, half_precision
from fusegraph.runtime import training
from tests.conftest import HALF_TOL, training_oracle
from tests.nn.test_batch_norm import with_random_state

RTOL, ATOL = HALF_TOL["float16"]


def bn_cnn() -> fg.Model:
    return with_random_state(fg.Sequential([
        fg.Input((3, 8, 8)), fg.Conv2D(8, 3, padding="same"), fg.BatchNorm2D(), fg.Activation("relu"),
        fg.MaxPool2D(2), fg.Conv2D(8, 3, padding="same"), fg.BatchNorm2D(), fg.Activation("relu"),
        fg.GlobalAvgPool2D(), fg.Dense(10)]))


def batches(count: int, seed: int = 0) -> list[tuple[torch.Tensor, torch.Tensor]]:
    generator = torch.Generator().manual_seed(seed)
    return [(torch.randn(8, 3, 8, 8, generator=generator), torch.randint(0, 10, (8,), generator=generator))
            for _ in range(count)]


def torch_amp_steps(model: fg.Model, torch_optimizer, oracle, scaler: torch.amp.GradScaler, data) -> list[tuple]:
    """(loss, scale after the step) of each autocast + GradScaler step, as torch's AMP recipe writes it."""
    trace = []
    for x, y in data:
        torch_optimizer.zero_grad()
        with torch.autocast("cpu", dtype=torch.float16):
            loss = F.cross_entropy(oracle(x), y)
        scaler.scale(loss).backward()
        scaler.step(torch_optimizer)
        scaler.update()
        trace.append((loss.item(), scaler.get_scale()))
    return trace


def assert_state_is_torch(model: fg.Model, trainer, oracle) -> None:
    """Master weights (float32) within float16's tolerance, the half copy the kernels read is them rounded,
    running statistics and step counts as torch's."""
    for name, param in oracle.fusegraph_parameters().items():
        torch.testing.assert_close(trainer.params[name], param.detach(), rtol=RTOL, atol=ATOL,
                                   msg=lambda m, n=name: f"{n}: {m}")
        assert trainer.params[name].dtype == torch.float32
        assert torch.equal(trainer.casts[name], trainer.params[name].half())
    for module_name, module in oracle.layers.items():
        if isinstance(module, torch.nn.BatchNorm2d):
            for buffer in ("running_mean", "running_var"):
                torch.testing.assert_close(model.params[f"{module_name}.{buffer}"], getattr(module, buffer),
                                           rtol=RTOL, atol=ATOL)
            assert int(model.params[f"{module_name}.num_batches_tracked"]) == int(module.num_batches_tracked)


def test_fp16_training_follows_autocast_and_grad_scaler():
    model = bn_cnn()
    oracle = training_oracle(model)
    trainer = fg.compile(model, loss="cross_entropy", optimizer=fg.optim.SGD(0.1, momentum=0.9), precision="fp16",
                         loss_scale=fg.LossScale(growth_interval=3))
    data = batches(4)
    expected = torch_amp_steps(model, torch.optim.SGD(oracle.parameters(), lr=0.1, momentum=0.9), oracle,
                               torch.amp.GradScaler("cpu", growth_interval=3), data)
    for (x, y), (loss, scale) in zip(data, expected, strict=True):
        assert trainer.train_step(x, y) == pytest.approx(loss, rel=1e-3)
        assert trainer.loss_scale == scale  # 2 ** 16, grown to 2 ** 17 after three steps
    assert trainer.optimizer_steps == 4
    assert_state_is_torch(model, trainer, oracle)
    # the step launches float32's kernels (in half precision) and one more: the check for overflowed gradients
    single = fg.compile(bn_cnn(), loss="cross_entropy", optimizer=fg.optim.SGD(0.1, momentum=0.9))
    single.train_step(*data[0])
    assert trainer.last_launches == single.last_launches + 1


@pytest.mark.filterwarnings("ignore:.*encountered in:RuntimeWarning")  # numpy, computing the interpreter's infs
def test_overflowing_gradients_skip_the_step_and_back_the_scale_off_like_grad_scaler():
    """A loss scale of 2 ** 40 overflows float16's gradients: steps are skipped (weights, optimizer state and
    Adam's step count untouched; the running statistics still move, as in torch's forward) and the scale
    halves until gradients fit, then grows again after each run of `growth_interval` clean steps."""
    model = bn_cnn()
    oracle = training_oracle(model)
    scale = fg.LossScale(init_scale=2.0 ** 40, growth_interval=3)
    trainer = fg.compile(model, loss="cross_entropy", optimizer=fg.optim.Adam(lr=1e-3), precision="fp16",
                         loss_scale=scale)
    # NOTE: 26 steps: 22 overflows halve the scale to 2 ** 18, three clean steps grow it, the next overflows.
    # Step 27 sits on float16's edge: whether torch's CPU autocast conv overflows there depends on the CPU's
    # oneDNN kernels (it does on some machines, not on others), so no step past it is compared
    data = batches(26, seed=1)
    torch_optimizer = torch.optim.Adam(oracle.parameters(), lr=1e-3)
    expected = torch_amp_steps(model, torch_optimizer, oracle,
                               torch.amp.GradScaler("cpu", init_scale=2.0 ** 40, growth_interval=3), data)
    skipped = 0
    for (x, y), (loss, torch_scale) in zip(data, expected, strict=True):
        weights, state = trainer.flat.clone(), [s.clone() for s in trainer.states]
        scale_before = trainer.loss_scale
        assert trainer.train_step(x, y) == pytest.approx(loss, rel=1e-3)
        assert trainer.loss_scale == torch_scale
        if trainer.loss_scale < scale_before:  # this step overflowed
            skipped += 1
            assert torch.equal(trainer.flat, weights) and all(map(torch.equal, trainer.states, state))
    assert skipped == 23 and trainer.optimizer_steps == 26 - skipped == 3
    # Adam's bias correction counts the updates made, as torch's does
    assert {int(state["step"]) for state in torch_optimizer.state.values()} == {trainer.optimizer_steps}
    assert_state_is_torch(model, trainer, oracle)


def assert_fp16_gradients_are_autocasts(model: fg.Model, x: torch.Tensor, y: torch.Tensor, autocast: bool = True):
    """loss_and_grads in fp16: the loss and unscaled float32 gradients of torch's autocast (float16) step
    (without `autocast`: torch's float32 step, within float16's tolerance)."""
    value, grads = fg.compile(model, loss="cross_entropy", precision="fp16").loss_and_grads(x, y)
    oracle = training_oracle(model)
    with torch.autocast("cpu", dtype=torch.float16, enabled=autocast):
        loss = F.cross_entropy(oracle(x), y)
    loss.backward()
    assert value == pytest.approx(loss.item(), rel=1e-3)
    for name, param in oracle.fusegraph_parameters().items():
        assert grads[name].dtype == torch.float32
        torch.testing.assert_close(grads[name], param.grad, rtol=RTOL, atol=ATOL, msg=lambda m, n=name: f"{n}: {m}")


def test_loss_and_grads_are_unscaled_float32_like_autocast():
    (x, y), = batches(1)
    assert_fp16_gradients_are_autocasts(bn_cnn(), x, y)


def test_fp16_inference_matches_autocast_eval():
    """Batch norms folded into the convs from the float32 weights, then rounded: one kernel per block still."""
    model = bn_cnn()
    (x, _), = batches(1)
    compiled = fg.compile(model, precision="fp16")
    assert compiled.kernel_names[0] == "conv2d_bias_add_relu_max_pool2d"
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.float16):
        expected = model.to_torch().eval()(x)
    out = compiled(x)
    assert out.dtype == torch.float16 == expected.dtype
    torch.testing.assert_close(out, expected, rtol=RTOL, atol=ATOL)


def test_the_pass_keeps_losses_statistics_and_loss_targets_in_float32():
    model = fg.Sequential([fg.Input((3, 6, 6)), fg.Conv2D(4, 3), fg.BatchNorm2D(), fg.Flatten(), fg.Dense(2)])
    train = half_precision(autodiff(model.graph, "mse"), "bfloat16", loss_scale=True)
    types = {v.name: v.type.dtype for n in train.nodes for v in n.outputs}
    assert {n.name: types[n.name] for n in train.param_nodes} == {
        LOSS_SCALE: "float32", "conv2d.weight": "bfloat16", "conv2d.bias": "bfloat16",
        "batch_norm2d.weight": "bfloat16", "batch_norm2d.bias": "bfloat16", "batch_norm2d.running_mean": "float32",
        "batch_norm2d.running_var": "float32", "batch_norm2d.num_batches_tracked": "int64",
        "dense.weight": "bfloat16", "dense.bias": "bfloat16"}
    assert [v.type.dtype for v in train.inputs] == ["bfloat16", "float32"]  # the images; the regression target
    norm = next(n for n in train.nodes if n.op == "batch_norm_train")
    assert [v.type.dtype for v in norm.outputs] == ["bfloat16", "float32", "float32", "float32"]
    loss = next(n for n in train.nodes if n.op == "mse")
    assert [v.name for v in loss.inputs][2] == LOSS_SCALE and loss.outputs[0].type.dtype == "float32"
    assert [v.type.dtype for v in train.outputs] == ["float32", *["bfloat16"] * 6, "bfloat16", "float32", "float32"]


def test_a_recurrent_model_trains_in_fp16():
    """The scan's step runs in half precision too (its body retyped with it). torch's CPU LSTM has no float16
    kernel under autocast, so the reference is nn.LSTM in float32, within float16's tolerance."""
    model = fg.Sequential([fg.Input((5, 4)), fg.LSTM(8), fg.Dense(3)])
    model.init(0)
    generator = torch.Generator().manual_seed(2)
    x, y = torch.randn(6, 5, 4, generator=generator), torch.randint(0, 3, (6,), generator=generator)
    assert_fp16_gradients_are_autocasts(model, x, y, autocast=False)


def test_an_interrupted_fp16_step_changes_nothing(monkeypatch):
    """Ctrl-C inside the optimizer's launch: weights, their half copy, optimizer state, the loss scale and the
    step counts are as before, and the next step is the one an uninterrupted trainer takes."""
    model, twin = bn_cnn(), bn_cnn()
    (x1, y1), (x2, y2) = batches(2)
    args = dict(loss="cross_entropy", optimizer=fg.optim.Adam(lr=0.01), precision="fp16",
                loss_scale=fg.LossScale(growth_interval=1))
    trainer, reference = fg.compile(model, **args), fg.compile(twin, **args)
    for t in (trainer, reference):
        t.train_step(x1, y1)
    saved = [t.clone() for t in (trainer.flat, trainer.flat_half, *trainer.states)]
    counts = (trainer.loss_scale, trainer.growth_tracker, trainer.optimizer_steps, trainer.steps_taken)
    real_launch = training.optim_kernels.launch

    def interrupted(kernel, optimizer, target, flat, grads, states, step, **half):
        real_launch(kernel, optimizer, target, flat, grads, states, step, **half)
        half["half_copy"][:5] = 7.0  # as if the interpreter had run some of the update's programs
        raise KeyboardInterrupt

    monkeypatch.setattr(training.optim_kernels, "launch", interrupted)
    with pytest.raises(KeyboardInterrupt):
        trainer.train_step(x2, y2)
    monkeypatch.setattr(training.optim_kernels, "launch", real_launch)
    assert all(map(torch.equal, (trainer.flat, trainer.flat_half, *trainer.states), saved))
    assert (trainer.loss_scale, trainer.growth_tracker, trainer.optimizer_steps, trainer.steps_taken) == counts
    assert float(trainer.runtime_params[LOSS_SCALE]) == trainer.loss_scale
    assert trainer.train_step(x2, y2) == reference.train_step(x2, y2)
    assert torch.equal(trainer.flat, reference.flat) and torch.equal(trainer.flat_half, reference.flat_half)


def test_bad_precision_arguments_are_clear_errors():
    model = bn_cnn()
    with pytest.raises(fg.GraphError, match="precision must be one of 'fp32', 'bf16' or 'fp16', got 'fp8'"):
        fg.compile(model, precision="fp8")
    with pytest.raises(fg.GraphError, match="precision='bf16' runs on the GPU only"):
        fg.compile(model, loss="cross_entropy", precision="bf16", device="cpu")
    with pytest.raises(fg.GraphError, match="loss_scale applies to training in precision='fp16'"):
        fg.compile(model, loss="cross_entropy", precision="bf16", loss_scale=fg.LossScale(), device="cpu")
    with pytest.raises(fg.GraphError, match="loss_scale applies to training in precision='fp16'"):
        fg.compile(model, precision="fp16", loss_scale=fg.LossScale())
    with pytest.raises(fg.GraphError, match="loss_scale must be a fg.LossScale, got float"):
        fg.compile(model, loss="cross_entropy", precision="fp16", loss_scale=1024.0)
    with pytest.raises(fg.GraphError, match="growth_factor must be > 1"):
        fg.LossScale(growth_factor=0.5)
    with pytest.raises(fg.GraphError, match="growth_interval must be a positive integer"):
        fg.LossScale(growth_interval=0)
    with pytest.raises(fg.GraphError, match="init_scale must be a number > 0 that float32 holds"):
        fg.LossScale(init_scale=1e39)


@pytest.mark.usefixtures("small_tiles")
def test_a_split_conv_weight_gradient_sums_its_halves_in_float32():
    """2048 output positions: two programs share each weight-gradient tile (split-K), their partial sums
    meeting in a float32 copy that is rounded to float16 once."""
    model = fg.Sequential([fg.Input((3, 16, 16)), fg.Conv2D(4, 3, padding="same"), fg.Flatten(), fg.Dense(2)])
    model.init(0)
    generator = torch.Generator().manual_seed(4)
    x, y = torch.randn(8, 3, 16, 16, generator=generator), torch.randint(0, 2, (8,), generator=generator)
    assert_fp16_gradients_are_autocasts(model, x, y)


def test_explain_reports_the_precision_and_fusion_savings_alone():
    fp32, fp16 = fg.compile(bn_cnn()).explain(), fg.compile(bn_cnn(), precision="fp16").explain()
    saved = [line for line in fp16.splitlines() if "bytes moved" in line]
    assert "(mixed precision: float16 activations, weights and gradients" in fp16
    assert saved != [line for line in fp32.splitlines() if "bytes moved" in line]  # half the activation bytes
    assert "launches per forward: 3 fused" in fp16 and "mixed precision" not in fp32  # the global pool ends a conv
    trainer = fg.compile(bn_cnn(), loss="cross_entropy", optimizer=fg.optim.SGD(0.1), precision="fp16")
    assert "loss scale 65536)" in trainer.explain()


def test_early_stopping_puts_back_the_best_weights_and_their_half_copy():
    """Restoring the best epoch writes the float32 weights; the half copy the kernels read follows them."""
    model = bn_cnn()
    (x, y), (xv, yv) = batches(2, seed=5)
    trainer = fg.compile(model, loss="cross_entropy", optimizer=fg.optim.SGD(5.0), precision="fp16")
    history = trainer.fit(x, y, epochs=3, batch_size=8, validation_data=(xv, yv), early_stopping=1, verbose=False)
    assert len(history["val_loss"]) < 3 or min(history["val_loss"]) < history["val_loss"][-1]
    fresh = fg.compile(model, precision="fp16")  # the model reads the restored weights through
    assert torch.equal(trainer.predict(xv), fresh(xv))


@pytest.mark.filterwarnings("ignore:.*encountered in:RuntimeWarning")
def test_gradients_that_are_never_finite_warn_once_and_the_scale_never_reaches_zero():
    """An input holding inf: every float16 step overflows whatever the scale. After a run of skipped steps
    one warning names the parameter; the scale bottoms out at float32's smallest normal, not 0."""
    model = fg.Sequential([fg.Input((3,)), fg.Dense(2)])
    model.init(0)
    trainer = fg.compile(model, loss="cross_entropy", optimizer=fg.optim.SGD(lr=0.1), precision="fp16",
                         loss_scale=fg.LossScale(init_scale=2.0 ** -120))
    x, y = torch.tensor([[1.0, float("inf"), 0.0]]), torch.tensor([1])
    with pytest.warns(RuntimeWarning, match="the gradient of dense.weight is not finite at any scale") as caught:
        for _ in range(training.SKIPS_BEFORE_WARNING + 10):
            trainer.train_step(x, y)
    assert len([w for w in caught if "steps in a row were skipped" in str(w.message)]) == 1
    assert trainer.loss_scale == fg.precision.FLOAT32_TINY > 0 and trainer.optimizer_steps == 0
    assert fg.LossScale().update(fg.precision.FLOAT32_TINY, 0, True) == (fg.precision.FLOAT32_TINY, 0)


def test_a_batch_norm_on_raw_features_runs_in_float32_as_under_autocast():
    """Features around 1e5 (beyond float16's 65504) normalised by a batch norm before the first dense:
    autocast runs the batch norm in float32 and the dense in half. So does fusegraph (the input and the
    batch norm's weights stay float32, a cast before the matmul): no overflow, no skipped step, torch's
    losses and loss scale."""
    model = with_random_state(fg.Sequential([fg.Input((4,)), fg.BatchNorm1D(), fg.Dense(3)]))
    oracle = training_oracle(model)
    generator = torch.Generator().manual_seed(2)
    data = [(1e5 + 1e4 * torch.randn(8, 4, generator=generator), torch.randint(0, 3, (8,), generator=generator))
            for _ in range(3)]
    trainer = fg.compile(model, loss="cross_entropy", optimizer=fg.optim.SGD(0.1), precision="fp16")
    types = {v.name: v.type.dtype for n in trainer.train_graph.nodes for v in n.outputs}
    assert types["batch_norm1d.weight"] == "float32" and trainer.train_graph.inputs[0].type.dtype == "float32"
    assert "cast" in [n.op for n in trainer.train_graph.nodes]
    expected = torch_amp_steps(model, torch.optim.SGD(oracle.parameters(), lr=0.1), oracle,
                               torch.amp.GradScaler("cpu"), data)
    for (x, y), (loss, scale) in zip(data, expected, strict=True):
        assert trainer.train_step(x, y) == pytest.approx(loss, rel=1e-3)
        assert trainer.loss_scale == scale == 2.0 ** 16  # nothing overflowed
    assert trainer.optimizer_steps == 3
    assert_state_is_torch(model, trainer, oracle)
