"""Output folders a command may write into: never an earlier run's, unless the user says so.

Why a refusal and not a warning: an evaluation, a set of heatmaps or a
training run can take hours, and the second run into the same ``--out``
used to replace it file by file, leaving a folder that mixed both. Every
command that writes a folder (train, evaluate, explain, explain-eval) or a
file (export, predict --out) asks here first. ``overwrite=True``
(``--overwrite``) is the user's explicit yes: the earlier run's own outputs
(the names the command writes, nothing else the folder holds) are removed
first, so what remains is one run's results, not a mixture.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterable
from pathlib import Path


class OutputExistsError(FileExistsError):
    """The output already holds an earlier run's results; the message names it and the way out."""


def claim_output_dir(out: str | Path, *, overwrite: bool, outputs: Iterable[str], what: str) -> Path:
    """Make sure ``out`` may receive a new ``what`` (e.g. "evaluation"); returns it as a Path.

    A missing or empty folder is fine. A non-empty one is refused unless
    ``overwrite``; then each entry of ``outputs`` (file or folder names, glob
    patterns allowed, relative to ``out``) is deleted so no stale file of the
    earlier run survives next to the new ones.
    """
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise OutputExistsError(f"{out} is a file; give a folder for the {what} (--out)")
    if not out.is_dir() or not any(out.iterdir()):
        return out
    if not overwrite:
        raise OutputExistsError(
            f"{out} is not empty (it holds an earlier {what}?); refusing to overwrite it. "
            "Choose another --out, or pass --overwrite to replace it")
    for pattern in outputs:
        for path in sorted(out.glob(pattern)):
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            else:
                path.unlink()
    return out


def claim_output_file(path: str | Path, *, overwrite: bool, what: str) -> Path:
    """Refuse to replace an existing file unless ``overwrite`` (the write itself is atomic either way)."""
    path = Path(path)
    if path.is_dir():
        raise OutputExistsError(f"{path} is a folder; give a file name for the {what}")
    if path.exists() and not overwrite:
        raise OutputExistsError(
            f"{path} already exists (an earlier {what}?); refusing to overwrite it. "
            "Choose another name, or pass --overwrite to replace it")
    return path
