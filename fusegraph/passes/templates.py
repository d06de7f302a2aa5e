"""What the kernel templates accept, asked by the passes without importing the templates.

Each template built around an op (its anchor: a conv, a matmul, a pool gradient; or none, for an
elementwise chain) registers an `Anchor` record: what may join its kernel, which fusion's join rules
read instead of asking what kind of kernel it is. A template's limits (a row that must fit one
block, a hidden state that must fit one tile) are facts of the template too: kernels/ registers them
by kind (`register_check`) and a pass asks `refusal(kind, subject)` before it builds a group the
template would have to run. The first question
imports the templates (fusegraph.kernels) if nothing has yet: passes never import kernels/ by name."""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

CHECKS: dict[str, Callable[[Any], str | None]] = {}
CHAIN = "pointwise"  # the elementwise chain's template: the name its Anchor is registered under


@dataclass(frozen=True)
class Anchor:
    """What the kernel template built around an op takes in beside it."""

    template: str  # as decisions name it: "conv", "matmul", ...
    epilogue: bool = True  # ops reading its output may join (False: only a bias gradient beside it)
    channel_axis: int | None = None  # the axis a per-channel vector (a bias) runs along in its tile; None: any
    per_channel: bool = True  # whether per-channel vectors join at all
    same_type: bool = False  # every epilogue op has the anchor output's exact type (one tile of it)
    prologue: str | None = None  # the trait of the ops applied to its data input as it is loaded
    ends: frozenset[str] = frozenset()  # traits of the ops that may end it: "pool", "global_pool", "softmax"
    gates: bool = False  # its values may split into equal gates along the last axis and join back
    chain: bool = False  # elementwise work only: operands of the chain's shape or its gates'; producers absorbed
    computed_operand: bool = False  # an elementwise chain may compute its data operand inside its K loop
    bias_gradient: tuple[int, int] | None = None  # (input, axis): a bias gradient summing them is reduced inside


ANCHORS: dict[str, Anchor] = {}


def register_anchor(ops: Iterable[str], anchor: Anchor) -> None:
    """The template of each of `ops` (or CHAIN) is built around it and takes in what `anchor` says."""
    for op in ops:
        ANCHORS[op] = anchor


def anchor_of(op: str) -> Anchor | None:
    """The Anchor of the template built around `op` (CHAIN: the elementwise chain's), or None."""
    _load_templates()
    return ANCHORS.get(op)


def register_check(kind: str, check: Callable[[Any], str | None]) -> None:
    """`check(subject)`: None when the template of `kind` runs `subject`, else the reason it cannot."""
    CHECKS[kind] = check


def refusal(kind: str, subject: Any) -> str | None:
    _load_templates()
    check = CHECKS.get(kind)
    if check is None:
        raise RuntimeError(f"no template registered a check for {kind!r}")
    return check(subject)


def _load_templates() -> None:
    if not CHECKS:
        importlib.import_module("fusegraph.kernels")  # the templates register as they are defined
