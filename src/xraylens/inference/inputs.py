"""Which files a prediction run reads: files, folders and globs -> image paths, or failure rows.

Apart from the predictor so that what counts as an image in a folder (by
extension, or by DICOM magic for PACS exports without one) has one home,
and the CLI can report unmatched inputs beside unreadable files.
"""

from __future__ import annotations

import glob
from collections.abc import Sequence
from pathlib import Path

from xraylens.data.images import ImageReadError, sniff_kind
from xraylens.inference.results import Failure

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".dcm", ".dicom")


def collect_inputs(inputs: Sequence[str | Path]) -> tuple[list[str], list[Failure]]:
    """Files, folders (walked recursively for image files) and globs -> sorted unique paths.

    In folders, image files are .png/.jpg/.jpeg/.dcm/.dicom, or extension-less DICOM. Hidden files
    (macOS ``._image1.png`` resource forks, common in MURA copies) are skipped in folders. An input
    that matches nothing is a failure row.
    """
    found: list[str] = []
    failures: list[Failure] = []
    for item in map(str, inputs):
        path = Path(item)
        if path.is_dir():
            files = sorted(str(p) for p in path.rglob("*")
                           if p.is_file() and not any(part.startswith(".") for part in p.relative_to(path).parts)
                           and _looks_like_image(p))
            if not files:
                failures.append(Failure(item, f"folder has no image files ({', '.join(IMAGE_SUFFIXES)})"))
            found += files
        elif path.exists():
            found.append(item)
        elif glob.has_magic(item):
            matches = sorted(p for p in glob.glob(item, recursive=True) if Path(p).is_file())
            if not matches:
                failures.append(Failure(item, "pattern matches no files"))
            found += matches
        else:
            failures.append(Failure(item, "no such file or folder"))
    return list(dict.fromkeys(found)), failures


def _looks_like_image(path: Path) -> bool:
    """By extension; files without one are taken when they are DICOM (PACS exports often have no suffix)."""
    if path.suffix.lower() in IMAGE_SUFFIXES:
        return True
    if path.suffix:
        return False
    try:
        return sniff_kind(path) == "dicom"
    except ImageReadError:
        return False
