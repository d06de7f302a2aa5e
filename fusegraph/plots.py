"""Pictures of training: curves, first-layer filters, feature maps, confusion matrices, forecasts
(matplotlib, no screen)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

MAP_COLUMNS = 8


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(plt, fig, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def curves(history: dict[str, list[float]], path: Path, restored: int | None = None) -> Path:
    """Loss (and accuracy) per epoch, train and validation; `restored`: the epoch (1-based) whose weights
    early stopping kept, marked on every panel."""
    plt = _pyplot()
    metrics = [m for m in ("loss", "accuracy") if m in history]
    fig, axes = plt.subplots(1, len(metrics), figsize=(5 * len(metrics), 3.5), squeeze=False)
    for ax, metric in zip(axes[0], metrics):
        epochs = np.arange(1, len(history[metric]) + 1)
        ax.plot(epochs, history[metric], marker="o", label="train")
        if f"val_{metric}" in history:
            ax.plot(epochs, history[f"val_{metric}"], marker="o", label="validation")
        if restored is not None:
            ax.axvline(restored, color="gray", linestyle=":", label=f"kept: epoch {restored}")
        ax.set_xlabel("epoch")
        ax.set_title(metric)
        ax.grid(alpha=0.3)
        ax.legend()
    return _save(plt, fig, path)


def filters(weight: np.ndarray, path: Path, title: str) -> Path:
    """A grid of a conv layer's filters (input channel 0), weight (O, C, KH, KW)."""
    plt = _pyplot()
    count = weight.shape[0]
    fig, axes = plt.subplots(1, count, figsize=(1.6 * count + 1.0, 2.2), squeeze=False)
    limit = float(np.abs(weight[:, 0]).max()) or 1.0
    for i, ax in enumerate(axes[0]):
        image = ax.imshow(weight[i, 0], cmap="RdBu_r", vmin=-limit, vmax=limit)
        ax.set_title(f"filter {i}", fontsize=8)
        ax.axis("off")
    fig.suptitle(title)
    fig.tight_layout()
    fig.colorbar(image, ax=list(axes[0]), shrink=0.8, label="weight")  # one scale for all: red +, blue -
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def feature_maps(image: np.ndarray, maps: list[tuple[str, np.ndarray]], path: Path, title: str) -> Path:
    """The input image, then each block's feature maps (C, H, W), one row per block."""
    plt = _pyplot()
    # rows of at most MAP_COLUMNS maps, each about an inch and a half: readable, nothing mostly empty
    columns = min(MAP_COLUMNS, max(m.shape[0] for _, m in maps))
    rows = [(("input", image),)] + [tuple((f"{name}[{c}]", stack[c]) for c in range(at, min(at + columns, len(stack))))
                                    for name, stack in maps for at in range(0, len(stack), columns)]
    fig, axes = plt.subplots(len(rows), columns, figsize=(1.5 * columns, 1.6 * len(rows)), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for r, row in enumerate(rows):
        for c, (label, picture) in enumerate(row):
            axes[r][c].imshow(picture, cmap="gray_r" if r == 0 else "viridis")
            axes[r][c].set_title(label, fontsize=8)
    fig.suptitle(title)
    return _save(plt, fig, path)


def forecast(truth: np.ndarray, predicted: np.ndarray, naive: np.ndarray, path: Path, model: str, title: str) -> Path:
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(11, 3.5))
    steps = np.arange(len(truth))
    ax.plot(steps, truth, label="truth", color="black")
    ax.plot(steps, predicted, label=f"{model} forecast (fusegraph kernels)")
    ax.plot(steps, naive, label="naive: last value", alpha=0.6, linestyle="--")
    ax.set_xlabel("held-out step")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8)  # beside the plot: no peak hidden
    return _save(plt, fig, path)


def comparison(histories: dict[str, dict[str, list[float]]], metric: str, path: Path, title: str) -> Path:
    """One history entry (a validation accuracy) per epoch for each of several runs, on one axis."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 3.5))
    for label, history in histories.items():
        ax.plot(np.arange(1, len(history[metric]) + 1), history[metric], marker="o", label=label)
    ax.set_xlabel("epoch")
    ax.set_ylabel(metric.replace("_", " "))
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend()
    return _save(plt, fig, path)


def confusion(truth: np.ndarray, predicted: np.ndarray, path: Path, title: str) -> Path:
    """How often each true class (rows) was predicted as each class (columns), counts written in the cells."""
    plt = _pyplot()
    classes = int(max(truth.max(), predicted.max())) + 1
    counts = np.zeros((classes, classes), dtype=np.int64)
    np.add.at(counts, (truth, predicted), 1)
    fig, ax = plt.subplots(figsize=(0.5 * classes + 2.5, 0.5 * classes + 2))
    image = ax.imshow(counts, cmap="Blues")
    fig.colorbar(image, ax=ax, fraction=0.046)
    for (row, column), count in np.ndenumerate(counts):
        if count:
            ax.text(column, row, str(count), ha="center", va="center", fontsize=7,
                    color="white" if count > counts.max() / 2 else "black")
    ax.set(xticks=range(classes), yticks=range(classes), xlabel="predicted", ylabel="true", title=title)
    return _save(plt, fig, path)
