"""YOLO label files (``cls cx cy w h`` per line, normalised to the image) -> pixel boxes.

Both FracAtlas (``Annotations/YOLO``) and GRAZPEDWRI-DX
(``folder_structure/yolov5/labels``) ship their boxes this way, so one reader
turns them into pixels of the image they belong to. A line that is not five
numbers, names an unknown class, or covers no pixel is skipped and reported
as a ``bad_box`` problem naming the file and line; an empty file means "no
boxes" (a normal image), which is not a problem.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from xraylens.data.problems import Problem


@dataclass(frozen=True)
class YoloBox:
    """One label line in pixels of the image it was normalised to (x1/y1 exclusive, clipped to the image)."""

    cls: int
    x0: float
    y0: float
    x1: float
    y1: float


def read_yolo_file(
    path: Path, width: int, height: int, *, classes: int, report_as: str
) -> tuple[list[YoloBox], list[Problem]]:
    """Boxes of one label file for an image of ``width`` x ``height`` pixels; ``report_as`` names it in problems."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        return [], [Problem(report_as, "bad_box", f"{path.name}: cannot be read as text ({exc})")]
    boxes: list[YoloBox] = []
    problems: list[Problem] = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        box, why = _parse(line.split(), width, height, classes)
        if box is None:
            problems.append(Problem(report_as, "bad_box", f"{path.name} line {number}: {why}, got {line.strip()!r}"))
        else:
            boxes.append(box)
    return boxes, problems


def _parse(fields: Sequence[str], width: int, height: int, classes: int) -> tuple[YoloBox | None, str]:
    if len(fields) != 5:
        return None, "expected 'class cx cy w h' (5 numbers)"
    try:
        cls = int(fields[0])
        cx, cy, w, h = (float(v) for v in fields[1:])
    except ValueError:
        return None, "expected an integer class and four numbers"
    if not 0 <= cls < classes:
        return None, f"class {cls} is not one of 0..{classes - 1}"
    x0, x1 = max((cx - w / 2) * width, 0.0), min((cx + w / 2) * width, float(width))
    y0, y1 = max((cy - h / 2) * height, 0.0), min((cy + h / 2) * height, float(height))
    if not (x1 > x0 and y1 > y0):
        return None, "the box covers no pixel of the image (normalised coordinates must lie in 0..1)"
    return YoloBox(cls, x0, y0, x1, y1), ""


__all__ = ["YoloBox", "read_yolo_file"]
