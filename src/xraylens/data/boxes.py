"""Ground-truth boxes: the table that ships with a dataset, and boxes as masks on the network input.

Why in the data layer: boxes are read by three parts above it. Evaluation
reads their kinds (:mod:`xraylens.finding_kinds`), ``explain-eval`` scores
heatmaps against them, and training with ``train.box_fraction > 0`` turns
them into a mask that follows the image through the letterbox and the
augmentation. One reader keeps the three agreeing on what a box is.

The table is a CSV ``path,x0,y0,x1,y1,kind``: MURA-relative image paths,
original pixel coordinates, x1/y1 exclusive (what ``xraylens data synth``
writes as ``ROOT/boxes.csv``, and what the readers of box datasets give).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from xraylens.data.preprocess import Letterbox
from xraylens.data.problems import DataError

BOX_TABLE_NAME = "boxes.csv"  # where the synthetic dataset puts it: next to MURA-v1.1
BOX_COLUMNS = ("path", "x0", "y0", "x1", "y1", "kind")


@dataclass(frozen=True)
class TrueBox:
    """A ground-truth region in original pixel coordinates (x1/y1 exclusive)."""

    x0: float
    y0: float
    x1: float
    y1: float
    kind: str = "finding"

    def xyxy(self) -> tuple[float, float, float, float]:
        return (self.x0, self.y0, self.x1, self.y1)


def read_box_table(path: str | Path) -> dict[str, list[TrueBox]]:
    """Boxes per MURA-relative image path; DataError naming the file, and the line when a value is bad."""
    table = read_box_csv(path, BOX_COLUMNS)
    boxes: dict[str, list[TrueBox]] = {}
    for line, row in enumerate(table[list(BOX_COLUMNS)].itertuples(index=False), start=2):
        try:
            x0, y0, x1, y1 = (float(v) for v in (row.x0, row.y0, row.x1, row.y1))
        except ValueError as exc:
            raise DataError(f"{path} line {line}: box coordinates must be numbers ({exc})") from exc
        if not (x1 > x0 and y1 > y0):
            raise DataError(f"{path} line {line}: empty box ({x0}, {y0}, {x1}, {y1}); x1 > x0 and y1 > y0 needed")
        boxes.setdefault(row.path.strip(), []).append(TrueBox(x0, y0, x1, y1, row.kind.strip() or "finding"))
    return boxes


def read_box_csv(path: str | Path, needed: Sequence[str] = BOX_COLUMNS) -> pd.DataFrame:
    """The box table as text columns (a UTF-8 BOM tolerated); DataError when absent, unreadable or short."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: box table not found; give a CSV with columns {','.join(BOX_COLUMNS)} "
                        "(the synthetic dataset writes ROOT/boxes.csv: `xraylens data synth ROOT`)")
    try:
        table = pd.read_csv(path, dtype=str, keep_default_na=False, encoding="utf-8-sig")
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: not a readable CSV box table ({exc})") from exc
    missing = [c for c in needed if c not in table.columns]
    if missing:
        raise DataError(f"{path}: missing column(s) {', '.join(missing)}; expected {','.join(BOX_COLUMNS)}")
    return table


def find_box_table(*folders: str | Path) -> Path | None:
    """The first ``boxes.csv`` among ``folders`` (e.g. the folder given as data, then MURA-v1.1's parent)."""
    for folder in dict.fromkeys(Path(f) for f in folders):
        if (folder / BOX_TABLE_NAME).is_file():
            return folder / BOX_TABLE_NAME
    return None


def boxes_on_input(boxes: Iterable[TrueBox], geometry: Letterbox) -> np.ndarray:
    """(K, 4) float32 x0, y0, x1, y1 of ``boxes`` on the letterboxed square."""
    mapped = [geometry.box_to_input(b.xyxy()) for b in boxes]
    return np.asarray(mapped, np.float32).reshape(-1, 4)


def square_mask(boxes: np.ndarray, size: int) -> np.ndarray:
    """(size, size) uint8, 1 on every pixel a box touches: a thin fracture line keeps at least one row."""
    mask = np.zeros((size, size), np.uint8)
    for x0, y0, x1, y1 in np.asarray(boxes, np.float32).reshape(-1, 4):
        c0, r0 = max(int(np.floor(x0)), 0), max(int(np.floor(y0)), 0)
        c1, r1 = min(max(int(np.ceil(x1)), c0 + 1), size), min(max(int(np.ceil(y1)), r0 + 1), size)
        mask[r0:r1, c0:c1] = 1
    return mask


def choose_supervised(labels: Sequence[int], has_boxes: Sequence[bool], fraction: float,
                      seed: int) -> np.ndarray:
    """Positions of the training images whose boxes train the map: a seeded ``fraction`` of them.

    An abnormal image without a box in the table cannot say where its finding
    is, so it is never chosen; a chosen normal image teaches "nothing here".
    """
    labels, has_boxes = np.asarray(labels), np.asarray(has_boxes, bool)
    usable = np.flatnonzero((labels == 0) | has_boxes)
    count = min(int(round(fraction * len(labels))), len(usable))
    chosen = np.random.default_rng(seed).permutation(usable)[:count]
    return np.sort(chosen)


__all__ = ["BOX_COLUMNS", "BOX_TABLE_NAME", "TrueBox", "boxes_on_input", "choose_supervised",
           "find_box_table", "read_box_csv", "read_box_table", "square_mask"]
