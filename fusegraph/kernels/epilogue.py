"""Generates the elementwise code of a kernel from its group's nodes.

Each value is a list of tile expressions, one per gate (one when the tile has no gates). A template
supplies a `Tile`: how to load an outside operand (element by element, or per channel), and how to
store a result; the emitter turns each node into one line of Triton, in graph order."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from ..ir import GraphError, Node, Value
from ..ir.ops import channel_inputs, get_op, has_trait
from .expr import Names, local_name, to_triton


@dataclass
class Tile:
    """How one template addresses its tile. `gates`: how many gate-wide slices a full-width value has."""

    load_full: Callable[[int, Value, int], str]  # (input index, value, gate) -> expression
    load_channel: Callable[[int, Value, int], str]
    softmax: Callable[[str, bool, str], list[str]] | None = None  # (value, log, result) -> lines defining result
    gates: int = 1
    gate_width: Callable[[Value], int] = field(default=lambda v: 1)


class Emitter:
    """Emits a group's elementwise nodes as Triton lines; each value is named after the IR's value
    (`names` keeps them apart from each other and from the template's own identifiers)."""

    def __init__(self, tile: Tile, input_index: Callable[[Value], int], names: Names, indent: str = "    ") -> None:
        self.tile = tile
        self.input_index = input_index
        self.names = names
        self.indent = indent
        self.env: dict[str, list[str]] = {}
        self.vectors: dict[tuple[str, int], str] = {}  # (value, gate) -> its per-channel vector's local
        self.lines: list[str] = []

    def bind(self, value: Value, tiles: list[str]) -> None:
        self.env[value.name] = tiles

    def operand(self, value: Value) -> list[str]:
        if value.name not in self.env:
            index = self.input_index(value)
            gates = self.tile.gate_width(value)
            loads = [self.tile.load_full(index, value, g) for g in range(gates)]
            # a template may hand back a tile it already named (a scan's prefetched steps): used as it is
            self.env[value.name] = [load if load.isidentifier() else
                                    self._assign(load, _gate_hint(local_name(value.name), g, gates))
                                    for g, load in enumerate(loads)]
        return self.env[value.name]

    def vector(self, value: Value, gate: int) -> str:
        """A per-channel vector (a bias), loaded once into a local named after it."""
        key = (value.name, gate)
        if key not in self.vectors:
            load = self.tile.load_channel(self.input_index(value), value, gate)
            # a template may hand back a vector it already named (a scan's loop constants): used as it is
            self.vectors[key] = load if load.isidentifier() else \
                self._assign(load, _gate_hint(local_name(value.name), gate, self.tile.gates))
        return self.vectors[key]

    def _assign(self, expression: str, hint: str) -> str:
        name = self.names.fresh(hint)
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
        if has_trait(node, "softmax"):
            (tile,) = self.operand(node.inputs[0])
            assert self.tile.softmax is not None
            result = self.names.fresh(_value_hint(node, node.outputs[0]))
            self.lines += [self.indent + line for line in self.tile.softmax(tile, op == "log_softmax", result)]
            self.env[node.outputs[0].name] = [result]
            return
        math = get_op(op).math
        if math is None:
            raise GraphError(f"{node.where}: {op} cannot be generated as elementwise code")
        first = self.operand(node.inputs[0])
        vectors = channel_inputs(node)
        rest = [[self.vector(v, g) for g in range(len(first))] if i in vectors else self.operand(v)
                for i, v in enumerate(node.inputs) if i >= 1]
        out = node.outputs[0]
        results = []
        for g, operands in enumerate(zip(first, *rest)):
            hint = _gate_hint(_value_hint(node, out), g, len(first))
            expression = to_triton(math, operands, node.attrs, lambda text, h=hint: self._assign(text, h))
            results.append(self._assign(expression, hint))
        self.env[out.name] = results

    def emit_all(self, nodes) -> list[str]:
        for node in nodes:
            self.emit(node)
        return self.lines


def _gate_hint(base: str, gate: int, gates: int) -> str:
    return base if gates == 1 else f"{base}_{gate}"


def _value_hint(node: Node, value: Value) -> str:
    """What a computed value is called in the kernel: its IR name without the layer prefix, or the op
    when the value is named for its whole layer (`conv1` -> `relu`), so equal layers make equal kernels."""
    return node.op if value.name == node.layer else local_name(value.name)
