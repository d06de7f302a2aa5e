"""An RNN started from another's final states (a sequence-to-sequence encoder handing (h_n, c_n) to its
decoder), converted with fg.from_torch: forward and every gradient against torch's (fp32: KERNEL_RTOL /
KERNEL_ATOL); states fusegraph cannot read are one clear error."""

import warnings

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import fusegraph as fg
from fusegraph.interop import dynamo
from tests.conftest import KERNEL_ATOL, KERNEL_RTOL


class Seq2Seq(nn.Module):
    """pytorch/tutorials' encoder-decoder shape: an embedded source read by the encoder, whose final states
    start the decoder over the embedded target; the decoder's outputs, flattened, to a classifier."""

    def __init__(self, cell=nn.LSTM, layers=2, bidirectional=False, unpack=False):
        super().__init__()
        torch.manual_seed(3)
        self.embed = nn.Embedding(12, 5)
        self.encoder = cell(5, 6, num_layers=layers, batch_first=True, bidirectional=bidirectional)
        self.decoder = cell(5, 6, num_layers=layers, batch_first=True, bidirectional=bidirectional)
        self.head = nn.Linear(4 * 6 * (2 if bidirectional else 1), 3)
        self.unpack = unpack

    def forward(self, source, target):
        _, hidden = self.encoder(self.embed(source))
        if self.unpack:
            h, c = hidden
            hidden = (h, c)
        out, _ = self.decoder(self.embed(target), hidden)
        return self.head(torch.flatten(out, 1))


@pytest.mark.parametrize("build", [lambda: Seq2Seq(), lambda: Seq2Seq(unpack=True),
                                   lambda: Seq2Seq(nn.GRU, layers=1, bidirectional=True)],
                         ids=["lstm x2", "lstm unpacked", "bidirectional gru"])
def test_a_decoder_started_from_its_encoders_states_matches_torch(build):
    net = build()
    source, target, y = torch.randint(0, 12, (3, 6)), torch.randint(0, 12, (3, 4)), torch.randint(0, 3, (3,))
    model = fg.from_torch(net, [source, target])
    with torch.no_grad():
        torch.testing.assert_close(fg.compile(model)([source, target]), net(source, target), rtol=KERNEL_RTOL,
                                   atol=KERNEL_ATOL)
    value, grads = fg.compile(model, loss="cross_entropy").loss_and_grads([source, target], y)
    net.zero_grad()
    loss = F.cross_entropy(net(source, target), y)
    loss.backward()
    assert value == pytest.approx(loss.item(), rel=1e-5)
    parameters = dict(net.named_parameters())
    assert set(grads) == {ours for ours, theirs in model.torch_names.items()
                          if theirs in parameters and ours not in model.tied}  # the embedding, called twice, tied
    for ours, grad in grads.items():
        torch.testing.assert_close(grad, parameters[model.torch_names[ours]].grad, rtol=KERNEL_RTOL, atol=KERNEL_ATOL)


class GivenState(nn.Module):
    def __init__(self):
        super().__init__()
        self.decoder = nn.GRU(3, 4, batch_first=True)

    def forward(self, x, h0):
        return self.decoder(x, h0)[0]


class OtherForm(nn.Module):
    """A bidirectional encoder's states (2, batch, 4) start a two-layer decoder: torch takes it (the shapes
    agree); fusegraph hands states only between RNNs of one form."""

    def __init__(self):
        super().__init__()
        self.encoder = nn.GRU(3, 4, batch_first=True, bidirectional=True)
        self.decoder = nn.GRU(3, 4, num_layers=2, batch_first=True)

    def forward(self, x):
        return self.decoder(x, self.encoder(x)[1])[0]


def test_states_fusegraph_cannot_read_are_one_clear_error():
    with pytest.raises(fg.GraphError, match=r"module 'decoder' \(GRU\) is given an initial state fusegraph cannot "
                                            r"read; .*batch on axis 1"):
        fg.from_torch(GivenState(), [torch.randn(2, 5, 3), torch.randn(1, 2, 4)])
    with pytest.raises(fg.GraphError, match=r"module 'decoder' \(GRU\) starts from the final states of the GRU at "
                                            r"'encoder' \(1 layer\(s\) of 4, bidirectional=True\)"):
        fg.from_torch(OtherForm(), torch.randn(2, 5, 3))


def test_under_the_backend_the_decoder_starts_from_the_encoders_states_on_fusegraph(monkeypatch):
    """With Dynamo's allow_rnn, torch.lstm / torch.gru reach the backend, the decoder's hx the encoder's
    results: no node runs eager (the embedding read twice is one tied weight, not a batch norm's state)."""
    monkeypatch.setattr(torch._dynamo.config, "allow_rnn", True)
    for build in (lambda: Seq2Seq(layers=1), lambda: Seq2Seq(nn.GRU, layers=1, bidirectional=True)):
        net = build().eval()
        source, target = torch.randint(0, 12, (3, 6)), torch.randint(0, 12, (3, 4))
        torch._dynamo.reset()
        try:
            with torch.no_grad(), warnings.catch_warnings():
                warnings.simplefilter("error", dynamo.FusegraphFallbackWarning)
                got = torch.compile(net, backend="fusegraph")(source, target)
            torch.testing.assert_close(got, net(source, target), rtol=KERNEL_RTOL, atol=KERNEL_ATOL)
        finally:
            torch._dynamo.reset()
