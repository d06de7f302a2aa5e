"""Generated kernel sources on disk, keyed by a hash of their text, and the modules that run them.

Trust model: what runs is always the source text fusegraph generated in this process, never bytes
read back from disk. `load` compiles that text itself (no bytecode is written or read) and registers
the same text with `linecache`, so Triton's JIT and its interpreter, which re-read a kernel's source
through `inspect`, see exactly the text that was compiled even if the file changes afterwards. The
files are written for people to read (`fusegraph show --kernels`); a corrupt or edited entry is
rewritten, never trusted.

The folder is `$FUSEGRAPH_CACHE`, else `~/.cache/fusegraph/kernels`, created private (0700). A folder
owned by another user or writable by others is refused (`CacheError`, naming the variable). One that
cannot be written (read-only, a file in its place, a folder at an entry's path) is replaced by a
private temporary folder for the rest of the process, with one warning; it is deleted at exit, and no
temporary file is ever left behind."""

from __future__ import annotations

import atexit
import contextlib
import hashlib
import linecache
import os
import shutil
import stat
import sys
import tempfile
import threading
import warnings
from pathlib import Path
from types import ModuleType

from ..ir import CacheError

VARIABLE = "FUSEGRAPH_CACHE"


_LOCK = threading.RLock()
_FALLBACK: Path | None = None
_LOADED: dict[str, ModuleType] = {}


def configured_dir() -> Path:
    root = os.environ.get(VARIABLE)
    return Path(root) if root else Path.home() / ".cache" / "fusegraph" / "kernels"


def _check_private(path: Path) -> None:
    info = path.stat()
    origin = f"${VARIABLE}={path}" if os.environ.get(VARIABLE) else f"the kernel cache {path} (set ${VARIABLE} to move it)"
    if hasattr(os, "getuid") and info.st_uid != os.getuid():
        raise CacheError(f"{origin} is owned by another user (uid {info.st_uid}); fusegraph writes kernels it runs "
                         f"there, so it must be your own folder: point ${VARIABLE} at a folder you own")
    if info.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        raise CacheError(f"{origin} is writable by other users (mode {stat.filemode(info.st_mode)}); make it private "
                         f"(chmod 700) or point ${VARIABLE} at a private folder")


def _use_fallback(reason: BaseException) -> Path:
    global _FALLBACK
    if _FALLBACK is None:
        _FALLBACK = Path(tempfile.mkdtemp(prefix="fusegraph-kernels-"))  # mkdtemp: private (0700)
        atexit.register(shutil.rmtree, _FALLBACK, True)
        warnings.warn(f"fusegraph: cannot write the kernel cache {configured_dir()} ({type(reason).__name__}: {reason}); "
                      f"using a private temporary cache for this process (set ${VARIABLE} to a writable folder)",
                      RuntimeWarning, stacklevel=3)
    return _FALLBACK


def cache_dir() -> Path:
    """The folder kernels are written to: the configured one if it is private and writable, else the fallback."""
    with _LOCK:
        if _FALLBACK is not None:
            return _FALLBACK
        path = configured_dir()
        try:
            path.mkdir(mode=0o700, parents=True, exist_ok=True)
        except OSError as error:
            return _use_fallback(error)
        _check_private(path)
        if not os.access(path, os.W_OK | os.X_OK):
            return _use_fallback(PermissionError(f"no write permission on {path}"))
        return path


def digest(source: str) -> str:
    return hashlib.sha256(source.encode()).hexdigest()[:20]


def entry_path(name: str, source: str) -> Path:
    return cache_dir() / f"{name}_{digest(source)}.py"


def _write(path: Path, source: str) -> None:
    """Write-then-rename, so a concurrent reader never sees half a file; the temporary file never outlives a failure."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as handle:
            handle.write(source)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def store(name: str, source: str) -> Path:
    """The path of a cache entry holding exactly `source`, (re)written if absent or not matching."""
    with _LOCK:
        for _attempt in range(2):
            path = entry_path(name, source)
            try:
                if path.is_file() and path.read_text() == source:
                    return path
            except (OSError, UnicodeDecodeError):
                pass
            try:
                _write(path, source)
                return path
            except OSError as error:
                if _FALLBACK is not None:
                    raise
                _use_fallback(error)
        raise AssertionError("unreachable")


def load(name: str, source: str) -> ModuleType:
    """The module compiled from `source` itself (once per process); the cache file is written beside it."""
    key = f"{name}_{digest(source)}"
    with _LOCK:
        path = store(name, source)
        if key not in _LOADED:
            # NOTE: a name no file has: if linecache is ever cleared, inspect fails instead of reading disk
            filename = f"<fusegraph kernel {path}>"
            lines = source.splitlines(keepends=True)
            linecache.cache[filename] = (len(source), None, lines, filename)  # mtime None: never re-checked
            module = ModuleType(f"fusegraph_kernels.{key}")
            module.__file__ = filename
            # NOTE: Triton's JIT reads the function's source through linecache/inspect: register first
            sys.modules[module.__name__] = module
            exec(compile(source, filename, "exec", dont_inherit=True), module.__dict__)
            _LOADED[key] = module
        return _LOADED[key]
