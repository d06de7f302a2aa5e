"""Triton's interpreter without its dead work: what makes kernels run several times faster on the CPU,
with bit-identical results. Installed once, when interpreting (kernels/__init__.py); nothing changes on
a GPU.

- Integer overflow sanitising off: the interpreter builds, for every integer add, sub and mul, an int64
  copy of both operands, the operation again and two range comparisons, then hands them to a
  `device_assert` that does nothing (the interpreter's options never set `debug`): over half of a LeNet
  training step. FUSEGRAPH_INTERPRETER_DEBUG=1 leaves the interpreter exactly as Triton ships it.
- triton.language is patched for the interpreter once, not on every launch and every call of a
  `@triton.jit` helper (kernels/layout.py's addressing helpers: hundreds a launch), each of which walked
  the language modules anew (about 4 ms): the patches depend on nothing a launch sets, and upstream
  already leaves a helper's in place.
- numpy's BLAS, which the interpreter's tl.dot calls, runs on one thread inside a launch: the blocks are
  small and its thread pool's wake-ups cost more than they save (3x slower under load on 2 cores).
- numpy's floating-point warnings ("overflow encountered in cast", "invalid value") stay inside a
  launch: a kernel computing inf or NaN on a GPU says nothing either (float16 training overflows on
  purpose while its loss scale backs off); the values themselves are unchanged.

Each piece checks that the Triton it patches has what it expects, and is skipped otherwise (a Triton
whose interpreter differs keeps its own behaviour)."""

from __future__ import annotations

import dataclasses
import functools
import os
import threading
import warnings

DEBUG = os.environ.get("FUSEGRAPH_INTERPRETER_DEBUG", "0") not in ("", "0")
_STATE = threading.local()
installed: list[str] = []  # which pieces took: read by tests and `fusegraph` diagnostics
patches: list[str] = []  # the kernels (or helpers) whose launch patched triton.language: once per module
blas_libraries: list[str] = []  # the BLAS libraries a launch runs on one thread


def install() -> list[str]:
    """Applies every piece this Triton supports, once; returns their names."""
    if installed:
        return installed
    from triton.runtime import interpreter

    if DEBUG:
        return installed
    for piece in (_overflow_checks_off, _language_patched_once, _one_blas_thread_per_launch, _numpy_quiet_in_launches):
        if piece(interpreter):
            installed.append(piece.__name__.strip("_"))
    return installed


def _overflow_checks_off(interpreter) -> bool:
    builder = getattr(interpreter, "interpreter_builder", None)
    options = getattr(builder, "options", None)
    if options is None or not dataclasses.is_dataclass(options) or not hasattr(options, "sanitize_overflow"):
        return False
    builder.options = dataclasses.replace(options, sanitize_overflow=False)
    return True


class _KeptPatch:
    """What `_patch_lang` returns once the language is patched for good: nothing to restore."""

    def restore(self) -> None:
        pass


def _language_patched_once(interpreter) -> bool:
    patch = getattr(interpreter, "_patch_lang", None)
    if patch is None or not hasattr(getattr(interpreter, "_LangPatchScope", None), "restore"):
        return False
    import triton.language as tl

    languages = (tl, tl.core)
    done: set[int] = set()
    kept = _KeptPatch()

    @functools.wraps(patch)
    def patch_once(fn):
        wanted = {id(v) for v in fn.__globals__.values() if any(v is lang for lang in languages)}
        if not wanted <= done:
            patch(fn)  # NOTE: never restored: the patches read no launch state (upstream's helper calls leave them too)
            done.update(wanted)
            patches.append(fn.__name__)
        return kept

    interpreter._patch_lang = patch_once
    return True


def _one_blas_thread_per_launch(interpreter) -> bool:
    executor = getattr(interpreter, "GridExecutor", None)
    try:
        from threadpoolctl import ThreadpoolController
    except ImportError:
        return False
    if executor is None:
        return False
    controller = ThreadpoolController().select(user_api="blas")  # numpy's, loaded with it: what tl.dot calls
    if not controller.lib_controllers:
        return False
    blas_libraries.extend(lib.filepath for lib in controller.lib_controllers)
    launch = executor.__call__

    @functools.wraps(launch)
    def launch_on_one_thread(self, *args, **kwargs):
        if getattr(_STATE, "one_thread", False):
            return launch(self, *args, **kwargs)
        _STATE.one_thread = True
        try:
            with controller.limit(limits=1):
                return launch(self, *args, **kwargs)
        finally:
            _STATE.one_thread = False

    executor.__call__ = launch_on_one_thread
    return True


def _numpy_quiet_in_launches(interpreter) -> bool:
    executor = getattr(interpreter, "GridExecutor", None)
    if executor is None:
        return False
    import numpy as np

    launch = executor.__call__

    @functools.wraps(launch)
    def launch_quietly(self, *args, **kwargs):
        # NOTE: errstate for arithmetic; numpy's nan-reductions ("All-NaN slice") warn through `warnings`
        with np.errstate(all="ignore"), warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            return launch(self, *args, **kwargs)

    executor.__call__ = launch_quietly
    return True
