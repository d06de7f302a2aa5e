"""The models the classic CNN/RNN courses teach, as functions returning fusegraph Models."""

from __future__ import annotations

from collections.abc import Callable

from ..ir import GraphError
from . import (
    GRU,
    LSTM,
    Activation,
    Add,
    BatchNorm2D,
    Conv1D,
    Conv2D,
    Dense,
    Embedding,
    Flatten,
    GlobalAvgPool2D,
    Input,
    MaxPool1D,
    MaxPool2D,
    Model,
    Permute,
    Sequential,
)


def lenet(input_shape: tuple[int, int, int] = (1, 28, 28), num_classes: int = 10, dtype: str = "float32") -> Model:
    """LeNet-5: (conv 5×5 'same' → ReLU → 2×2 max pool) ×2, dense 120 → 84 (ReLU) → softmax.

    'same' padding keeps the net valid on 8×8 digits as well as 28×28 MNIST.
    """
    return Sequential([
        Input(input_shape, dtype=dtype, name="image"),
        Conv2D(6, 5, padding="same", activation="relu", name="conv1"),
        MaxPool2D(2, name="pool1"),
        Conv2D(16, 5, padding="same", activation="relu", name="conv2"),
        MaxPool2D(2, name="pool2"),
        Flatten(name="flatten"),
        Dense(120, activation="relu", name="fc1"),
        Dense(84, activation="relu", name="fc2"),
        Dense(num_classes, activation="softmax", name="fc3"),
    ], name="lenet")


def cnn1d(input_shape: tuple[int, int] = (1, 64), num_outputs: int = 1, dtype: str = "float32") -> Model:
    """A 1-D CNN for series: (Conv1D → ReLU → max pool) ×2, then a dense regression head."""
    return Sequential([
        Input(input_shape, dtype=dtype, name="series"),
        Conv1D(16, 5, padding="same", activation="relu", name="conv1"),
        MaxPool1D(2, name="pool1"),
        Conv1D(32, 3, padding="same", activation="relu", name="conv2"),
        MaxPool1D(2, name="pool2"),
        Flatten(name="flatten"),
        Dense(num_outputs, name="head"),
    ], name="cnn1d")


def lstm_classifier(vocab_size: int = 1000, seq_len: int = 32, embed_dim: int = 32, units: int = 32) -> Model:
    """The sentiment model: Embedding → LSTM → Dense(1, sigmoid)."""
    return Sequential([
        Input((seq_len,), dtype="int64", name="tokens"),
        Embedding(vocab_size, embed_dim, name="embedding"),
        LSTM(units, name="lstm"),
        Dense(1, activation="sigmoid", name="head"),
    ], name="lstm_classifier")


