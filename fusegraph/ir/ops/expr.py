"""Backend-neutral pointwise math: an elementwise op's formula as a small expression tree.

An op declares its `math` with the op (ir/ops/pointwise.py); kernels/expr.py translates the tree to
Triton, and `evaluate` runs it on torch tensors, so a test can hold the formula to the op's torch
reference without any kernel. The vocabulary is FUNCTIONS; operators build trees:
`where(x < 0, 0.0, x)`. A subtree used twice is one object, so a backend can compute it once."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch

# name -> arity; what every backend must translate
FUNCTIONS = {
    "add": 2, "sub": 2, "mul": 2, "div": 2, "neg": 1,
    "lt": 2, "le": 2, "gt": 2, "ge": 2, "or": 2, "and": 2, "where": 3,
    "exp": 1, "log": 1, "log1p": 1, "abs": 1, "erf": 1, "sigmoid": 1, "tanh": 1, "rsqrt": 1,
}


class Expr:
    def __add__(self, other: Any) -> Call:
        return Call("add", (self, lift(other)))

    def __radd__(self, other: Any) -> Call:
        return Call("add", (lift(other), self))

    def __sub__(self, other: Any) -> Call:
        return Call("sub", (self, lift(other)))

    def __rsub__(self, other: Any) -> Call:
        return Call("sub", (lift(other), self))

    def __mul__(self, other: Any) -> Call:
        return Call("mul", (self, lift(other)))

    def __rmul__(self, other: Any) -> Call:
        return Call("mul", (lift(other), self))

    def __truediv__(self, other: Any) -> Call:
        return Call("div", (self, lift(other)))

    def __rtruediv__(self, other: Any) -> Call:
        return Call("div", (lift(other), self))

    def __neg__(self) -> Call:
        return Call("neg", (self,))

    def __lt__(self, other: Any) -> Call:
        return Call("lt", (self, lift(other)))

    def __le__(self, other: Any) -> Call:
        return Call("le", (self, lift(other)))

    def __gt__(self, other: Any) -> Call:
        return Call("gt", (self, lift(other)))

    def __ge__(self, other: Any) -> Call:
        return Call("ge", (self, lift(other)))

    def __or__(self, other: Any) -> Call:
        return Call("or", (self, lift(other)))

    def __and__(self, other: Any) -> Call:
        return Call("and", (self, lift(other)))


@dataclass(frozen=True, eq=False)
class Arg(Expr):
    """The op's `index`-th input."""

    index: int


@dataclass(frozen=True, eq=False)
class Const(Expr):
    value: float


@dataclass(frozen=True, eq=False)
class Attr(Expr):
    """A node attribute (a float), with the value it takes when the node does not set it."""

    name: str
    default: float


@dataclass(frozen=True, eq=False)
class Call(Expr):
    fn: str
    args: tuple[Expr, ...]

    def __post_init__(self) -> None:
        if FUNCTIONS.get(self.fn) != len(self.args):
            raise RuntimeError(f"{self.fn!r} is not a function of {len(self.args)} arguments in FUNCTIONS")


def lift(value: Expr | float) -> Expr:
    return value if isinstance(value, Expr) else Const(float(value))


def where(condition: Expr, if_true: Expr | float, if_false: Expr | float) -> Call:
    return Call("where", (condition, lift(if_true), lift(if_false)))


def exp(x: Expr) -> Call:
    return Call("exp", (x,))


def log(x: Expr) -> Call:
    return Call("log", (x,))


def log1p(x: Expr) -> Call:
    """log(1 + x), exact for small x (where 1 + x rounds x's low bits away)."""
    return Call("log1p", (x,))


def erf(x: Expr) -> Call:
    return Call("erf", (x,))


def rsqrt(x: Expr) -> Call:
    return Call("rsqrt", (x,))


def sigmoid(x: Expr) -> Call:
    return Call("sigmoid", (x,))


def tanh(x: Expr) -> Call:
    return Call("tanh", (x,))


SQRT1_2 = math.sqrt(0.5)
INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)


def arity(expr: Expr) -> int:
    """How many inputs the expression reads (one more than its highest Arg index)."""
    if isinstance(expr, Arg):
        return expr.index + 1
    if isinstance(expr, Call):
        return max((arity(a) for a in expr.args), default=0)
    return 0


def attr_value(attr: Attr, attrs: Mapping[str, Any]) -> float:
    return float(attrs.get(attr.name, attr.default))


_TORCH = {
    "add": torch.add, "sub": torch.sub, "mul": torch.mul, "div": torch.div, "neg": torch.neg,
    "lt": torch.lt, "le": torch.le, "gt": torch.gt, "ge": torch.ge, "where": torch.where,
    "or": torch.logical_or, "and": torch.logical_and,
    "exp": torch.exp, "log": torch.log, "log1p": torch.log1p,
    "abs": torch.abs, "erf": torch.erf, "sigmoid": torch.sigmoid, "tanh": torch.tanh,
    "rsqrt": torch.rsqrt,
}


def evaluate(expr: Expr, inputs: Sequence[torch.Tensor], attrs: Mapping[str, Any]) -> torch.Tensor:
    """The expression on torch tensors (for checking a formula against the op's torch reference)."""
    like = inputs[0]

    def run(e: Expr) -> torch.Tensor:
        if isinstance(e, Arg):
            return inputs[e.index]
        if isinstance(e, Const):
            return torch.full_like(like, e.value)
        if isinstance(e, Attr):
            return torch.full_like(like, attr_value(e, attrs))
        assert isinstance(e, Call)
        return _TORCH[e.fn](*(run(a) for a in e.args))

    return run(expr)
