"""NaN and Inf go through every kernel as they go through torch: forward and backward, fused or not.

A diverging run must look diverged: a kernel that turns NaN into 0 (tl.maximum does) hides it. Each
case compares against torch's own modules with `equal_nan=True` (fp32 kernel tolerances)."""

from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F

import fusegraph as fg
from fusegraph.ir import BATCH, GraphBuilder, TensorType
from fusegraph.ir.ops import OPS
from fusegraph.kernels import Target, load_kernel
from fusegraph.kernels import optim as optim_kernels
from fusegraph.nn.activations import ACTIVATIONS
from fusegraph.passes.autodiff import GradEmitter
from tests.conftest import KERNEL_ATOL, KERNEL_RTOL, single_layer

NAN, INF = float("nan"), float("inf")
ROW = [NAN, 1.0, -2.0, 3.0, INF, -INF, 0.0, 2.0]


def close(got: torch.Tensor, want: torch.Tensor) -> None:
    torch.testing.assert_close(got, want, rtol=KERNEL_RTOL, atol=KERNEL_ATOL, equal_nan=True)


def forward_matches(model: fg.Model, x: torch.Tensor, fuse: bool) -> None:
    # NOTE: torch in float64: its vectorized fp32 CPU gelu gives NaN at +inf, its scalar path and the formula inf
    with torch.no_grad():
        close(fg.compile(model, fuse=fuse)(x), model.to_torch().double()(x.double()).float())


@pytest.mark.parametrize("fuse", [True, False])
@pytest.mark.parametrize("activation", [a for a in ACTIVATIONS if a != "linear"])
def test_activations_keep_nan_and_inf(activation, fuse):
    forward_matches(single_layer(fg.Activation(activation), (8,)), torch.tensor([ROW]), fuse)


@pytest.mark.parametrize("fuse", [True, False])
def test_dense_relu_keeps_nan(fuse):
    forward_matches(single_layer(fg.Dense(3, activation="relu"), (8,)), torch.tensor([ROW]), fuse)


@pytest.mark.parametrize("pool", [fg.MaxPool1D(2), fg.AvgPool1D(2), fg.MaxPool1D(3, strides=1, padding="same"),
                                  fg.GlobalAvgPool1D()])
def test_1d_pools_keep_nan_and_inf(pool):
    # windows: (nan, 1) (2, nan) (-inf, 1) (inf, 3): torch's max pool gives nan, nan, 1, inf
    forward_matches(single_layer(pool, (1, 8)), torch.tensor([[[NAN, 1, 2, NAN, -INF, 1, INF, 3]]]), True)


def _poisoned_image() -> torch.Tensor:
    x = torch.randn(2, 1, 6, 6, generator=torch.Generator().manual_seed(0))
    x[0, 0, 1, 1], x[0, 0, 4, 4], x[1, 0, 2, 3] = NAN, INF, -INF
    return x


@pytest.mark.parametrize("fuse", [True, False])
def test_conv_relu_max_pool_keeps_nan(fuse):
    x = fg.Input((1, 6, 6))
    model = fg.Model(x, fg.MaxPool2D(2)(fg.Conv2D(2, 1, activation="relu")(x)))
    model.init(0)
    forward_matches(model, _poisoned_image(), fuse)


def _hand_built(build):
    b = GraphBuilder("hand")
    graph = b.build([build(b)])
    return fg.compile(SimpleNamespace(graph=graph, params={}, output_shape=[]))


@pytest.mark.parametrize("name", [a for a in ACTIVATIONS if a in OPS and "prologue" in OPS[a].traits])
def test_activation_gradients_at_nan_and_inf_are_torchs(name):
    op = OPS[name]
    x = torch.tensor([ROW], requires_grad=True)
    dy = torch.tensor([[1.0, NAN, 2.0, -1.0, 3.0, 1.0, INF, 1.0]])
    # NOTE: element by element, torch's scalar path (its CUDA kernels' rules): its vectorized CPU path gives
    # some a NaN input another gradient (hardtanh: none, where the scalar path passes it)
    module = op.module(op.defaults).double()
    for i in range(x.shape[1]):
        module(x[:, i:i + 1].double()).backward(dy[:, i:i + 1].double())
    # the gradient op the VJP builds, on what it saves (the forward's input or its output)
    b = GraphBuilder("hand")
    forward = b.op(name, [b.input("x", TensorType((BATCH, 8)))], name="y", **op.defaults)
    (dx,) = op.vjp(GradEmitter(b), b.nodes[-1], [b.input("dy", forward.type)], [True])
    cm = fg.compile(SimpleNamespace(graph=b.build([dx]), params={}, output_shape=[]))
    close(cm([x.detach(), dy])[0], x.grad.float())


