"""Heatmap figures: overlays with boxes, grids of overlays, one figure per study, method comparisons.

Boxes are anything with ``x0, y0, x1, y1`` attributes (x1/y1 exclusive) in the
pixel coordinates of the image they are drawn on; predicted regions are drawn
in ``BOX_COLOR`` and ground truth in ``TRUE_BOX_COLOR``. Maps are (H, W)
arrays in [0, 1] shown on a fixed 0..1 colour scale: a figure never rescales a
map, so what looks hot is hot.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from xraylens.plots.style import (
    BOX_COLOR,
    HEATMAP_CMAP,
    TRUE_BOX_COLOR,
    overlay_rgb,
    pyplot,
    save_figure,
)


def _rgb(hex_colour: str) -> tuple[int, int, int]:
    value = hex_colour.lstrip("#")
    return int(value[0:2], 16), int(value[2:4], 16), int(value[4:6], 16)


def overlay_with_boxes(
    image: np.ndarray,
    heatmap: np.ndarray,
    boxes: Sequence[Any] = (),
    true_boxes: Sequence[Any] = (),
    alpha: float = 0.4,
) -> np.ndarray:
    """(H, W) image and map in [0, 1] -> (H, W, 3) uint8 overlay with rectangles drawn at full resolution."""
    import cv2

    canvas = np.ascontiguousarray(overlay_rgb(image, heatmap, alpha))
    thickness = max(1, round(max(image.shape) / 250))
    for group, colour in ((true_boxes, TRUE_BOX_COLOR), (boxes, BOX_COLOR)):
        for b in group:
            x0, y0 = int(round(b.x0)), int(round(b.y0))
            x1, y1 = int(round(b.x1)) - 1, int(round(b.y1)) - 1  # cv2 corners are inclusive
            cv2.rectangle(canvas, (x0, y0), (max(x0, x1), max(y0, y1)), _rgb(colour), thickness)
    return canvas


def save_rgb(path: str | Path, array: np.ndarray) -> Path:
    """Write a uint8 (H, W) or (H, W, 3) array as a PNG, atomically."""
    from PIL import Image

    from xraylens.atomic import atomic_path

    path = Path(path)
    with atomic_path(path) as tmp:
        Image.fromarray(array).save(tmp, format="PNG")
    return path


def _draw_boxes(ax: Any, boxes: Sequence[Any], colour: str, style: str = "-") -> None:
    from matplotlib.patches import Rectangle

    for b in boxes:
        ax.add_patch(Rectangle((b.x0 - 0.5, b.y0 - 0.5), b.x1 - b.x0, b.y1 - b.y0, fill=False,
                               edgecolor=colour, linewidth=1.5, linestyle=style))


def _show(ax: Any, image: np.ndarray, heatmap: np.ndarray, alpha: float = 0.45) -> None:
    ax.imshow(image, cmap="gray", vmin=0, vmax=1)
    ax.imshow(heatmap, cmap=HEATMAP_CMAP, vmin=0, vmax=1, alpha=alpha)
    ax.set_xticks([])
    ax.set_yticks([])


def _colorbar(fig: Any, axes: Any, label: str, shrink: float = 0.6) -> None:
    """One opaque 0..1 colour bar for every panel (the overlays' alpha would wash it out)."""
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import Normalize

    mappable = ScalarMappable(norm=Normalize(0, 1), cmap=HEATMAP_CMAP)
    fig.colorbar(mappable, ax=np.ravel(axes).tolist(), shrink=shrink, label=label)


def wrap_name(text: str, width: int = 26) -> str:
    """Break a long ``A_B_C`` file stem at underscores so grid captions do not run into each other."""
    lines: list[str] = []
    for word in text.split("_"):
        if lines and len(lines[-1]) + 1 + len(word) <= width:
            lines[-1] += "_" + word
        else:
            lines.append(word)
    return "\n".join(lines)


@dataclass
class OverlayItem:
    """One panel: image and map in [0, 1] on the same grid, optional boxes and a caption."""

    image: np.ndarray
    heatmap: np.ndarray
    boxes: Sequence[Any] = ()
    true_boxes: Sequence[Any] = ()
    caption: str = ""


def plot_overlay_grid(items: Sequence[OverlayItem], path: str | Path, cols: int = 4,
                      title: str = "Where the model looked") -> Path:
    """A grid of overlays with their boxes and captions, one shared 0..1 colour bar."""
    plt = pyplot()
    cols = max(1, min(cols, len(items)))
    rows = max(1, -(-len(items) // cols))
    fig, axes = plt.subplots(rows, cols, figsize=(2.8 * cols, 3.4 * rows), squeeze=False)
    for ax, item in zip(axes.flat, items, strict=False):
        _show(ax, item.image, item.heatmap)
        _draw_boxes(ax, item.true_boxes, TRUE_BOX_COLOR, "--")
        _draw_boxes(ax, item.boxes, BOX_COLOR)
        ax.set_title(item.caption, fontsize=6.5)
    for ax in list(axes.flat)[len(items):]:
        ax.axis("off")
    _colorbar(fig, axes, "activation (0-1)")
    fig.suptitle(title)
    return save_figure(fig, path)


@dataclass
class StudyView:
    """One view of a study: the image, its map (on the study's shared scale), probability and boxes."""

    name: str
    image: np.ndarray
    heatmap: np.ndarray
    probability: float
    boxes: Sequence[Any] = field(default_factory=list)


def plot_study(views: Sequence[StudyView], path: str | Path, *, title: str, threshold: float,
               scale_label: str = "activation x P(abnormal) / study max") -> Path:
    """Every view of one study side by side on ONE colour scale (maps are not renormalised per view).

    Each panel gives the view's probability and its share of the study's mean
    probability (the MURA study score is the mean over views).
    """
    plt = pyplot()
    probs = np.array([v.probability for v in views], dtype=np.float64)
    study_p = float(probs.mean()) if len(probs) else float("nan")
    total = probs.sum()
    fig, axes = plt.subplots(1, len(views), figsize=(max(3.0 * len(views), 6.0), 4.0), squeeze=False)
    for ax, view, p in zip(axes[0], views, probs, strict=True):
        _show(ax, view.image, view.heatmap)
        _draw_boxes(ax, view.boxes, BOX_COLOR)
        share = p / total if total > 0 else 1 / len(views)
        ax.set_title(f"{view.name}\nP={p:.2f} ({share:.0%} of study mean)", fontsize=8)
    verdict = "abnormal" if study_p >= threshold else "normal"
    _colorbar(fig, axes, scale_label, shrink=0.8)
    fig.suptitle(f"{title}\nstudy P(abnormal) = mean of views = {study_p:.2f} -> {verdict} "
                 f"(threshold {threshold:.2f})", fontsize=9, y=1.04)
    return save_figure(fig, path)


def plot_methods_grid(images: Sequence[np.ndarray], maps: Mapping[str, Sequence[np.ndarray]],
                      true_boxes: Sequence[Sequence[Any]], path: str | Path,
                      predicted: Mapping[str, Sequence[Sequence[Any]]] | None = None,
                      captions: Sequence[str] = ()) -> Path:
    """Rows = images, columns = methods: the same images under each method, true boxes dashed."""
    plt = pyplot()
    methods = list(maps)
    rows, cols = len(images), len(methods) + 1
    fig, axes = plt.subplots(rows, cols, figsize=(2.2 * cols, 2.3 * rows), squeeze=False)
    for r, image in enumerate(images):
        axes[r, 0].imshow(image, cmap="gray", vmin=0, vmax=1)
        axes[r, 0].set_xticks([])
        axes[r, 0].set_yticks([])
        _draw_boxes(axes[r, 0], true_boxes[r], TRUE_BOX_COLOR, "--")
        if r < len(captions):
            axes[r, 0].set_ylabel(captions[r], fontsize=6)
        for c, method in enumerate(methods, start=1):
            _show(axes[r, c], image, maps[method][r])
            _draw_boxes(axes[r, c], true_boxes[r], TRUE_BOX_COLOR, "--")
            if predicted is not None:
                _draw_boxes(axes[r, c], predicted[method][r], BOX_COLOR)
    axes[0, 0].set_title("image + true boxes", fontsize=8)
    for c, method in enumerate(methods, start=1):
        axes[0, c].set_title(method, fontsize=8)
    _colorbar(fig, axes, "activation (0-1)", shrink=0.5)
    return save_figure(fig, path)


def plot_pointing_game(summary: Mapping[str, Mapping[str, Any]], path: str | Path,
                       title: str = "Pointing game: is the map's maximum inside a true box?") -> Path:
    """Bars: hit rate per method with 95 % CI; a grey bar beside each: the random-point chance level."""
    plt = pyplot()
    methods = list(summary)
    x = np.arange(len(methods))
    hits = np.array([summary[m]["pointing_game"] for m in methods])
    chance = np.array([summary[m]["pointing_chance"] for m in methods])
    ci = np.array([summary[m]["pointing_game_ci95"] for m in methods]).reshape(-1, 2)
    err = np.stack([hits - ci[:, 0], ci[:, 1] - hits])
    fig, ax = plt.subplots(figsize=(1.2 * len(methods) + 2.5, 3.6))
    ax.bar(x - 0.2, hits, 0.4, yerr=err, capsize=3, color="#1f77b4", label="hit rate (95% CI)")
    ax.bar(x + 0.2, chance, 0.4, color="#9e9e9e", label="chance (random point)")
    ax.set_xticks(x, methods, rotation=20)
    ax.set_ylim(0, 1)
    ax.set_ylabel("hit rate")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=8)
    return save_figure(fig, path)


def plot_box_accuracy(curves: Mapping[str, Mapping[str, Any]], path: str | Path,
                      title: str = "Top-box accuracy (IoU ≥ 0.3) by where the map is cut") -> Path:
    """One line per method: the share of images whose top box is right, against the fraction threshold."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(5.5, 3.6))
    for method, curve in curves.items():
        if curve.get("accuracy"):
            line, = ax.plot(curve["thresholds"], curve["accuracy"], marker="o", label=method)
            ax.plot([curve["best_threshold"]], [curve["max_accuracy"]], marker="*", markersize=12,
                    color=line.get_color())
    ax.set_xlabel("threshold (fraction of the map's peak)")
    ax.set_ylabel("images with top box IoU ≥ 0.3")
    ax.set_ylim(0, 1)
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=8)
    return save_figure(fig, path)


def plot_sanity(results: Mapping[str, Mapping[str, Any]], path: str | Path) -> Path:
    """Mean Spearman correlation with the original map as layers are randomised from the top."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(5.5, 3.6))
    limit = None
    labels: list[str] = []
    for method, result in results.items():
        steps = result["steps"]
        if not steps:  # untested: the original maps were empty
            continue
        ax.plot([s["step"] for s in steps], [s["spearman"] for s in steps], marker="o",
                label=f"{method} ({result['verdict']})")
        limit = result["max_correlation"]
        if len(steps) > len(labels):
            labels = [s["randomised"][-1] for s in steps]
    if limit is not None:
        ax.axhline(limit, color="#d62728", linestyle=":", label="fail above")
    ax.set_xticks(range(1, len(labels) + 1), labels, rotation=20, fontsize=7)
    ax.set_xlabel("randomised down to (cumulative)")
    ax.set_ylabel("Spearman vs original map")
    ax.set_ylim(-1, 1.05)
    ax.set_title("Model-randomisation sanity check", fontsize=9)
    ax.legend(fontsize=7)
    return save_figure(fig, path)
