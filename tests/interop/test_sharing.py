"""Modules called more than once, weights shared between modules or calls, and frozen weights, as real
nets write them: a module without weights (a ReLU, a dropout) becomes a layer per call; a weight met
again is one fusegraph parameter whose gradient is the sum of its uses (tied in training, in to_torch()
and in to_module()'s state_dict); requires_grad=False stays frozen. fp32 against the torch net itself:
rtol 1e-4, atol 1e-5."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import fusegraph as fg
from tests.conftest import KERNEL_ATOL, KERNEL_RTOL


class BasicBlockNet(nn.Module):
    """torchvision's ResNet BasicBlock as published (one self.relu called twice) and a classifier that
    reuses one dropout."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.conv1 = nn.Conv2d(3, 4, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(4)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(4, 4, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(4)
        self.stem = nn.Conv2d(3, 4, 1)
        self.dropout = nn.Dropout(0.0)
        self.fc1 = nn.Linear(4, 6)
        self.fc2 = nn.Linear(6, 3)

    def forward(self, x):
        identity = self.stem(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        out = self.relu(out + identity)
        h = torch.flatten(F.adaptive_avg_pool2d(out, 1), 1)
        return self.fc2(self.dropout(self.relu(self.fc1(self.dropout(h)))))


class TiedLanguageModel(nn.Module):
    """The word language model's weight tying: the decoder's weight is the encoder's."""

    def __init__(self, vocab=11, dim=6):
        super().__init__()
        torch.manual_seed(1)
        self.encoder = nn.Embedding(vocab, dim)
        self.hidden = nn.Linear(dim, dim)
        self.decoder = nn.Linear(dim, vocab)
        self.decoder.weight = self.encoder.weight

    def forward(self, ids):
        return self.decoder(torch.tanh(self.hidden(self.encoder(ids))))


def gradients_match(net: nn.Module, model: fg.Model, x, y, loss: str, torch_loss) -> dict:
    """fusegraph's gradients equal torch.autograd's on the net, each under its torch name."""
    value, grads = fg.compile(model, loss=loss).loss_and_grads(x, y)
    net.zero_grad()
    expected = torch_loss(net(x), y)
    expected.backward()
    assert value == pytest.approx(expected.item(), rel=1e-5)
    parameters = dict(net.named_parameters())
    for ours, grad in grads.items():
        torch.testing.assert_close(grad, parameters[model.torch_names[ours]].grad, rtol=KERNEL_RTOL, atol=KERNEL_ATOL)
    return grads


def test_a_module_without_weights_may_be_called_again():
    net = BasicBlockNet().train()
    x, y = torch.randn(3, 3, 6, 6), torch.randint(0, 3, (3,))
    model = fg.from_torch(net, x)
    assert sum(n.op == "relu" for n in model.graph.nodes) == 3 and sum(n.op == "dropout" for n in model.graph.nodes) == 0
    with torch.no_grad():
        torch.testing.assert_close(fg.compile(model)(x), net.eval()(x), rtol=KERNEL_RTOL, atol=KERNEL_ATOL)
    gradients_match(net.train(), model, x, y, "cross_entropy", F.cross_entropy)


def test_a_dropout_called_twice_draws_a_mask_per_call():
    class Twice(nn.Module):
        def __init__(self):
            super().__init__()
            self.drop = nn.Dropout(0.5)

        def forward(self, x):
            return torch.cat([self.drop(x), self.drop(x)], dim=1)

    x = torch.ones(4, 64)
    model = fg.from_torch(Twice().train(), x)
    assert sum(n.op == "dropout" for n in model.graph.nodes) == 2
    first, second = fg.compile(model).to_module().train()(x).split(64, dim=1)
    assert not torch.equal(first, second), "the two calls drew the same mask"


def test_tied_weights_stay_one_weight_with_the_summed_gradient():
    net = TiedLanguageModel()
    ids, target = torch.randint(0, 11, (5, 3)), torch.randn(5, 3, 11)
    model = fg.from_torch(net, ids)
    assert model.tied == {"decoder.weight": "encoder.weight"} and "decoder.weight" not in model.params
    grads = gradients_match(net, model, ids, target, "mse", F.mse_loss)
    assert set(grads) == {"encoder.weight", "hidden.weight", "hidden.bias", "decoder.bias"}
    trainer = fg.compile(model, loss="mse", optimizer=fg.optim.SGD(0.5))
    optimizer = torch.optim.SGD(net.parameters(), lr=0.5)
    for _ in range(2):
        trainer.train_step(ids, target)
        optimizer.zero_grad()
        F.mse_loss(net(ids), target).backward()
        optimizer.step()
    torch.testing.assert_close(model.params["encoder.weight"], net.encoder.weight.detach(), rtol=1e-4, atol=1e-5)
    module = fg.compile(model).to_module()
    state = module.state_dict()
    assert state["decoder.weight"].data_ptr() == state["encoder.weight"].data_ptr()
    assert len(list(module.parameters())) == 4  # one Parameter under both names, as in the net
    back = model.to_torch()
    assert back.fusegraph_parameters()["decoder.weight"] is back.fusegraph_parameters()["encoder.weight"]


def test_a_module_with_weights_called_again_shares_them():
    class Twice(nn.Module):
        def __init__(self):
            super().__init__()
            torch.manual_seed(4)
            self.m = nn.Linear(4, 4)

        def forward(self, x):
            return self.m(torch.tanh(self.m(x)))

    net, x, y = Twice(), torch.randn(3, 4), torch.randn(3, 4)
    model = fg.from_torch(net, x)
    assert model.tied == {"m_1.weight": "m.weight", "m_1.bias": "m.bias"}
    gradients_match(net, model, x, y, "mse", F.mse_loss)


def test_one_weight_read_by_two_functional_calls():
    class SharedLinear(nn.Module):
        def __init__(self):
            super().__init__()
            torch.manual_seed(2)
            self.linear = nn.Linear(5, 5)

        def forward(self, x):
            h = torch.relu(F.linear(x, self.linear.weight, self.linear.bias))
            return F.linear(h, self.linear.weight, self.linear.bias)

    net, x, y = SharedLinear(), torch.randn(4, 5), torch.randn(4, 5)
    model = fg.from_torch(net, x)
    assert len(model.params) == 2
    gradients_match(net, model, x, y, "mse", F.mse_loss)


def test_a_frozen_backbone_stays_frozen_everywhere():
    net = BasicBlockNet()
    for module in (net.conv1, net.bn1, net.stem):
        module.requires_grad_(False)
    x, y = torch.randn(2, 3, 6, 6), torch.randint(0, 3, (2,))
    model = fg.from_torch(net, x)
    frozen = {"conv1.weight", "bn1.weight", "bn1.bias", "stem.weight", "stem.bias"}
    assert set(model.frozen) == {ours for ours, theirs in model.torch_names.items() if theirs in frozen}
    before = {name: t.clone() for name, t in model.params.items()}
    trainer = fg.compile(model, loss="cross_entropy", optimizer=fg.optim.SGD(0.5))
    trainer.train_step(x, y)
    after = model.params
    for ours, theirs in model.torch_names.items():
        if theirs in frozen:
            torch.testing.assert_close(after[ours], before[ours], rtol=0, atol=0)
    assert not torch.equal(after[next(o for o, t in model.torch_names.items() if t == "fc1.weight")],
                           before[next(o for o, t in model.torch_names.items() if t == "fc1.weight")])
    module = fg.compile(model).to_module()
    assert {k for k, p in module.named_parameters() if not p.requires_grad} == frozen
