"""Shared look of every figure, the colour maps, and atomic saving."""

from __future__ import annotations

from pathlib import Path
from typing import Any

HEATMAP_CMAP = "jet"  # the convention radiology CAM papers use; overlays read at a glance
SEQUENTIAL_CMAP = "viridis"
TRAIN_COLOR = "#1f77b4"
VAL_COLOR = "#d62728"
ABNORMAL_COLOR = "#d62728"
NORMAL_COLOR = "#2ca02c"
BOX_COLOR = "#00e5ff"
TRUE_BOX_COLOR = "#ffd400"
BODY_PART_COLORS = {
    "XR_ELBOW": "#1f77b4", "XR_FINGER": "#ff7f0e", "XR_FOREARM": "#2ca02c", "XR_HAND": "#d62728",
    "XR_HUMERUS": "#9467bd", "XR_SHOULDER": "#8c564b", "XR_WRIST": "#e377c2",
}


def pyplot() -> Any:
    """matplotlib.pyplot on the Agg backend (no display needed, safe in servers and workers)."""
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig: Any, path: str | Path, dpi: int = 120) -> Path:
    """Save atomically and close the figure (figures left open leak memory in long runs)."""
    from xraylens.atomic import atomic_path

    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=dpi, bbox_inches="tight", format=path.suffix.lstrip(".") or "png")
    pyplot().close(fig)
    return path


def heatmap_rgb(heatmap: Any) -> Any:
    """(H, W) in [0, 1] -> (H, W, 3) uint8 RGB with the heatmap colour map."""
    import numpy as np

    cmap = pyplot().get_cmap(HEATMAP_CMAP)
    return (cmap(np.clip(heatmap, 0, 1))[..., :3] * 255).astype(np.uint8)


def overlay_rgb(image: Any, heatmap: Any, alpha: float = 0.4) -> Any:
    """Gray image (H, W) in [0, 1] and heatmap (H, W) in [0, 1] -> blended (H, W, 3) uint8."""
    import numpy as np

    gray = np.repeat((np.clip(image, 0, 1) * 255)[..., None], 3, axis=2)
    blended = (1 - alpha) * gray + alpha * heatmap_rgb(heatmap).astype(np.float32)
    return blended.clip(0, 255).astype(np.uint8)
