"""Local contrast (CLAHE, Zuiderveld 1994): an optional step between the letterbox and the normalisation.

Why: a hairline fracture or a faint lesion differs from the bone around it by a
few grey levels, while the film's global range is taken by soft tissue,
background and burned-in labels. Contrast-limited adaptive histogram
equalisation stretches each tile's own range (limited by ``clip``, so noise
is not blown up), which radiologists' viewers do with window/level. Off by
default: it is kept in a recipe only where it measurably helps (README).
OpenCV does the work; the setting travels in the checkpoint's preprocessing,
so training, evaluation, the server and the ONNX predictor apply the same.
"""

from __future__ import annotations

import cv2
import numpy as np

TILES = 8  # tiles per side, OpenCV's default grid


def local_contrast(square: np.ndarray, clip: float) -> np.ndarray:
    """(S, S) image, uint8 or float in [0, 1] -> the same dtype and range, CLAHE'd; ``clip`` <= 0 is a no-op."""
    if clip <= 0:
        return square
    clahe = cv2.createCLAHE(clipLimit=float(clip), tileGridSize=(TILES, TILES))
    if square.dtype == np.uint8:
        return clahe.apply(np.ascontiguousarray(square))
    # On 8 bits: OpenCV scales the clip limit by tile area / bins, so on 65536 bins every limit collapses to
    # one count per bin and ``clip`` would have no effect.
    grey = np.round(np.clip(square, 0.0, 1.0) * 255.0).astype(np.uint8)
    return (clahe.apply(grey).astype(np.float32) / 255.0).astype(square.dtype, copy=False)
