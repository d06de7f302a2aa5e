"""Real datasets that ship inside installed packages (no download at run time), as torch tensors.

- digits: scikit-learn's 1,797 handwritten digits, 8x8, 10 classes (images scaled to [0, 1]).
- co2, sunspots: statsmodels' weekly Mauna Loa CO2 (2,284 points) and yearly sunspot numbers (309).
"""

from __future__ import annotations

import numpy as np
import torch

from .ir import GraphError

SERIES = ("co2", "sunspots")


def digits(test_fraction: float = 0.2, seed: int = 0):
    """(x_train, y_train, x_test, y_test): x (N, 1, 8, 8) float32 in [0, 1], y int64, a seeded split."""
    from sklearn.datasets import load_digits

    data = load_digits()
    x = torch.tensor(data.images, dtype=torch.float32).unsqueeze(1) / 16.0
    y = torch.tensor(data.target, dtype=torch.int64)
    order = torch.randperm(len(x), generator=torch.Generator().manual_seed(seed))
    cut = int(len(x) * (1 - test_fraction))
    return x[order[:cut]], y[order[:cut]], x[order[cut:]], y[order[cut:]]


def shift_augment(max_shift: int = 1):
    """A seeded augmentation for image batches: each image moved by up to `max_shift` pixels each way."""

    def augment(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        shifts = torch.randint(-max_shift, max_shift + 1, (len(x), 2), generator=generator)
        padded = torch.nn.functional.pad(x, [max_shift] * 4)
        height, width = x.shape[-2:]
        return torch.stack([padded[i, :, max_shift + dy: max_shift + dy + height, max_shift + dx: max_shift + dx + width]
                            for i, (dy, dx) in enumerate(shifts.tolist())])

    return augment


def series(name: str) -> np.ndarray:
    """A real univariate series as float64, gaps interpolated."""
    if name == "co2":
        from statsmodels.datasets import co2

        values = co2.load_pandas().data["co2"].interpolate().bfill().to_numpy()
    elif name == "sunspots":
        from statsmodels.datasets import sunspots

        values = sunspots.load_pandas().data["SUNACTIVITY"].to_numpy()
    else:
        raise GraphError(f"unknown series {name!r}; use one of {', '.join(SERIES)}")
    return np.asarray(values, dtype=np.float64)


def windows(values: np.ndarray, window: int, test_fraction: float = 0.2):
    """Next-value forecasting pairs, split in time: (x_train, y_train, x_test, y_test, (mean, std)).
    x (N, window, 1) are standardised with the training part's statistics; y (N, 1) the next value."""
    cut = int(len(values) * (1 - test_fraction))
    mean, std = values[:cut].mean(), values[:cut].std()
    scaled = (values - mean) / std
    x = np.stack([scaled[i:i + window] for i in range(len(scaled) - window)])[..., None]
    y = scaled[window:, None]
    split = cut - window
    as_tensor = lambda a: torch.tensor(a, dtype=torch.float32)  # noqa: E731
    return as_tensor(x[:split]), as_tensor(y[:split]), as_tensor(x[split:]), as_tensor(y[split:]), (mean, std)
