"""A PyTorch CNN, written in PyTorch, trained in a plain PyTorch loop on fusegraph's kernels.

`fg.from_torch` imports the net (torch.fx), `fg.compile(...).to_module()` hands back an nn.Module whose
forward and backward run fusegraph's generated kernels and whose parameters torch.optim updates in
place. The data are scikit-learn's 8x8 digits (shipped with it: no download). Before training, one
batch's loss and gradients are checked against the PyTorch net's own autograd.

    python examples/torch_cnn_digits.py [--epochs 3]   # about 60 s on 2 CPU cores (measured; 97% held out)
"""

from __future__ import annotations

import argparse

import torch
import torch.nn.functional as F
from torch import nn

import fusegraph as fg
from fusegraph.data import digits


class DigitsCNN(nn.Module):
    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(16, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(), nn.MaxPool2d(2))
        self.classifier = nn.Linear(32 * 2 * 2, 10)

    def forward(self, x):
        return self.classifier(torch.flatten(self.features(x), 1))


def gradient_check(net: nn.Module, module: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    """The largest gap between fusegraph's and torch's gradient of one batch's loss, over every parameter."""
    for model in (net, module):
        model.zero_grad()
        F.cross_entropy(model(x), y).backward()
    ours = dict(module.named_parameters())
    return max(float((ours[name].grad - param.grad).abs().max()) for name, param in net.named_parameters())


def main(epochs: int = 3, batch_size: int = 64, limit: int | None = None, verbose: bool = True) -> dict:
    torch.manual_seed(0)
    x_train, y_train, x_test, y_test = digits()
    if limit is not None:
        x_train, y_train = x_train[:limit], y_train[:limit]
    net = DigitsCNN().train()
    module = fg.compile(fg.from_torch(net, x_train[:batch_size])).to_module().train()
    gap = gradient_check(net, module, x_train[:batch_size], y_train[:batch_size])
    optimizer = torch.optim.Adam(module.parameters(), lr=3e-3)
    losses = []
    for epoch in range(epochs):
        order = torch.randperm(len(y_train))
        total = 0.0
        for start in range(0, len(y_train), batch_size):
            index = order[start:start + batch_size]
            optimizer.zero_grad()
            loss = F.cross_entropy(module(x_train[index]), y_train[index])
            loss.backward()
            optimizer.step()
            total += loss.item() * len(index)
        losses.append(total / len(y_train))
        if verbose:
            print(f"epoch {epoch + 1}: loss {losses[-1]:.4f}")
    module.eval()
    with torch.no_grad():
        accuracy = float((module(x_test).argmax(1) == y_test).float().mean())
    if verbose:
        print(f"held-out accuracy {accuracy:.3f}; gradients matched torch's to {gap:.1e}")
    return {"losses": losses, "accuracy": accuracy, "max_gradient_gap": gap,
            "state_dict_keys": list(module.state_dict())}


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=3)
    main(epochs=parser.parse_args().epochs)
