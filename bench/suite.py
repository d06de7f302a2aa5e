"""The real-size suite: the layer shapes people train, as rows the fair harness measures.

Each row builds a fusegraph Model and its input at a scale: "full" is the size the row is named for;
"tiny" keeps the same layers at interpreter-friendly sizes, for the dry run on the CPU. A Job is a row
in one dtype, precision and memory format, or a zoo model's host cost per launch. bench/fair.py runs,
in this order, the FIRST_CALL jobs not yet on file (what one 10-minute device call must bring back),
then the SUBSET rows in float32, then the others, while their times fit its budget."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

import fusegraph as fg


@dataclass(frozen=True)
class Row:
    name: str
    build: Callable[..., tuple[fg.Model | None, list[torch.Tensor]]]  # (scale, dtype) -> (model, fp32 feeds on the CPU)
    expected_s: int  # rough wall time of one row on the GPU, compiles included (max-autotune dominates)
    moved_bytes: Callable[[str], int] | None = None  # bandwidth rows: bytes one call must read and write
    loss: str | None = None  # training-step rows: the loss each contender's step minimises
    optimizer_numel: Callable[[str], int] | None = None  # optimizer rows: parameters one Adam step updates
    torch_form: Callable[[fg.Model], torch.nn.Module] | None = None  # torch's own form, where not to_torch()'s


@dataclass(frozen=True)
class Job:
    """One measurement: a row (or a zoo model's host cost) in a dtype, precision and memory format."""

    row: str
    dtype: str = "float32"
    precision: str = "exact"
    memory_format: str = "contiguous"
    host_cost: bool = False  # `row` names a zoo model whose host cost per launch is measured

    @property
    def name(self) -> str:
        return f"host cost per launch: {self.row}" if self.host_cost else self.row

    @property
    def key(self) -> tuple[str, str, str, str]:
        return (self.name, self.dtype, self.precision, self.memory_format)


def _feeds(model: fg.Model, batch: int, seed: int = 0) -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return [torch.randn(v.type.concrete(batch), generator=generator) for v in model.graph.inputs]


def _conv(channels: int, size: int, batch: int, kernel: int, stride: int):
    def build(scale: str, dtype: str = "float32"):
        c, s, n = (channels, size, batch) if scale == "full" else (4, 6, 2)
        model = fg.Sequential([fg.Input((c, s, s), dtype=dtype), fg.Conv2D(c * stride, kernel, strides=stride,
                                                              padding="same", use_bias=False)],
                              name=f"conv{kernel}x{kernel}_s{stride}")
        return model, _feeds(model, n)

    return build


def _vgg_block(channels: int, size: int, batch: int):
    def build(scale: str, dtype: str = "float32"):
        c, s, n = (channels, size, batch) if scale == "full" else (4, 8, 2)
        model = fg.Sequential([fg.Input((c, s, s), dtype=dtype), fg.Conv2D(c, 3, padding="same", activation="relu"),
                               fg.MaxPool2D(2)], name="vgg_block")
        return model, _feeds(model, n)

    return build


def _rnn(kind: str, hidden: int, batch: int, layers: int = 1, bidirectional: bool = False):
    def build(scale: str, dtype: str = "float32"):
        h, n, t = (hidden, batch, 100) if scale == "full" else (8, 2, 5)
        rnn = fg.LSTM if kind == "lstm" else fg.GRU
        stack = [fg.Input((t, h), dtype=dtype)]
        stack += [rnn(h, return_sequences=True, bidirectional=bidirectional) for _ in range(layers)]
        model = fg.Sequential(stack, name=kind)
        return model, _feeds(model, n)

    return build


def _stacked_rnn(model: fg.Model) -> torch.nn.Module:
    """A stack of same-width RNN layers as PyTorch users write it: one nn.LSTM / nn.GRU with num_layers
    (one cuDNN call for the whole stack), carrying the fusegraph layers' weights."""
    layers = [m for m in model.to_torch().modules() if isinstance(m, torch.nn.RNNBase)]
    first = layers[0]
    stacked = type(first)(first.input_size, first.hidden_size, num_layers=len(layers), batch_first=True,
                          bidirectional=first.bidirectional)
    with torch.no_grad():
        for k, layer in enumerate(layers):
            for name, tensor in layer.named_parameters():
                getattr(stacked, name.replace("_l0", f"_l{k}")).copy_(tensor)
    return _Sequence(stacked)


class _Sequence(torch.nn.Module):
    """An RNN's output sequence (what return_sequences=True gives)."""

    def __init__(self, rnn: torch.nn.RNNBase) -> None:
        super().__init__()
        self.rnn = rnn

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.rnn(x)[0]


def _cifar(batch: int):
    def build(scale: str, dtype: str = "float32"):
        model = fg.zoo.cifar_cnn(dtype=dtype) if scale == "full" else fg.zoo.cifar_cnn(width=4, dtype=dtype)
        return model, _feeds(model, batch if scale == "full" else 2)

    return build


def _cifar_resnet(batch: int):
    def build(scale: str, dtype: str = "float32"):
        model = fg.zoo.cifar_resnet(dtype=dtype) if scale == "full" else fg.zoo.cifar_resnet(width=4, dtype=dtype)
        return model, _feeds(model, batch if scale == "full" else 2)

    return build


def _pointwise_chain(scale: str, dtype: str = "float32"):
    rows, cols = (4096, 16384) if scale == "full" else (4, 64)  # 256 MB in, 256 MB out in fp32
    x = fg.Input((cols,), dtype=dtype)
    model = fg.Model(x, fg.Activation("sigmoid")(fg.Activation("tanh")(fg.Activation("relu")(x))), name="chain")
    return model, _feeds(model, rows)


def _max_pool(scale: str, dtype: str = "float32"):
    n, c, s = (64, 64, 128) if scale == "full" else (2, 2, 8)  # 268 MB in, 67 MB out in fp32
    model = fg.Sequential([fg.Input((c, s, s), dtype=dtype), fg.MaxPool2D(2)], name="max_pool")
    return model, _feeds(model, n)


def _bytes_of(build) -> Callable[[str], int]:
    def moved(scale: str) -> int:
        model, feeds = build(scale)  # NOTE: fp32 bytes; a half-precision run moves half of them
        with torch.no_grad():
            out = model.to_torch()(*feeds)
        return sum(f.numel() * f.element_size() for f in feeds) + out.numel() * out.element_size()

    return moved


RESNET_STAGES = [(64, 56), (128, 28), (256, 14), (512, 7)]

ROWS: dict[str, Row] = {}
for _c, _s in RESNET_STAGES:
    for _n in (32, 128):
        ROWS[f"conv3x3 {_c}ch {_s}x{_s} b{_n}"] = Row(f"conv3x3 {_c}ch {_s}x{_s} b{_n}", _conv(_c, _s, _n, 3, 1), 60)
        ROWS[f"conv3x3/2 {_c}ch {_s}x{_s} b{_n}"] = Row(f"conv3x3/2 {_c}ch {_s}x{_s} b{_n}", _conv(_c, _s, _n, 3, 2), 60)
        ROWS[f"conv1x1 {_c}ch {_s}x{_s} b{_n}"] = Row(f"conv1x1 {_c}ch {_s}x{_s} b{_n}", _conv(_c, _s, _n, 1, 1), 50)
for _c, _s in ((64, 112), (128, 56)):
    ROWS[f"vgg conv3x3+relu+pool {_c}ch {_s}x{_s} b32"] = Row(f"vgg conv3x3+relu+pool {_c}ch {_s}x{_s} b32",
                                                             _vgg_block(_c, _s, 32), 60)
ROWS["cifar_cnn forward b128"] = Row("cifar_cnn forward b128", _cifar(128), 90)
ROWS["cifar_cnn training step b128"] = Row("cifar_cnn training step b128", _cifar(128), 150, loss="cross_entropy")
ROWS["cifar_resnet forward b128"] = Row("cifar_resnet forward b128", _cifar_resnet(128), 90)
ROWS["cifar_resnet training step b128"] = Row("cifar_resnet training step b128", _cifar_resnet(128), 240,
                                              loss="cross_entropy")
ROWS["lstm h512 training step b64"] = Row("lstm h512 training step b64", _rnn("lstm", 512, 64), 120, loss="mse")
for _kind in ("lstm", "gru"):
    for _h in (512, 1024):
        for _n in (64, 256):
            ROWS[f"{_kind} h{_h} seq100 b{_n}"] = Row(f"{_kind} h{_h} seq100 b{_n}", _rnn(_kind, _h, _n), 60)
    ROWS[f"{_kind} h512 x2 stacked b64"] = Row(f"{_kind} h512 x2 stacked b64", _rnn(_kind, 512, 64, layers=2), 70,
                                               torch_form=_stacked_rnn)
    ROWS[f"{_kind} h512 bidirectional b64"] = Row(f"{_kind} h512 bidirectional b64",
                                                  _rnn(_kind, 512, 64, bidirectional=True), 70)
ROWS["pointwise chain 256MB"] = Row("pointwise chain 256MB", _pointwise_chain, 40, _bytes_of(_pointwise_chain))
ROWS["max pool 2x2 268MB"] = Row("max pool 2x2 268MB", _max_pool, 40, _bytes_of(_max_pool))

def _adam_numel(scale: str) -> int:
    return 1 << 25 if scale == "full" else 1000  # 33.5M parameters: 7 x 134 MB moved per Adam step


ROWS["adam step 939MB"] = Row("adam step 939MB", lambda scale, dtype="float32": (None, []), 40,
                              lambda scale: 28 * _adam_numel(scale), optimizer_numel=_adam_numel)

SUBSET = ["conv3x3 64ch 56x56 b32", "conv3x3 256ch 14x14 b128", "conv3x3/2 128ch 28x28 b32", "conv1x1 512ch 7x7 b128",
          "vgg conv3x3+relu+pool 64ch 112x112 b32", "cifar_cnn forward b128", "cifar_cnn training step b128",
          "lstm h512 seq100 b64",
          "lstm h1024 seq100 b256", "gru h1024 seq100 b64", "lstm h512 bidirectional b64", "pointwise chain 256MB",
          "max pool 2x2 268MB", "adam step 939MB", "cifar_resnet training step b128"]

HOST_COST_EXPECTED_S = 15  # one zoo model's host cost: compile, a few hundred tiny calls
# NOTE: the cheap jobs first, so a call cut short still brings some back; the training step last
FIRST_CALL = [Job("conv3x3 64ch 56x56 b32", "float16", memory_format="channels_last"),
              Job("conv3x3 256ch 14x14 b128", "float16", memory_format="channels_last"),
              Job("lstm h1024 seq100 b256", "float16"),
              *(Job(model, host_cost=True) for model in ("lenet", "lstm_classifier", "cifar_resnet")),
              Job("cifar_resnet training step b128", "bfloat16", memory_format="channels_last")]
