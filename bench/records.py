"""Benchmark results on disk: one JSON object per line, appended so that a run killed at any moment
keeps every record it finished and never leaves one that breaks the next read.

A record is written with one `write` of the whole line to a file opened for appending, then fsync'd:
a kill between records loses nothing, a kill inside the write can leave at most a truncated last
line, which `read` skips with a warning (a later append starts on a fresh line)."""

from __future__ import annotations

import json
import os
import traceback
import warnings
from pathlib import Path


def append(path: Path, record: dict) -> None:
    """Appends `record` as one line, atomically as far as readers of this module go."""
    path.parent.mkdir(parents=True, exist_ok=True)
    line = (json.dumps(record) + "\n").encode()
    fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        if _ends_mid_line(fd):
            line = b"\n" + line  # NOTE: a killed writer's truncated line stays one bad line, not two
        os.write(fd, line)
        os.fsync(fd)
    finally:
        os.close(fd)


def _ends_mid_line(fd: int) -> bool:
    size = os.fstat(fd).st_size
    return size > 0 and os.pread(fd, 1, size - 1) != b"\n"


def read(path: Path) -> list[dict]:
    """Every whole record in `path` (none if it does not exist); a line that is not a JSON object (a
    write cut off by a kill) is skipped with a warning."""
    if not path.is_file():
        return []
    records = []
    for number, line in enumerate(path.read_text(errors="replace").splitlines(), 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            record = None
        if not isinstance(record, dict):
            warnings.warn(f"{path}:{number}: skipped a line that is not a whole record (a write cut off?)",
                          RuntimeWarning, stacklevel=2)
            continue
        records.append(record)
    return records


def failure(error: BaseException, frames: int = 4) -> dict[str, object]:
    """What went wrong, for a result file: the exception's type and message and its last frames."""
    stack = traceback.extract_tb(error.__traceback__)[-frames:]
    return {"error": type(error).__name__, "message": str(error).strip()[:2000],
            "frames": [f"{frame.filename}:{frame.lineno} in {frame.name}" for frame in stack]}