@pytest.mark.parametrize("ndim", [1, 2])
def test_max_pool_gradient_goes_to_the_last_nan_of_a_window(ndim):
    x = torch.tensor([[[1.0, NAN, 2.0, NAN, 5.0, 1.0, INF, 3.0]]])
    if ndim == 2:
        x = x.reshape(1, 1, 2, 4)
    kernel = (4,) if ndim == 1 else (2, 2)
    model = single_layer(fg.MaxPool1D(4) if ndim == 1 else fg.MaxPool2D(2), tuple(x.shape[1:]))
    leaf = x.clone().requires_grad_(True)
    y = (F.max_pool1d if ndim == 1 else F.max_pool2d)(leaf, kernel)
    dy = torch.arange(1.0, 1.0 + y.numel()).reshape(y.shape)
    y.backward(dy)
    geometry = {k: model.graph.nodes[-1].attrs[k] for k in ("kernel", "stride", "padding")}
    shape = TensorType((BATCH, *x.shape[1:]))
    pooled = TensorType((BATCH, *y.shape[1:]))
    # the unfused rule (reads x) and the saved-position rule (reads the argmax pool's int8 positions)
    unfused = _hand_built(lambda b: b.op(f"max_pool{ndim}d_bwd", [b.input("dy", pooled), b.input("x", shape)],
                                         name="dx", **geometry))
    close(unfused([dy, x])[0], leaf.grad)

    def from_positions(b):
        _, positions = b.op(f"max_pool{ndim}d_argmax", [b.input("x", shape)], name="pool", **geometry)
        return b.op(f"max_pool{ndim}d_bwd_idx", [b.input("dy", pooled), positions], name="dx",
                    input_size=tuple(x.shape[2:]), **geometry)

    close(_hand_built(from_positions)([x, dy])[0], leaf.grad)


@pytest.mark.parametrize("fuse", [True, False])
def test_training_gradients_carry_nan_as_torchs(fuse):
    """One poisoned sample: torch's loss and weight gradients are NaN; so are ours (not a healthy-looking 0)."""
    x = fg.Input((1, 6, 6))
    h = fg.MaxPool2D(2)(fg.Conv2D(2, 3, padding="same", activation="relu")(x))
    model = fg.Model(x, fg.Dense(3)(fg.Flatten()(h)))
    model.init(0)
    feeds, target = _poisoned_image(), torch.tensor([0, 2])
    loss, grads = fg.compile(model, loss="cross_entropy", fuse=fuse).loss_and_grads(feeds, target)
    oracle = model.to_torch()
    expected = F.cross_entropy(oracle(feeds), target)
    expected.backward()
    assert torch.isnan(torch.tensor(loss)) and torch.isnan(expected)
    for name, param in oracle.fusegraph_parameters().items():
        close(grads[name], param.grad)


@pytest.mark.parametrize("amsgrad", [False, True])
def test_adam_step_carries_nan_and_inf_gradients_as_torch(amsgrad):
    start, grad = torch.tensor([1.0, 2.0, 3.0, 4.0]), torch.tensor([NAN, 1.0, INF, -INF])
    reference = torch.nn.Parameter(start.clone())
    torch_optimizer = torch.optim.Adam([reference], lr=0.1, amsgrad=amsgrad)
    ours = fg.optim.Adam(lr=0.1, amsgrad=amsgrad)
    flat, states = start.clone(), [torch.zeros(4) for _ in ours.state]
    kernel = load_kernel(optim_kernels.render(ours))
    for step in (1, 2):  # the second step reads the NaN / Inf state the first one wrote
        reference.grad = grad.clone() if step == 1 else torch.ones(4)
        torch_optimizer.step()
        optim_kernels.launch(kernel, ours, Target("cpu"), flat, reference.grad.clone(), states, step)
        close(flat, reference.detach())
