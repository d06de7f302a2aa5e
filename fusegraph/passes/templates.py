"""What the kernel templates accept, asked by the passes without importing the templates.

A template's limits (a row that must fit one block, a hidden state that must fit one tile) are facts
of the template, so kernels/ registers them here by kind (`register_check`) and a pass asks
`refusal(kind, subject)` before it builds a group the template would have to run. Importing
fusegraph imports every template, so every check is registered before any pass runs."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

CHECKS: dict[str, Callable[[Any], str | None]] = {}


def register_check(kind: str, check: Callable[[Any], str | None]) -> None:
    """`check(subject)`: None when the template of `kind` runs `subject`, else the reason it cannot."""
    CHECKS[kind] = check


def refusal(kind: str, subject: Any) -> str | None:
    check = CHECKS.get(kind)
    if check is None:
        raise RuntimeError(f"no template registered a check for {kind!r}: import fusegraph.kernels first")
    return check(subject)
