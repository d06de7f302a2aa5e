"""Inputs of other feature shapes than a model was built for (a sequence of another length, an image of
another size): a program compiled for them on their first call and kept, against the torch module
itself (fp32: rtol 1e-4, atol 1e-5); a model whose weights would change shape is one clear error."""

import pytest
import torch
from torch import nn

import fusegraph as fg
from tests.conftest import KERNEL_ATOL, KERNEL_RTOL


def test_a_28_step_sequence_model_takes_20_and_40_steps():
    model = fg.Sequential([fg.Input((28, 3)), fg.LSTM(8, name="lstm"), fg.Dense(2, name="out")])
    compiled, oracle = fg.compile(model), model.to_torch()
    for steps in (28, 20, 40, 20):
        x = torch.randn(4, steps, 3)
        with torch.no_grad():
            torch.testing.assert_close(compiled(x), oracle(x), rtol=KERNEL_RTOL, atol=KERNEL_ATOL)
    assert list(compiled._shaped) == [((20, 3),), ((40, 3),)]  # each compiled once, then kept
    assert "so far ((28, 3),), ((20, 3),), ((40, 3),)" in compiled.explain()


class TextClassifier(nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.embed = nn.Embedding(30, 6)
        self.gru = nn.GRU(6, 5, batch_first=True)
        self.head = nn.Linear(5, 3)

    def forward(self, ids):
        out, _ = self.gru(self.embed(ids))
        return self.head(out[:, -1])


def test_a_converted_text_model_takes_other_lengths():
    net = TextClassifier().eval()
    model = fg.from_torch(net, torch.randint(0, 30, (2, 28)))
    compiled = fg.compile(model)
    for steps in (20, 40):
        ids = torch.randint(0, 30, (3, steps))
        with torch.no_grad():
            torch.testing.assert_close(compiled(ids), net(ids), rtol=KERNEL_RTOL, atol=KERNEL_ATOL)


def test_other_image_sizes_through_a_global_pool_and_a_clear_error_through_a_flatten():
    pooled = fg.Sequential([fg.Input((3, 8, 8)), fg.Conv2D(4, 3, padding="same", activation="relu"),
                            fg.MaxPool2D(2), fg.GlobalAvgPool2D(), fg.Dense(2)])
    compiled, oracle = fg.compile(pooled), pooled.to_torch()
    for side in (12, 6):
        x = torch.randn(2, 3, side, side + 2)
        with torch.no_grad():
            torch.testing.assert_close(compiled(x), oracle(x), rtol=KERNEL_RTOL, atol=KERNEL_ATOL)
    flat = fg.Sequential([fg.Input((3, 8, 8)), fg.Conv2D(4, 3), fg.Flatten(), fg.Dense(2, name="head")])
    with pytest.raises(fg.InputError, match=r"expects shape \(batch, 3, 8, 8\) float32, got \(2, 3, 10, 10\) "
                                            r"float32; .* cannot take \(3, 10, 10\): the weight %head.weight would be "
                                            r"f32\[2,256\] instead of f32\[2,144\]"):
        fg.compile(flat)(torch.randn(2, 3, 10, 10))
    with pytest.raises(fg.InputError, match="expects shape"):  # another rank is no other size
        fg.compile(flat)(torch.randn(2, 3, 8))
    x = torch.randn(2, 3, 8, 8)  # the model as it was built: trying another size changed none of its layers
    torch.testing.assert_close(fg.compile(flat)(x), flat.to_torch()(x), rtol=KERNEL_RTOL, atol=KERNEL_ATOL)


def test_a_converted_text_model_trains_at_other_lengths_as_torch_does():
    """Training steps at 20, 40 and 20 steps of a model converted at 28 (torch.optim.SGD on the net itself as
    the oracle), and the gradients of one batch at 40 steps against torch.autograd's."""
    net = TextClassifier().train()
    model = fg.from_torch(net, torch.randint(0, 30, (2, 28)))
    trainer = fg.compile(model, loss="cross_entropy", optimizer=fg.optim.SGD(0.5))
    optimizer = torch.optim.SGD(net.parameters(), lr=0.5)
    for steps in (20, 40, 20):
        ids, y = torch.randint(0, 30, (3, steps)), torch.randint(0, 3, (3,))
        optimizer.zero_grad()
        loss = nn.functional.cross_entropy(net(ids), y)
        loss.backward()
        optimizer.step()
        assert trainer.train_step(ids, y) == pytest.approx(loss.item(), rel=1e-5)
    assert [shapes for shapes, _ in trainer._shaped_training] == [((20,),), ((40,),)]  # compiled once each
    weights = dict(net.named_parameters())
    for ours, theirs in model.torch_names.items():
        torch.testing.assert_close(trainer.params[ours], weights[theirs].detach(), rtol=KERNEL_RTOL, atol=KERNEL_ATOL)
    ids, y = torch.randint(0, 30, (3, 40)), torch.randint(0, 3, (3,))
    value, grads = trainer.loss_and_grads(ids, y)
    net.zero_grad()
    nn.functional.cross_entropy(net(ids), y).backward()
    for ours, grad in grads.items():
        torch.testing.assert_close(grad, weights[model.torch_names[ours]].grad, rtol=KERNEL_RTOL, atol=KERNEL_ATOL)
