"""Boxes drawn on a JPEG's stored pixels, moved to the upright image that :func:`read_image` delivers.

Why: :mod:`xraylens.data.images` turns an EXIF-rotated JPEG upright (as
Pillow's ``ImageOps.exif_transpose`` does), so every box must live in that
upright frame too. Box datasets annotated on the stored pixels (FracAtlas
boxes are taken to be, see :mod:`xraylens.data.fracatlas`) pass theirs
through :func:`upright_box` with the file's orientation tag.

The eight EXIF orientations and the transposition Pillow applies for each:
2 mirror left-right, 3 rotate 180, 4 mirror top-bottom, 5 transpose,
6 rotate 270 (a quarter turn clockwise), 7 transverse, 8 rotate 90.
Coordinates are continuous pixel edges (x1/y1 exclusive), so a box that
covers the whole stored image covers the whole upright one.
"""

from __future__ import annotations

from collections.abc import Callable

from xraylens.data.images import SWAPS_AXES

# orientation -> (x, y, stored width W, stored height H) -> the same point in the upright image
_MOVES: dict[int, Callable[[float, float, float, float], tuple[float, float]]] = {
    1: lambda x, y, w, h: (x, y),
    2: lambda x, y, w, h: (w - x, y),
    3: lambda x, y, w, h: (w - x, h - y),
    4: lambda x, y, w, h: (x, h - y),
    5: lambda x, y, w, h: (y, x),
    6: lambda x, y, w, h: (h - y, x),
    7: lambda x, y, w, h: (h - y, w - x),
    8: lambda x, y, w, h: (y, w - x),
}


def upright_box(
    box: tuple[float, float, float, float], orientation: int, stored_width: float, stored_height: float
) -> tuple[float, float, float, float]:
    """``(x0, y0, x1, y1)`` on the stored pixels -> the same region on the upright image."""
    if orientation not in _MOVES:
        raise ValueError(f"EXIF orientation must be 1-8, got {orientation}")
    move = _MOVES[orientation]
    x0, y0, x1, y1 = box
    (ax, ay), (bx, by) = (move(x0, y0, stored_width, stored_height), move(x1, y1, stored_width, stored_height))
    return (min(ax, bx), min(ay, by), max(ax, bx), max(ay, by))


def stored_size(upright_height: int, upright_width: int, orientation: int) -> tuple[int, int]:
    """``(height, width)`` of the stored pixels, from the upright size that :func:`image_size` reports."""
    return (upright_width, upright_height) if orientation in SWAPS_AXES else (upright_height, upright_width)


__all__ = ["stored_size", "upright_box"]
