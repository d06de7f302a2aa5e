"""fg.from_torch on torch nets written here (never through to_torch()): the Model computes what the net
computes (the IR interpreter, the compiled kernels and the Model's own to_torch(), fp32: rtol 1e-4,
atol 1e-5), its gradients are torch.autograd's, training steps land where torch.optim's do, and every
construct it does not support is one clear GraphError naming it."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import fusegraph as fg
from tests.conftest import KERNEL_ATOL, KERNEL_RTOL


def assert_computes_the_same(net: nn.Module, model: fg.Model, *xs: torch.Tensor) -> None:
    with torch.no_grad():
        expected = net(*xs)
        for got in (model.reference(*xs), fg.compile(model)(list(xs)), model.to_torch()(*xs)):
            torch.testing.assert_close(got, expected, rtol=KERNEL_RTOL, atol=KERNEL_ATOL)


class ModuleCNN(nn.Module):
    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 6, 3, padding=1), nn.BatchNorm2d(6), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(6, 6, 3, padding="same", dilation=1), nn.LeakyReLU(0.2), nn.AvgPool2d(2, stride=1),
            nn.Conv2d(6, 4, (3, 2), stride=(1, 2), padding=(1, 0), bias=False), nn.ELU(alpha=0.7), nn.GELU(),
            nn.SiLU(), nn.Tanh(), nn.Sigmoid())
        self.pool = nn.AdaptiveAvgPool2d((1, 1))
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(4, 8), nn.Dropout(0.25), nn.Identity(), nn.Linear(8, 5),
                                  nn.LogSoftmax(dim=1))

    def forward(self, x):
        return self.head(self.pool(self.features(x)))


class FunctionalCNN(nn.Module):
    """Functions and tensor methods, parameters read with get_attr, a residual and a concatenation."""

    def __init__(self):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(4, 3, 3, 3) * 0.3)
        self.bias = nn.Parameter(torch.randn(4) * 0.1)
        self.conv = nn.Conv2d(4, 4, 3, padding=1)
        self.side = nn.Conv2d(4, 2, 1)
        self.fc_weight = nn.Parameter(torch.randn(3, 60) * 0.2)

    def forward(self, x):
        h = F.relu(F.conv2d(x, self.weight, self.bias, padding=1))
        h = h + self.conv(h).tanh()
        h = torch.cat([F.silu(h), F.gelu(self.side(h))], dim=1)
        h = F.avg_pool2d(F.max_pool2d(h, 2), 3, stride=1, padding=1, count_include_pad=False)
        wide = F.elu(h, alpha=0.5).view(h.size(0), -1)
        pooled = torch.sigmoid(h.mean((2, 3)))
        logits = F.linear(F.dropout(torch.cat((wide, pooled), 1), 0.1, training=self.training), self.fc_weight)
        return F.softmax(logits, dim=-1)


class SequenceNet(nn.Module):
    """Conv1d to a stacked bidirectional LSTM through a permute, back through a transpose and a pool."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv1d(2, 4, 3, padding=1)
        self.pool = nn.MaxPool1d(2)
        self.lstm = nn.LSTM(4, 3, num_layers=2, batch_first=True, bidirectional=True)
        self.avg = nn.AdaptiveAvgPool1d(1)
        self.out = nn.Linear(6, 2)

    def forward(self, x):
        h = self.pool(F.relu(self.conv(x))).permute(0, 2, 1)
        seq, _ = self.lstm(h)
        return self.out(torch.flatten(self.avg(seq.transpose(1, 2)), 1))


