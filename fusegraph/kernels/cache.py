"""Generated kernel sources on disk, keyed by a hash of their text.

The folder is `$FUSEGRAPH_CACHE`, else `~/.cache/fusegraph/kernels`. An entry whose text does not
hash to its name (corrupt, truncated, edited) is rewritten before it is loaded, never trusted."""

from __future__ import annotations

import hashlib
import importlib.util
import os
import sys
import tempfile
from pathlib import Path
from types import ModuleType


def cache_dir() -> Path:
    root = os.environ.get("FUSEGRAPH_CACHE")
    path = Path(root) if root else Path.home() / ".cache" / "fusegraph" / "kernels"
    path.mkdir(parents=True, exist_ok=True)
    return path


def digest(source: str) -> str:
    return hashlib.sha256(source.encode()).hexdigest()[:20]


def entry_path(name: str, source: str) -> Path:
    return cache_dir() / f"{name}_{digest(source)}.py"


def store(name: str, source: str) -> Path:
    """The path of a cache entry holding exactly `source`, (re)written if absent or not matching."""
    path = entry_path(name, source)
    try:
        if path.read_text() == source:
            return path
    except (OSError, UnicodeDecodeError):
        pass
    # NOTE: write-then-rename so a concurrent reader never sees half a file
    with tempfile.NamedTemporaryFile("w", dir=path.parent, suffix=".tmp", delete=False) as tmp:
        tmp.write(source)
    os.replace(tmp.name, path)
    return path


_LOADED: dict[Path, ModuleType] = {}


def load(name: str, source: str) -> ModuleType:
    """Import the module for `source` from the cache (once per process)."""
    path = store(name, source)
    if path not in _LOADED:
        module_name = f"fusegraph_kernels.{path.stem}"
        spec = importlib.util.spec_from_file_location(module_name, path)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        # NOTE: Triton's JIT reads the function's source through linecache/inspect: register first
        sys.modules[module_name] = module
        spec.loader.exec_module(module)
        _LOADED[path] = module
    return _LOADED[path]
