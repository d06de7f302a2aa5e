"""Triton's interpreter without its dead work: what makes kernels run several times faster on the CPU,
with bit-identical results. Installed once, when interpreting (kernels/__init__.py); nothing changes on
a GPU.

- Integer overflow sanitising off: the interpreter builds, for every integer add, sub and mul, an int64
  copy of both operands, the operation again and two range comparisons, then hands them to a
  `device_assert` that does nothing (the interpreter's options never set `debug`): over half of a LeNet
  training step. FUSEGRAPH_INTERPRETER_DEBUG=1 leaves the interpreter exactly as Triton ships it.
- `@triton.jit` helpers called from a kernel (kernels/layout.py's addressing helpers, hundreds of calls a
  launch) no longer re-patch triton.language on every call: the launch has patched it already.
- numpy's BLAS, which the interpreter's tl.dot calls, runs on one thread inside a launch: the blocks are
  small and its thread pool's wake-ups cost more than they save (3x slower under load on 2 cores).

Each piece checks that the Triton it patches has what it expects, and is skipped otherwise (a Triton
whose interpreter differs keeps its own behaviour)."""

from __future__ import annotations

import dataclasses
import functools
import os
import threading

DEBUG = os.environ.get("FUSEGRAPH_INTERPRETER_DEBUG", "0") not in ("", "0")
_STATE = threading.local()
installed: list[str] = []  # which pieces took: read by tests and `fusegraph` diagnostics


def install() -> list[str]:
    """Applies every piece this Triton supports, once; returns their names."""
    if installed:
        return installed
    from triton.runtime import interpreter

    if DEBUG:
        return installed
    for piece in (_overflow_checks_off, _helpers_run_in_the_launch_scope, _one_blas_thread_per_launch):
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


def _helpers_run_in_the_launch_scope(interpreter) -> bool:
    executor, function = getattr(interpreter, "GridExecutor", None), getattr(interpreter, "InterpretedFunction", None)
    patch = getattr(interpreter, "_patch_lang", None)
    if executor is None or function is None or patch is None or not hasattr(function, "rewrite"):
        return False
    import triton.language as tl

    languages = (tl, tl.core)

    def patched_by(fn) -> frozenset:
        """The language modules `_patch_lang(fn)` patches: those `fn`'s globals hold (tl, tl.core)."""
        return frozenset(id(v) for v in fn.__globals__.values() if any(v is lang for lang in languages))

    launch, call = executor.__call__, function.__call__

    @functools.wraps(launch)
    def launch_marked(self, *args, **kwargs):
        outer = getattr(_STATE, "patched", None)
        _STATE.patched = patched_by(self.fn)
        try:
            return launch(self, *args, **kwargs)
        finally:
            _STATE.patched = outer

    @functools.wraps(call)
    def call_in_launch(self, *args, **kwargs):
        patched = getattr(_STATE, "patched", None)
        # NOTE: a helper reaching triton.language through a module the launch did not patch (Triton's own
        # standard library reads `core`) patches for itself, as upstream does
        if patched is None or not patched_by(self.fn) <= patched:
            return call(self, *args, **kwargs)
        fn = self.rewrite()
        try:
            return fn(*args, **kwargs)
        except Exception as error:
            raise interpreter.InterpreterError(repr(error)) from error

    executor.__call__, function.__call__ = launch_marked, call_in_launch
    return True


def _one_blas_thread_per_launch(interpreter) -> bool:
    executor = getattr(interpreter, "GridExecutor", None)
    try:
        from threadpoolctl import ThreadpoolController
    except ImportError:
        return False
    if executor is None:
        return False
    controller = ThreadpoolController()
    if not controller.select(user_api="blas").lib_controllers:
        return False
    launch = executor.__call__

    @functools.wraps(launch)
    def launch_on_one_thread(self, *args, **kwargs):
        if getattr(_STATE, "one_thread", False):
            return launch(self, *args, **kwargs)
        _STATE.one_thread = True
        try:
            with controller.limit(limits=1, user_api="blas"):
                return launch(self, *args, **kwargs)
        finally:
            _STATE.one_thread = False

    executor.__call__ = launch_on_one_thread
    return True