class RestOfTheList(nn.Module):
    """The supported constructs the nets above do not use."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv1d(2, 4, 3, padding="same")
        self.norm = nn.BatchNorm1d(4)
        self.pool = nn.AvgPool1d(2)
        self.a = nn.Linear(16, 6)
        self.b = nn.Linear(16, 6)
        self.norm_features = nn.BatchNorm1d(6)
        self.softmax = nn.Softmax(dim=-1)

    def forward(self, x):
        h = F.leaky_relu(self.pool(self.norm(self.conv(x))), 0.1)
        h = h.reshape(h.size(0), -1)
        return self.softmax(self.norm_features(torch.add(self.a(h), self.b(h))))


class LastStepNets(nn.Module):
    """The last step of each RNN kind, read the ways torch code reads it."""

    def __init__(self, frozen: bool):
        super().__init__()
        self.embed = nn.Embedding(11, 4)
        self.embed.weight.requires_grad_(not frozen)
        self.lstm = nn.LSTM(4, 5, batch_first=True)
        self.gru = nn.GRU(4, 5, batch_first=True, num_layers=2)
        self.rnn = nn.RNN(4, 5, batch_first=True)
        self.head = nn.Linear(15, 3)

    def forward(self, ids):
        x = self.embed(ids)
        out, (h, c) = self.lstm(x)
        _, h_gru = self.gru(x)
        rnn_out, _ = self.rnn(x)
        return self.head(torch.cat([out[:, -1], h_gru[-1], rnn_out[:, -1, :]], dim=1))


@pytest.fixture(params=["fx", "export"])
def tracer(request, monkeypatch):
    """torch.fx, or torch.export as from_torch falls back to where torch.fx cannot trace."""
    if request.param == "export":
        def untraceable(module):
            raise torch.fx.proxy.TraceError("as if this forward branched on a shape")

        monkeypatch.setattr(torch.fx, "symbolic_trace", untraceable)
    return request.param


@pytest.mark.parametrize("build,shape", [(ModuleCNN, (3, 3, 8, 8)), (FunctionalCNN, (2, 3, 6, 6)),
                                         (SequenceNet, (3, 2, 8)), (RestOfTheList, (3, 2, 8))],
                         ids=["modules", "functions", "sequence", "rest"])
def test_the_model_computes_what_the_net_computes(build, shape, tracer):
    torch.manual_seed(0)
    net = build().eval()
    x = torch.randn(shape)
    model = fg.from_torch(net, torch.randn(shape))  # any batch size afterwards: the batch is free
    assert_computes_the_same(net, model, x)


class ShapeBranch(nn.Module):
    """torch.fx cannot trace a branch on a shape; torch.export can (and keeps the batch free)."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.head = nn.Linear(64, 2)

    def forward(self, x):
        h = F.max_pool2d(self.conv(x), 2)
        if h.shape[1] > 1:
            h = torch.tanh(h)
        return self.head(h.view(h.size(0), -1))


def test_a_forward_torch_fx_cannot_trace_comes_through_torch_export():
    torch.manual_seed(8)
    net = ShapeBranch().eval()
    with pytest.raises(torch.fx.proxy.TraceError):
        torch.fx.symbolic_trace(net)
    model = fg.from_torch(net, torch.randn(3, 3, 8, 8))
    assert_computes_the_same(net, model, torch.randn(5, 3, 8, 8))
    assert set(model.torch_names.values()) == set(net.state_dict())


@pytest.mark.parametrize("frozen", [False, True])
def test_recurrent_last_steps_and_embeddings(frozen, tracer):
    torch.manual_seed(1)
    net = LastStepNets(frozen).eval()
    ids = torch.randint(0, 11, (3, 6))
    model = fg.from_torch(net, ids)
    assert_computes_the_same(net, model, ids)
    trainable = {model.torch_names[n.name] for n in model.graph.param_nodes if n.attrs["trainable"]}
    assert ("embed.weight" in trainable) is not frozen


class BothDirections(nn.Module):
    """The usual bidirectional classifier: the last layer's two final states, concatenated."""

    def __init__(self, cell):
        super().__init__()
        self.rnn = cell(3, 4, batch_first=True, bidirectional=True, num_layers=2)
        self.head = nn.Linear(8, 2)
        self.lstm = cell is nn.LSTM  # NOTE: decided here, not on the traced results

    def forward(self, x):
        _, state = self.rnn(x)
        h = state[0] if self.lstm else state
        return self.head(torch.cat((h[-2], h[-1]), dim=1))


@pytest.mark.parametrize("cell", [nn.LSTM, nn.GRU])
def test_both_directions_final_states(cell, tracer):
    torch.manual_seed(7)
    net = BothDirections(cell).eval()
    x = torch.randn(3, 5, 3)
    assert_computes_the_same(net, fg.from_torch(net, x), x)


