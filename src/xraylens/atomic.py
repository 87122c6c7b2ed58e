"""Atomic file writes: a crash or Ctrl-C mid-write never leaves a half-written report or checkpoint.

Every writer goes to a temporary file in the destination folder (same file
system, so ``os.replace`` is atomic) and renames it over the target only once
the bytes are flushed to disk.

A write that fails (a full disk, a quota, a read-only mount) raises
:class:`AtomicWriteError`, which names the file and says the previous version
is untouched; writers such as ``torch.save`` that wrap the operating system's
error in their own exception are unwrapped to it.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any


class AtomicWriteError(OSError):
    """A file could not be written; the message names it, the cause and the fix, and the old file is intact."""

    def __init__(self, target: Path, cause: OSError) -> None:
        super().__init__(cause.errno, cause.strerror or str(cause), str(target))
        hint = _HINTS.get(cause.errno or -1, "")
        self.message = (f"cannot write {target}: {cause.strerror or cause}{hint}; nothing was replaced "
                        f"(an earlier {target.name}, if there was one, is intact)")

    def __str__(self) -> str:
        return self.message

    def __reduce__(self):  # crosses process boundaries (worker pools) with its message intact
        return (_rebuilt, (self.errno, self.strerror, self.filename, self.message))


def _rebuilt(code: int | None, strerror: str, filename: str, message: str) -> AtomicWriteError:
    error = AtomicWriteError(Path(filename), OSError(code, strerror))
    error.message = message
    return error


_HINTS = {
    errno.ENOSPC: " (the disk is full: free space there, or write elsewhere)",
    errno.EDQUOT: " (over your disk quota: free space there, or write elsewhere)",
    errno.EROFS: " (the file system is read-only: write elsewhere)",
    errno.EACCES: " (permission denied: make the folder writable, or write elsewhere)",
}


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; on success it replaces ``path``, on error it is removed."""
    target = Path(path)
    tmp: Path | None = None
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
        os.close(fd)
        tmp = Path(tmp_name)
        yield tmp
        with open(tmp, "rb+") as handle:
            os.fsync(handle.fileno())
        # mkstemp creates the file 0600; give it the mode a plain open() would (0666 less the umask),
        # so reports and checkpoints can be shared like any other file
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, target)
    except Exception as exc:
        cause = _os_error_in(exc)
        if cause is None or isinstance(exc, AtomicWriteError):
            raise
        raise AtomicWriteError(target, cause) from exc
    finally:
        if tmp is not None and tmp.exists():
            tmp.unlink()


def _os_error_in(exc: BaseException) -> OSError | None:
    """The operating system's error behind ``exc`` (torch.save reports a full disk as a RuntimeError)."""
    seen = 0
    current: BaseException | None = exc
    while current is not None and seen < 8:
        if isinstance(current, OSError) and not isinstance(current, FileNotFoundError | IsADirectoryError):
            return current
        current = current.__cause__ or current.__context__
        seen += 1
    return None


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
