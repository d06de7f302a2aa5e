"""torch.compile(net, backend="fusegraph") on torch nets written here: a residual CNN with batch norm and an
LSTM classifier, in inference and in training (outputs, gradients, parameters and running statistics after
torch.optim steps equal an eager copy's, fp32: rtol 1e-4, atol 1e-5), fusegraph's own kernels counted so an
all-eager fallback cannot pass, and an unsupported op left to eager with one warning naming it."""

import copy
import re
import warnings

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from fusegraph.interop import dynamo

RTOL, ATOL = 1e-4, 1e-5


class ResidualCNN(nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.stem = nn.Conv2d(3, 6, 3, padding=1)
        self.bn = nn.BatchNorm2d(6)
        self.block = nn.Conv2d(6, 6, 3, padding=1)
        self.head = nn.Linear(6, 4)

    def forward(self, x):
        h = F.relu(self.bn(self.stem(x)))
        h = F.max_pool2d(h + F.relu(self.block(h)), 2)
        return self.head(torch.flatten(F.adaptive_avg_pool2d(h, 1), 1))


class LSTMClassifier(nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(1)
        self.embed = nn.Embedding(10, 4)
        self.lstm = nn.LSTM(4, 5, batch_first=True)
        self.out = nn.Linear(5, 3)

    def forward(self, ids):
        seq, _ = self.lstm(self.embed(ids))
        return self.out(seq[:, -1])


class WithCumsum(ResidualCNN):
    def forward(self, x):
        h = F.relu(self.bn(self.stem(x)))
        return self.head(torch.cumsum(torch.flatten(F.adaptive_avg_pool2d(h, 1), 1), 1))


@pytest.fixture
def launches(monkeypatch) -> list:
    """fusegraph's kernel launches inside the compiled nets (each partition's launch counter)."""
    counted = []
    real = dynamo._Partition.forward

    def forward(self, *args):
        before = self.compiled.counter.count
        result = real(self, *args)
        counted.append(self.compiled.counter.count - before)
        return result

    monkeypatch.setattr(dynamo._Partition, "forward", forward)
    torch._dynamo.reset()
    yield counted
    torch._dynamo.reset()


@pytest.fixture(autouse=True)
def rnns_traced():
    saved = torch._dynamo.config.allow_rnn
    torch._dynamo.config.allow_rnn = True  # NOTE: else Dynamo leaves nn.LSTM out of its graphs
    yield
    torch._dynamo.config.allow_rnn = saved


def _data(net, count: int, seed: int = 2):
    generator = torch.Generator().manual_seed(seed)
    if isinstance(net, LSTMClassifier):
        return [(torch.randint(0, 10, (4, 6), generator=generator), torch.randint(0, 3, (4,), generator=generator))
                for _ in range(count)]
    return [(torch.randn(4, 3, 8, 8, generator=generator), torch.randint(0, 4, (4,), generator=generator))
            for _ in range(count)]


@pytest.mark.parametrize("build", [ResidualCNN, LSTMClassifier])
def test_training_through_the_backend_follows_eager(build, launches):
    net = build().train()
    eager = copy.deepcopy(net)
    compiled = torch.compile(net, backend="fusegraph")
    optimizers = [torch.optim.SGD(m.parameters(), lr=0.1, momentum=0.9) for m in (net, eager)]
    with warnings.catch_warnings():
        warnings.simplefilter("error", dynamo.FusegraphFallbackWarning)  # every node runs on fusegraph's kernels
        for x, y in _data(net, 3):
            for model, optimizer in zip((compiled, eager), optimizers):
                optimizer.zero_grad()
                loss = F.cross_entropy(model(x), y)
                loss.backward()
                optimizer.step()
    assert launches and all(n > 0 for n in launches)
    theirs = eager.state_dict()
    for key, value in net.state_dict().items():
        torch.testing.assert_close(value, theirs[key], rtol=RTOL, atol=ATOL, msg=lambda m, k=key: f"{k}: {m}")


@pytest.mark.parametrize("build", [ResidualCNN, LSTMClassifier])
def test_inference_through_the_backend_equals_eager(build, launches):
    net = build().eval()
    (x, _), = _data(net, 1, seed=3)
    with torch.no_grad():
        expected = net(x)
        got = torch.compile(net, backend="fusegraph")(x)
    torch.testing.assert_close(got, expected, rtol=RTOL, atol=ATOL)
    assert launches and launches[-1] > 0


def test_an_unsupported_op_runs_eager_with_one_warning_naming_it(launches):
    net = WithCumsum().train()
    eager = copy.deepcopy(net)
    (x, y), = _data(net, 1, seed=4)
    with pytest.warns(dynamo.FusegraphFallbackWarning, match="cumsum .*fusegraph has no conversion for it"):
        out = torch.compile(net, backend="fusegraph")(x)
    expected = eager(x)
    torch.testing.assert_close(out, expected, rtol=RTOL, atol=ATOL)
    F.cross_entropy(out, y).backward()
    F.cross_entropy(expected, y).backward()
    for (name, ours), (_, theirs) in zip(net.named_parameters(), eager.named_parameters(), strict=True):
        torch.testing.assert_close(ours.grad, theirs.grad, rtol=RTOL, atol=ATOL, msg=lambda m, n=name: f"{n}: {m}")
    assert launches and launches[0] > 0  # the convolutional part still ran on fusegraph's kernels


class WithTanhGelu(ResidualCNN):
    """A gelu fusegraph has no form of (approximate='tanh') between two parts it has."""

    def forward(self, x):
        h = F.relu(self.bn(self.stem(x)))
        h = F.gelu(self.block(h), approximate="tanh")
        return self.head(torch.flatten(F.adaptive_avg_pool2d(F.relu(h), 1), 1))


def test_a_node_with_arguments_fusegraph_lacks_leaves_only_itself_to_eager(launches):
    """Support is decided per node with its arguments, as a conversion decides it: the tanh gelu runs
    eager, the parts before and after it on fusegraph's kernels; the warning names that node, why, and
    how many nodes of how many fell back (and no getitem of the partitioner's own)."""
    net = WithTanhGelu().eval()
    (x, _), = _data(net, 1, seed=5)
    with pytest.warns(dynamo.FusegraphFallbackWarning) as caught, torch.no_grad():
        out = torch.compile(net, backend="fusegraph")(x)
        expected = net(x)
    torch.testing.assert_close(out, expected, rtol=RTOL, atol=ATOL)
    (warning,) = [w for w in caught if issubclass(w.category, dynamo.FusegraphFallbackWarning)]
    text = str(warning.message)
    assert re.search(r"runs 1 of \d+ nodes", text) and "gelu" in text and "approximate='tanh'" in text
    assert "getitem" not in text
    assert len(launches) == 2 and all(n > 0 for n in launches)  # fusegraph ran on both sides of it
