"""Pictures of training: curves, first-layer filters, feature maps, forecasts (matplotlib, no screen)."""

from __future__ import annotations

from pathlib import Path

import numpy as np


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


def curves(history: dict[str, list[float]], path: Path) -> Path:
    plt = _pyplot()
    metrics = [m for m in ("loss", "accuracy") if m in history]
    fig, axes = plt.subplots(1, len(metrics), figsize=(5 * len(metrics), 3.5), squeeze=False)
    for ax, metric in zip(axes[0], metrics):
        epochs = np.arange(1, len(history[metric]) + 1)
        ax.plot(epochs, history[metric], marker="o", label="train")
        if f"val_{metric}" in history:
            ax.plot(epochs, history[f"val_{metric}"], marker="o", label="validation")
        ax.set_xlabel("epoch")
        ax.set_title(metric)
        ax.grid(alpha=0.3)
        ax.legend()
    return _save(plt, fig, path)


def filters(weight: np.ndarray, path: Path, title: str) -> Path:
    """A grid of a conv layer's filters (input channel 0), weight (O, C, KH, KW)."""
    plt = _pyplot()
    count = weight.shape[0]
    fig, axes = plt.subplots(1, count, figsize=(1.6 * count, 2.0), squeeze=False)
    limit = float(np.abs(weight[:, 0]).max()) or 1.0
    for i, ax in enumerate(axes[0]):
        ax.imshow(weight[i, 0], cmap="RdBu_r", vmin=-limit, vmax=limit)
        ax.set_title(f"filter {i}", fontsize=8)
        ax.axis("off")
    fig.suptitle(title)
    return _save(plt, fig, path)


def feature_maps(image: np.ndarray, maps: list[tuple[str, np.ndarray]], path: Path, title: str) -> Path:
    """The input image, then each block's feature maps (C, H, W), one row per block."""
    plt = _pyplot()
    columns = max(m.shape[0] for _, m in maps)
    fig, axes = plt.subplots(len(maps) + 1, columns, figsize=(1.3 * columns, 1.5 * (len(maps) + 1)), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    axes[0][0].imshow(image, cmap="gray_r")
    axes[0][0].set_title("input", fontsize=8)
    for row, (name, stack) in enumerate(maps, start=1):
        for c in range(stack.shape[0]):
            axes[row][c].imshow(stack[c], cmap="viridis")
            axes[row][c].set_title(f"{name}[{c}]", fontsize=7)
    fig.suptitle(title)
    return _save(plt, fig, path)


def forecast(truth: np.ndarray, predicted: np.ndarray, naive: np.ndarray, path: Path, model: str, title: str) -> Path:
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(9, 3.5))
    steps = np.arange(len(truth))
    ax.plot(steps, truth, label="truth", color="black")
    ax.plot(steps, predicted, label=f"{model} forecast (fusegraph kernels)")
    ax.plot(steps, naive, label="naive: last value", alpha=0.6, linestyle="--")
    ax.set_xlabel("held-out step")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    return _save(plt, fig, path)