def test_weights_keep_their_torch_names_and_the_net_is_not_changed():
    torch.manual_seed(2)
    net = ModuleCNN().train()  # a training batch norm moves its statistics when run: from_torch must not run it
    before = {k: v.clone() for k, v in net.state_dict().items()}
    model = fg.from_torch(net, torch.randn(2, 3, 8, 8))
    after = net.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert set(model.torch_names.values()) == set(after)  # every weight and buffer, named as torch names it
    for ours, theirs in model.torch_names.items():
        assert torch.equal(model.params[ours], after[theirs])


def test_gradients_and_training_steps_are_torchs():
    """The net in train mode (batch statistics, dropout off so both sides are deterministic)."""
    torch.manual_seed(3)
    net = ModuleCNN()
    net.head[2].p = 0.0
    net.train()
    model = fg.from_torch(net, torch.randn(4, 3, 8, 8))
    generator = torch.Generator().manual_seed(4)
    batches = [(torch.randn(4, 3, 8, 8, generator=generator), torch.randint(0, 5, (4,), generator=generator))
               for _ in range(3)]
    value, grads = fg.compile(model, loss="cross_entropy").loss_and_grads(*batches[0])
    loss = F.nll_loss(net(batches[0][0]), batches[0][1])  # the net ends in log_softmax
    loss.backward()
    assert value == pytest.approx(loss.item(), rel=1e-5)
    parameters = dict(net.named_parameters())
    for ours, grad in grads.items():
        torch.testing.assert_close(grad, parameters[model.torch_names[ours]].grad, rtol=1e-4, atol=1e-5)
    trainer = fg.compile(model, loss="cross_entropy", optimizer=fg.optim.SGD(0.1, momentum=0.9))
    optimizer = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9)
    # the net back to its starting state (the gradient check ran a training forward: its batch norm moved)
    net.load_state_dict({theirs: model.params[ours] for ours, theirs in model.torch_names.items()})
    for x, y in batches:
        trainer.train_step(x, y)
        optimizer.zero_grad()
        F.nll_loss(net(x), y).backward()
        optimizer.step()
    state = net.state_dict()
    for ours, theirs in model.torch_names.items():
        torch.testing.assert_close(model.params[ours].to(state[theirs].dtype), state[theirs], rtol=1e-4, atol=1e-5)


class Wrap(nn.Module):
    """A net from a forward function and the modules it uses."""

    def __init__(self, forward, **modules):
        super().__init__()
        self.fn = forward
        for name, module in modules.items():
            self.add_module(name, module)

    def forward(self, x):
        return self.fn(self, x)


class WithState(nn.Module):
    def __init__(self):
        super().__init__()
        self.m = nn.LSTM(3, 3, batch_first=True)
        self.register_buffer("h0", torch.zeros(1, 1, 3))

    def forward(self, x):
        return self.m(x, (self.h0, self.h0))[0]


def _branchy(self, x):
    if x.sum() > 0:  # data-dependent control flow
        return x
    return -x


def _lstm_both(self, x):
    out, (h, _) = self.m(x)
    return torch.cat([out.flatten(1), h[-1]], dim=1)


