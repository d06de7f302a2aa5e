"""Compile or interpret: Triton reads TRITON_INTERPRET when a kernel is defined (`triton.jit`), so the
choice is made here, before fusegraph defines any: without a CUDA device, use the interpreter. A value
the user set stays.

Triton's own language helpers (`tl.cdiv`, `tl.sum`, `tl.rand`, ...) are `triton.jit` functions too,
defined when triton.language is first imported. Importing torch._dynamo (any `torch.compile`, hence our
backend) or torchvision imports triton before fusegraph can choose; those helpers are then compiled-mode
functions that an interpreted kernel cannot call ("Cannot call @triton.jit'd outside of the scope of a
kernel"). So when interpreting, the modules that define them are executed again, as if the choice had
come first."""

from __future__ import annotations

import importlib
import os
import sys

import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

INTERPRETING = os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")

# the triton.language modules whose helpers are `triton.jit` functions, then the package that re-exports them
_HELPER_MODULES = ("triton.language.standard", "triton.language.random", "triton.language")


def _language_defined_compiled() -> bool:
    standard = sys.modules.get("triton.language.standard")
    if standard is None:
        return False
    from triton.runtime.jit import JITFunction

    return isinstance(getattr(standard, "cdiv", None), JITFunction)


def _redefine_language_helpers_interpreted() -> None:
    for name in _HELPER_MODULES:
        importlib.reload(sys.modules[name])


if INTERPRETING and _language_defined_compiled():
    _redefine_language_helpers_interpreted()