def gru_forecaster(window: int = 24, features: int = 1, units: int = 32, dtype: str = "float32") -> Model:
    """Two stacked GRUs regressing the next value of a series from the last `window` values."""
    return Sequential([
        Input((window, features), dtype=dtype, name="window"),
        GRU(units, return_sequences=True, name="gru1"),
        GRU(units // 2 or 1, name="gru2"),
        Dense(features, name="head"),
    ], name="gru_forecaster")


def cnn_lstm(window: int = 64, filters: int = 16, units: int = 32, dtype: str = "float32") -> Model:
    """The course's CNN+RNN forecaster: Conv1D → ReLU → max pool picks local patterns, Permute((2, 1))
    turns (channels, length) into (time, features), an LSTM reads them, a dense head regresses."""
    return Sequential([
        Input((1, window), dtype=dtype, name="series"),
        Conv1D(filters, 5, padding="same", activation="relu", name="conv"),
        MaxPool1D(2, name="pool"),
        Permute((2, 1), name="to_time"),
        LSTM(units, name="lstm"),
        Dense(1, name="head"),
    ], name="cnn_lstm")


def cifar_cnn(width: int = 64, num_classes: int = 10, dtype: str = "float32") -> Model:
    """A CIFAR-10-sized VGG-style CNN on 3x32x32 images, 1.08M parameters at width 64: two 3x3 convs
    at `width` channels, two at 2x, one at 4x, each stage ending in a 2x2 max pool, then dense 128 and
    the classes."""
    layers = [Input((3, 32, 32), dtype=dtype, name="image")]
    for stage, (channels, convs) in enumerate(((width, 2), (2 * width, 2), (4 * width, 1)), start=1):
        layers += [Conv2D(channels, 3, padding="same", activation="relu", name=f"conv{stage}_{i + 1}")
                   for i in range(convs)]
        layers.append(MaxPool2D(2, name=f"pool{stage}"))
    layers += [Flatten(name="flatten"), Dense(128, activation="relu", name="fc"), Dense(num_classes, name="logits")]
    return Sequential(layers, name="cifar_cnn")


def resnet_block(input_shape: tuple[int, int, int] = (16, 8, 8), dtype: str = "float32") -> Model:
    """A basic residual block: conv 3×3 → ReLU → conv 3×3, plus the input, then ReLU."""
    x = Input(input_shape, dtype=dtype, name="features")
    h = Conv2D(input_shape[0], 3, padding="same", activation="relu", name="conv1")(x)
    h = Conv2D(input_shape[0], 3, padding="same", name="conv2")(h)
    y = Activation("relu", name="relu")(Add(name="residual")([h, x]))
    return Model(x, y, name="resnet_block")


def cifar_resnet(width: int = 16, num_classes: int = 10, dtype: str = "float32") -> Model:
    """A CIFAR-10 ResNet with batch normalisation (He et al.'s CIFAR layout, one basic block per stage):
    a 3x3 stem at `width`, then stages at width, 2x and 4x channels (the second and third halve the
    side with a strided conv, their shortcut a 1x1 strided conv), each conv followed by BatchNorm2D,
    then global average pooling and the classes. 0.08M parameters at width 16."""
    x = Input((3, 32, 32), dtype=dtype, name="image")

    def conv_bn(h, channels: int, name: str, stride: int = 1, kernel: int = 3, relu: bool = True):
        h = Conv2D(channels, kernel, strides=stride, padding="same" if stride == 1 else kernel // 2, use_bias=False,
                   name=f"{name}_conv")(h)
        h = BatchNorm2D(name=f"{name}_bn")(h)
        return Activation("relu", name=f"{name}_relu")(h) if relu else h

    h = conv_bn(x, width, "stem")
    for stage, channels in enumerate((width, 2 * width, 4 * width), start=1):
        stride = 1 if stage == 1 else 2
        body = conv_bn(conv_bn(h, channels, f"block{stage}_a", stride), channels, f"block{stage}_b", relu=False)
        shortcut = h if stride == 1 else conv_bn(h, channels, f"block{stage}_down", stride, kernel=1, relu=False)
        h = Activation("relu", name=f"block{stage}_relu")(Add(name=f"block{stage}_add")([body, shortcut]))
    h = GlobalAvgPool2D(name="pool")(h)
    return Model(x, Dense(num_classes, name="logits")(h), name="cifar_resnet")


def lenet_digits() -> Model:
    """LeNet-5 for scikit-learn's 1x8x8 digits (what `fusegraph demo` trains)."""
    return lenet((1, 8, 8))


MODELS: dict[str, Callable[[], Model]] = {
    "lenet": lenet,
    "lenet_digits": lenet_digits,
    "cnn1d": cnn1d,
    "lstm_classifier": lstm_classifier,
    "gru_forecaster": gru_forecaster,
    "cnn_lstm": cnn_lstm,
    "resnet_block": resnet_block,
    "cifar_cnn": cifar_cnn,
    "cifar_resnet": cifar_resnet,
}

# the loss each zoo model trains with (tests and benchmarks train them so)
LOSSES: dict[str, str] = {"lenet": "cross_entropy", "lenet_digits": "cross_entropy", "cnn1d": "mse",
                          "lstm_classifier": "binary_cross_entropy", "gru_forecaster": "mse", "cnn_lstm": "mse",
                          "resnet_block": "mse", "cifar_cnn": "cross_entropy", "cifar_resnet": "cross_entropy"}


def get(name: str) -> Model:
    """A zoo model by name, with its default configuration."""
    if name not in MODELS:
        raise GraphError(f"unknown zoo model {name!r}; choose one of {', '.join(MODELS)}")
    return MODELS[name]()