UNSUPPORTED = [
    ("padding mode", Wrap(lambda s, x: s.m(x), m=nn.Conv2d(4, 4, 3, padding=1, padding_mode="reflect")), (1, 4, 5, 5),
     "has padding_mode='reflect'"),
    ("pool indices", Wrap(lambda s, x: s.m(x)[0], m=nn.MaxPool2d(2, return_indices=True)), (1, 2, 4, 4),
     "has return_indices=True"),
    ("seq first", Wrap(lambda s, x: s.m(x)[0], m=nn.LSTM(3, 4)), (2, 5, 3), "has batch_first=False"),
    ("projection", Wrap(lambda s, x: s.m(x)[0], m=nn.LSTM(3, 4, batch_first=True, proj_size=2)), (2, 5, 3),
     "has proj_size=2"),
    ("bidirectional h_n", Wrap(lambda s, x: s.m(x)[1][-1], m=nn.GRU(3, 4, batch_first=True, bidirectional=True)),
     (2, 5, 3), "reads the one direction of the RNN at 'm'; supported: .*torch.cat\\(\\(h_n\\[-2\\], h_n\\[-1\\]\\)"),
    ("directions swapped", Wrap(lambda s, x: torch.cat((s.m(x)[1][-1], s.m(x)[1][-2]), 1),
                                m=nn.GRU(3, 4, batch_first=True, bidirectional=True)), (2, 5, 3),
     "concatenates single directions of an RNN's final state"),
    ("both uses", Wrap(_lstm_both, m=nn.LSTM(3, 4, batch_first=True)), (2, 5, 3),
     "read both as its whole output sequence and as its last step"),
    ("initial state", WithState(), (1, 5, 3),
     "module 'm' \\(LSTM\\) is given an initial state"),
    ("module", Wrap(lambda s, x: s.m(x), m=nn.GroupNorm(2, 4)), (2, 4, 3),
     "module 'm' \\(GroupNorm\\) is not supported .*supported: AdaptiveAvgPool1d, "),
    ("function", Wrap(lambda s, x: torch.exp(x)), (2, 4), "torch.exp is not supported .*supported: F.conv1d"),
    ("control flow", Wrap(_branchy), (2, 4), "neither torch.fx nor torch.export can trace Wrap \\(torch.fx: "
     "TraceError: .*; torch.export: .*Control flow that depends on tensor values cannot be traced"),
    ("reshape", Wrap(lambda s, x: x.view(-1, 3)), (2, 4, 3), "reshapes to \\(-1, 3\\); .*keeping the batch first"),
    ("constant", Wrap(lambda s, x: x + 1.0), (2, 4), "adds a constant"),
    ("softmax dim", Wrap(lambda s, x: F.softmax(x, dim=1)), (2, 3, 4), "takes dim=1; fusegraph's softmax runs over"),
    ("shared statistics", Wrap(lambda s, x: s.m(s.m(x)), m=nn.BatchNorm1d(4)), (2, 4),
     "uses the buffer 'm.running_mean' a second time"),
    ("mean over time", Wrap(lambda s, x: x.mean(1)), (2, 3, 4), "averages over dims 1"),
    ("scaled", Wrap(lambda s, x: x * 2.0), (2, 4), "multiplies by a constant"),
    ("broadcast product", Wrap(lambda s, x: x * x[:, :1]), (2, 3, 4), "indexes a tensor"),
]


@pytest.mark.parametrize("view", [lambda x: x.view(x.size(0), 3, 4), lambda x: x.reshape(-1, 2, 6),
                                  lambda x: x.view(x.size(0), 2, -1).transpose(1, 2)],
                         ids=["sizes", "batch -1", "channel groups swapped"])
def test_a_view_keeping_the_batch_first_is_a_reshape(view):
    x = torch.randn(2, 4, 3)
    model = fg.from_torch(Wrap(lambda s, t: view(t)), x)
    torch.testing.assert_close(fg.compile(model)(x), view(x))


@pytest.mark.filterwarnings("ignore:LSTM with projections:UserWarning")  # torch's, running the example
@pytest.mark.parametrize("net,shape,message", [u[1:] for u in UNSUPPORTED], ids=[u[0] for u in UNSUPPORTED])
def test_each_unsupported_construct_is_one_clear_error(net, shape, message):
    with pytest.raises(fg.GraphError, match=f"(?s)^from_torch: .*{message}"):
        fg.from_torch(net, torch.randn(shape))


def test_bad_arguments_are_clear_errors():
    with pytest.raises(fg.GraphError, match="from_torch takes a torch.nn.Module, got Sequential"):
        fg.from_torch(fg.Sequential([fg.Input((2,)), fg.Dense(2)]), torch.randn(1, 2))
    with pytest.raises(fg.GraphError, match="example_inputs must be a tensor or a list of tensors"):
        fg.from_torch(nn.Linear(2, 2), [])
    with pytest.raises(fg.GraphError, match="fails on the example inputs: RuntimeError"):
        fg.from_torch(nn.Linear(2, 2), torch.randn(3, 5))
