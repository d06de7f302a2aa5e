"""Generates the elementwise code of a kernel from its group's nodes.

Each value is a list of tile expressions, one per gate (one when the tile has no gates). A template
supplies a `Tile`: how to load an outside operand (element by element, or per channel), and how to
store a result; the emitter turns each node into one line of Triton, in graph order."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from ..ir import GraphError, Node, Value
from ..ir.ops.pointwise import LEAKY_SLOPE

EXPRESSIONS = {
    # NOTE: written as selections that keep NaN (tl.maximum drops it), as torch's relu does
    "relu": "tl.where({0} < 0, 0.0, {0})",
    "leaky_relu": "tl.where({0} >= 0, {0}, {0} * {negative_slope!r})",
    "sigmoid": "_sigmoid({0})",
    "tanh": "_tanh({0})",
    "add": "{0} + {1}",
    "sub": "{0} - {1}",
    "mul": "{0} * {1}",
    "bias_add": "{0} + {1}",
    "neg": "-{0}",
    # gradients: (output gradient, the forward value the rule reads), PyTorch's formulas
    "relu_bwd": "tl.where({1} <= 0, 0.0, {0})",  # a NaN input passes its gradient, as torch's threshold_backward
    "leaky_relu_bwd": "tl.where({1} > 0, {0}, {0} * {negative_slope!r})",
    "sigmoid_bwd": "{0} * (1.0 - {1}) * {1}",
    "tanh_bwd": "{0} * (1.0 - {1} * {1})",
}

HELPERS = {
    "_tanh(": '''
@triton.jit
def _tanh(x):
    # NOTE: libdevice tanh fails in the interpreter; near 0 a series avoids the cancellation in (1-e)/(1+e)
    ax = tl.abs(x)
    e = tl.exp(-2.0 * ax)
    far = (1.0 - e) / (1.0 + e)
    x2 = x * x
    near = ax * (1.0 - x2 * (1.0 / 3.0 - x2 * (2.0 / 15.0)))
    t = tl.where(ax < 0.0625, near, far)
    return tl.where(x < 0, -t, t)
''',
    "_sigmoid(": '''
@triton.jit
def _sigmoid(x):
    # NOTE: exp of -|x| only, so large inputs saturate without overflowing
    e = tl.exp(-tl.abs(x))
    return tl.where(x >= 0, 1.0 / (1.0 + e), e / (1.0 + e))
''',
}


def helpers_for(source: str) -> str:
    return "".join(code for call, code in HELPERS.items() if call in source)


@dataclass
class Tile:
    """How one template addresses its tile. `gates`: how many gate-wide slices a full-width value has."""

    load_full: Callable[[int, Value, int], str]  # (input index, value, gate) -> expression
    load_channel: Callable[[int, Value, int], str]
    softmax: Callable[[str, bool], list[str]] | None = None  # (value, log) -> lines defining `_sm`
    gates: int = 1
    gate_width: Callable[[Value], int] = field(default=lambda v: 1)


class Emitter:
    def __init__(self, tile: Tile, input_index: Callable[[Value], int], indent: str = "    ") -> None:
        self.tile = tile
        self.input_index = input_index
        self.indent = indent
        self.env: dict[str, list[str]] = {}
        self.lines: list[str] = []
        self.counter = 0

    def bind(self, value: Value, tiles: list[str]) -> None:
        self.env[value.name] = tiles

    def operand(self, value: Value) -> list[str]:
        if value.name not in self.env:
            index = self.input_index(value)
            gates = self.tile.gate_width(value)
            self.env[value.name] = [self._assign(self.tile.load_full(index, value, g)) for g in range(gates)]
        return self.env[value.name]

    def _assign(self, expression: str) -> str:
        name = f"t{self.counter}"
        self.counter += 1
        self.lines.append(f"{self.indent}{name} = {expression}")
        return name

    def emit(self, node: Node) -> None:
        op = node.op
        if op == "split":
            tiles = self.operand(node.inputs[0])
            if len(tiles) != len(node.outputs):
                raise GraphError(f"{node.where}: a {len(node.outputs)}-way split of a {len(tiles)}-gate tile")
            for out, tile in zip(node.outputs, tiles):
                self.env[out.name] = [tile]
            return
        if op == "concat":  # gate tiles joined back into one full-width value: stored at their gate offsets
            self.env[node.outputs[0].name] = [self.operand(v)[0] for v in node.inputs]
            return
        if op in ("softmax", "log_softmax"):
            (tile,) = self.operand(node.inputs[0])
            assert self.tile.softmax is not None
            for line in self.tile.softmax(tile, op == "log_softmax"):
                self.lines.append(self.indent + line)
            self.env[node.outputs[0].name] = [self._assign("_sm")]
            return
        if op not in EXPRESSIONS:
            raise GraphError(f"{node.where}: {op} cannot be generated as elementwise code")
        first = self.operand(node.inputs[0])
        if op == "bias_add":
            index = self.input_index(node.inputs[1])
            second = [self.tile.load_channel(index, node.inputs[1], g) for g in range(len(first))]
        elif len(node.inputs) == 2:
            second = self.operand(node.inputs[1])
        else:
            second = [None] * len(first)
        attrs = {"negative_slope": LEAKY_SLOPE, **dict(node.attrs)}
        results = [self._assign(EXPRESSIONS[op].format(a, b, **attrs)) for a, b in zip(first, second)]
        self.env[node.outputs[0].name] = results

    def emit_all(self, nodes) -> list[str]:
        for node in nodes:
            self.emit(node)
        return self.lines
