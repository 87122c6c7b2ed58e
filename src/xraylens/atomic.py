"""Atomic file writes: a crash or Ctrl-C mid-write never leaves a half-written report or checkpoint.

Every writer goes to a temporary file in the destination folder (same file
system, so ``os.replace`` is atomic) and renames it over the target only once
the bytes are flushed to disk.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; on success it replaces ``path``, on error it is removed."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        with open(tmp, "rb+") as handle:
            os.fsync(handle.fileno())
        # mkstemp creates the file 0600; give it the mode a plain open() would (0666 less the umask),
        # so reports and checkpoints can be shared like any other file
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, target)
    finally:
        if tmp.exists():
            tmp.unlink()


def _umask() -> int:
    current = os.umask(0)  # the only portable way to read it is to set it
    os.umask(current)
    return current


def atomic_write_with(path: str | Path, writer: Callable[[IO[bytes]], Any]) -> Path:
    """Call ``writer(binary_file)`` on a temporary file, then move it into place."""
    with atomic_path(path) as tmp, open(tmp, "wb") as handle:
        writer(handle)
    return Path(path)


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    return atomic_write_with(path, lambda handle: handle.write(data))


def atomic_write_text(path: str | Path, text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | Path, obj: Any) -> Path:
    return atomic_write_text(path, json.dumps(obj, indent=2, allow_nan=False, default=_json_default) + "\n")


def _json_default(value: Any) -> Any:
    """numpy scalars/arrays and paths appear in reports; make them JSON without a custom encoder everywhere."""
    if hasattr(value, "tolist"):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")
