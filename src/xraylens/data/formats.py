"""Which dataset a folder holds (MURA v1.1, FracAtlas, GRAZPEDWRI-DX), and its index in one shape.

Every command that takes ``--data`` calls :func:`open_dataset`: the format
is detected from the folder (``format="auto"``), or named (``--format``,
``data.format``), and the matching reader returns a
:class:`~xraylens.data.dataset_index.DatasetIndex`: the MURA index table,
the dataset's own boxes when it ships any, and the problems met on the way.

Detection looks at the folder given and, failing that, at its immediate
sub-folders, so both ``~/data/FracAtlas`` and ``~/data`` (holding only
``FracAtlas/``) work, as ``MURA-v1.1`` or its parent always have:

* MURA: the folder is ``MURA-v1.1`` or contains it;
* FracAtlas: ``dataset.csv`` next to ``images/Fractured`` or ``images/Non_fractured``;
* GRAZPEDWRI-DX: ``dataset.csv`` next to an ``images_part<N>`` folder.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

from xraylens.config import ALL_BODY_PARTS
from xraylens.data import fracatlas, grazpedwri
from xraylens.data.dataset_index import FORMAT_NAMES, DatasetIndex, ReaderOptions
from xraylens.data.mura_layout import MURA_DIR, SPLITS, check_splits, normalize_body_parts
from xraylens.data.problems import DataError, raise_if_problems

FORMATS: tuple[str, ...] = tuple(FORMAT_NAMES)
_LOOKS_LIKE: dict[str, Callable[[Path], bool]] = {
    "mura": lambda folder: folder.name == MURA_DIR or (folder / MURA_DIR).is_dir(),
    "fracatlas": fracatlas.looks_like,
    "grazpedwri": grazpedwri.looks_like,
}
LAYOUT_HINTS = {
    "mura": f"{MURA_DIR}/{{train,valid}}/XR_<PART>/patient<N>/study<K>_<sign>/image<J>.png",
    "fracatlas": "FracAtlas/dataset.csv and FracAtlas/images/{Fractured,Non_fractured}/IMG*.jpg",
    "grazpedwri": "dataset.csv and images_part1..4/<filestem>.png (GRAZPEDWRI-DX)",
}


def detect_format(root: str | Path) -> tuple[str, Path]:
    """``(format, dataset folder)`` for ``root`` or the one sub-folder of it that holds a known dataset."""
    given = Path(root).expanduser().absolute()
    if not given.is_dir():
        raise DataError(f"{given}: no such folder; give the dataset's folder ({_hints()})")
    found = _formats_in(given)
    if len(found) == 1:
        return found[0], given
    if not found:
        inside = [(fmt, child) for child in sorted(p for p in given.iterdir() if p.is_dir())
                  for fmt in _formats_in(child)]
        if len(inside) == 1:
            return inside[0]
        if inside:
            listed = ", ".join(f"{child.name} ({FORMAT_NAMES[fmt]})" for fmt, child in inside)
            raise DataError(f"{given} holds several datasets ({listed}); give one of those folders")
    else:
        raise DataError(f"{given} looks like {' and '.join(FORMAT_NAMES[f] for f in found)} at once; "
                        f"name the one to read with --format ({', '.join(FORMATS)})")
    raise DataError(f"{given}: no dataset found here or one folder down. Expected {_hints()}. Give the dataset's "
                    "folder, name the format with --format, or create one with `xraylens data synth`")


def dataset_folder(root: str | Path, fmt: str) -> Path:
    """The folder to read for a named format: ``root`` itself, or its one sub-folder in that format."""
    given = Path(root).expanduser().absolute()
    if fmt == "mura" or _LOOKS_LIKE[fmt](given):
        return given  # MURA resolves its own root (the folder or its parent)
    inside = [child for child in sorted(p for p in given.iterdir() if p.is_dir()) if _LOOKS_LIKE[fmt](child)] \
        if given.is_dir() else []
    if len(inside) == 1:
        return inside[0]
    raise DataError(f"{given}: not a {FORMAT_NAMES[fmt]} folder; expected {LAYOUT_HINTS[fmt]}")


def open_dataset(
    root: str | Path,
    *,
    format: str = "auto",
    splits: Sequence[str] | str = SPLITS,
    body_parts: Iterable[str] | str | None = None,
    options: ReaderOptions | None = None,
    verify: bool = False,
    strict: bool = False,
    progress: bool = True,
) -> DatasetIndex:
    """Index the dataset at ``root`` in its own format; arguments mean what they do for the MURA index.

    ``options`` (test split, official split, label rule) matter for FracAtlas
    and GRAZPEDWRI-DX only; :meth:`ReaderOptions.from_config` builds them from
    ``cfg.data`` or a checkpoint's stored data config.
    """
    fmt, folder = _resolve(root, format)
    chosen = check_splits(splits)
    options = options or ReaderOptions()
    if fmt == "mura":
        from xraylens.data.mura import index_dataset

        mura = index_dataset(folder, splits=chosen, body_parts=body_parts, verify=verify, strict=strict,
                             progress=progress)
        return DatasetIndex(mura.table, mura.root, mura.source, mura.problems, "mura")
    parts = normalize_body_parts(body_parts, ALL_BODY_PARTS) if body_parts else None
    reader = fracatlas.read_fracatlas if fmt == "fracatlas" else grazpedwri.read_grazpedwri
    index = reader(folder, options, splits=chosen, body_parts=parts, verify=verify, progress=progress)
    if strict:
        raise_if_problems(index.problems, str(folder))
    return index


def open_for(root: str | Path, data: Any = None, **kwargs: Any) -> DatasetIndex:
    """:func:`open_dataset` with format and reader options from a data config (``cfg.data`` or a checkpoint's dict).

    ``kwargs`` win over the config (e.g. ``format`` from a ``--format`` flag, when not None).
    """
    get = (data.get if isinstance(data, dict) else lambda key, default: getattr(data, key, default)) \
        if data is not None else (lambda key, default: default)
    fmt = kwargs.pop("format", None) or get("format", "auto")
    return open_dataset(root, format=fmt, options=ReaderOptions.from_config(data), **kwargs)


def _resolve(root: str | Path, fmt: str) -> tuple[str, Path]:
    if fmt == "auto":
        return detect_format(root)
    if fmt not in FORMATS:
        raise DataError(f"unknown dataset format {fmt!r}; choose auto, {', '.join(FORMATS)}")
    return fmt, dataset_folder(root, fmt)


def _formats_in(folder: Path) -> list[str]:
    return [fmt for fmt, looks in _LOOKS_LIKE.items() if looks(folder)]


def _hints() -> str:
    return "; or ".join(LAYOUT_HINTS.values())


__all__ = ["FORMATS", "DatasetIndex", "ReaderOptions", "detect_format", "open_dataset", "open_for"]
