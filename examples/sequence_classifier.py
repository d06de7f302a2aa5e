"""A bidirectional GRU text classifier, trained with fusegraph's own kernels.

The task is synthetic so the script needs no download: a "sentence" of token ids is positive when
token 7 appears before token 3 (order matters, so the model must read the sequence). Each GRU
direction runs its whole sequence as one persistent kernel, forward and backward.

    python examples/sequence_classifier.py [--epochs 4]   # about 60 s on 2 CPU cores (measured)
"""

from __future__ import annotations

import argparse

import torch

import fusegraph as fg

VOCAB, LENGTH = 20, 12


def sentences(count: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    tokens = torch.randint(0, VOCAB, (count, LENGTH), generator=generator)
    first_7 = torch.where(tokens == 7, torch.arange(LENGTH), LENGTH).min(dim=1).values
    first_3 = torch.where(tokens == 3, torch.arange(LENGTH), LENGTH).min(dim=1).values
    labels = (first_7 < first_3).float()[:, None]
    return tokens, labels


def build() -> fg.Model:
    return fg.Sequential([
        fg.Input((LENGTH,), dtype="int64", name="tokens"),
        fg.Embedding(VOCAB, 16, name="embedding"),
        fg.GRU(16, bidirectional=True, name="gru"),
        fg.Dense(1, activation="sigmoid", name="head"),
    ], name="order_classifier")


def main(epochs: int = 4, train: int = 1024, test: int = 256, verbose: bool = True) -> dict:
    model = build()
    model.init(seed=0)
    trainer = fg.compile(model, loss="binary_cross_entropy", optimizer=fg.optim.Adam(lr=1e-2))
    x_train, y_train = sentences(train, seed=0)
    x_test, y_test = sentences(test, seed=1)
    history = trainer.fit(x_train, y_train, epochs=epochs, batch_size=64, verbose=verbose)
    scores = trainer.evaluate(x_test, y_test)
    with torch.no_grad():  # the same weights in real torch.nn layers give the same predictions
        ours, theirs = trainer.predict(x_test), model.to_torch()(x_test)
    report = trainer.explain()
    result = {**scores, "history": history, "max_abs_difference_vs_torch": float((ours - theirs).abs().max()),
              "training_step": next(line for line in report.splitlines() if line.startswith("Training step"))}
    if verbose:
        print(report.split("\n\n")[0])
        print(result["training_step"])
        print(f"held-out accuracy {scores['accuracy']:.3f}; predictions vs torch.nn: "
              f"{result['max_abs_difference_vs_torch']:.1e}")
    return result


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=4)
    main(parser.parse_args().epochs)
