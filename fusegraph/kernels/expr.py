"""Triton for an op's backend-neutral formula (ir/ops/expr.py), and the names generated code uses.

`to_triton` renders an Expr with its inputs bound to names; `Names` hands out identifiers taken from
the IR's value names (`conv1.act` -> `conv1_act`), never one the kernel's template uses itself."""

from __future__ import annotations

import builtins
import keyword
import re
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from ..ir.ops.expr import FUNCTIONS, Arg, Attr, Call, Const, Expr, attr_value
from .layout import LAYOUT_HELPERS

TRITON = {
    "add": "{0} + {1}", "sub": "{0} - {1}", "mul": "{0} * {1}", "div": "{0} / {1}", "neg": "-{0}",
    "lt": "{0} < {1}", "le": "{0} <= {1}", "gt": "{0} > {1}", "ge": "{0} >= {1}", "or": "{0} | {1}", "and": "{0} & {1}",
    "where": "tl.where({0}, {1}, {2})",
    "exp": "tl.exp({0})", "log": "tl.log({0})", "log1p": "_log1p({0})",
    "abs": "tl.abs({0})", "erf": "tl.math.erf({0})", "rsqrt": "tl.math.rsqrt({0})",
    # NOTE: our own helpers (HELPERS below): libdevice tanh and log1p fail in the interpreter, and exp(-|x|) saturates
    "sigmoid": "_sigmoid({0})", "tanh": "_tanh({0})",
}
INFIX = {"add", "sub", "mul", "div", "neg", "lt", "le", "gt", "ge", "or", "and"}
assert set(TRITON) == set(FUNCTIONS), "every function of ir/ops/expr.py needs a Triton form"

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
    "_log1p(": '''
@triton.jit
def _log1p(x):
    # NOTE: 1 + x rounds x's low bits away; log(w) / (w - 1) is exact for the w that rounding gave
    w = 1.0 + x
    return tl.where(w == 1.0, x, tl.log(w) * (x / (w - 1.0)))
''',
}


HELPERS.update(LAYOUT_HELPERS)


def helpers_for(source: str) -> str:
    return "".join(code for call, code in HELPERS.items() if call in source)


def to_triton(expr: Expr, operands: Sequence[str], attrs: Mapping[str, Any], assign: Callable[[str], str]) -> str:
    """A Triton expression for `expr`, input i read as `operands[i]`; a subtree the formula uses twice
    is computed once, into the name `assign(expression)` returns."""
    uses: Counter[int] = Counter()

    def count(e: Expr) -> None:
        uses[id(e)] += 1
        if uses[id(e)] == 1 and isinstance(e, Call):
            for a in e.args:
                count(a)

    count(expr)
    named: dict[int, str] = {}

    def render(e: Expr, nested: bool) -> str:
        if isinstance(e, Arg):
            return operands[e.index]
        if isinstance(e, (Const, Attr)):
            value = e.value if isinstance(e, Const) else attr_value(e, attrs)
            return f"({value!r})" if value < 0 and nested else repr(value)
        assert isinstance(e, Call)
        if id(e) in named:
            return named[id(e)]
        text = TRITON[e.fn].format(*(render(a, e.fn in INFIX) for a in e.args))
        if uses[id(e)] > 1 and e is not expr:
            named[id(e)] = assign(text)
            return named[id(e)]
        return f"({text})" if nested and e.fn in INFIX else text

    return render(expr, False)


_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
ARGUMENT_PARTS = ("ptr", "rs", "ts", "inner", "channels")


def local_name(name: str) -> str:
    """A value's name without its layer's prefix (`conv1.bias_add` -> `bias_add`), so the same layer
    shape in two places generates the same kernel text (Triton compiles it once)."""
    return name.rsplit(".", 1)[-1]


def _identifier(hint: str) -> str:
    base = re.sub(r"\W+", "_", hint).strip("_") or "v"
    return f"v{base}" if base[0].isdigit() else base


class Names:
    """Identifiers for one kernel's generated values: readable, unique, and none of `template`'s own."""

    def __init__(self, template: str, generated: Iterable[str] = ()) -> None:
        """`generated`: identifiers the template's own code generation makes (`acc0`, `b1`, ...)."""
        self.taken = set(_IDENTIFIER.findall(template)) | set(generated) | set(keyword.kwlist) | set(dir(builtins)) | {
            "tl", "triton", *(call.rstrip("(") for call in HELPERS)}
        self.stems: dict[str, str] = {}
        self.lists: dict[tuple[str, ...], list[str]] = {}
        self.roles: dict[str, str] = {}  # value name -> the role its argument is named for (x, w, bias, out)

    def argument(self, value: Any) -> str:
        """The stem of the kernel arguments for `value`: `<stem>_ptr` points at it, `<stem>_rs` (row
        stride), `_ts` (time stride), `_inner`, `_channels` describe it; the same stem every time asked."""
        if value.name not in self.stems:
            self.stems[value.name] = self._new_stem(self.roles.get(value.name, local_name(value.name)))
        return self.stems[value.name]

    def arguments(self, values: Sequence[Any]) -> list[str]:
        """One stem per position (a value passed twice, as in add(x, x), is two arguments)."""
        key = tuple(v.name for v in values)
        if key not in self.lists:
            seen: set[str] = set()
            stems = []
            for v in values:
                stems.append(self._new_stem(local_name(v.name)) if v.name in seen else self.argument(v))
                seen.add(v.name)
            self.lists[key] = stems
        return self.lists[key]

    def signature(self, inputs: Sequence[Any], outputs: Sequence[Any]) -> str:
        """The kernel's pointer arguments: inputs, then outputs."""
        return ", ".join(f"{stem}_ptr" for stem in (*self.arguments(inputs), *self.arguments(outputs)))

    def _new_stem(self, hint: str) -> str:
        base = _identifier(hint)
        stem, suffix = base, 1
        while any(f"{stem}_{part}" in self.taken for part in ARGUMENT_PARTS):
            stem, suffix = f"{base}_{suffix}", suffix + 1
        self.taken |= {f"{stem}_{part}" for part in ARGUMENT_PARTS}
        return stem

    def fresh(self, hint: str) -> str:
        base = _identifier(hint)
        name, suffix = base, 1
        while name in self.taken:
            name, suffix = f"{base}_{suffix}", suffix + 1
        self.taken.add(name)
        return name
