"""Evaluation figures: sample predictions, ROC per body part, confusion matrix, reliability diagram.

Each function draws from plain arrays and saves atomically; none computes a
reported number that the metrics module does not also compute, so figures and
``metrics.json`` cannot disagree.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from xraylens.config import CLASS_NAMES
from xraylens.plots.style import BODY_PART_COLORS, pyplot, save_figure

if TYPE_CHECKING:  # plots sit beside the metric modules, not above them: no runtime import
    from xraylens.calibration import ReliabilityCurve

# Outcome of one prediction: correct calls in calm colours, mistakes in warm ones.
OUTCOMES: tuple[str, ...] = ("TP", "FN", "TN", "FP")
OUTCOME_NAMES = {"TP": "true positive", "FN": "false negative", "TN": "true negative", "FP": "false positive"}
OUTCOME_COLORS = {"TP": "#2ca02c", "TN": "#1f77b4", "FP": "#ff7f0e", "FN": "#d62728"}
CONFUSION_CMAP = "Blues"
RELIABILITY_COLORS = ("#7f7f7f", "#1f77b4", "#d62728", "#2ca02c")


def outcome(label: int, prediction: int) -> str:
    """``"TP"``, ``"FN"``, ``"TN"`` or ``"FP"`` (abnormal is the positive class)."""
    if label:
        return "TP" if prediction else "FN"
    return "FP" if prediction else "TN"


def plot_sample_predictions(
    images: Sequence[np.ndarray],
    labels: Sequence[int],
    probabilities: Sequence[float],
    predictions: Sequence[int],
    captions: Sequence[str],
    path: str | Path,
    threshold: float = 0.5,
    per_outcome: int = 4,
    title: str = "Sample predictions",
) -> Path:
    """One row per outcome (TP, FN, TN, FP) of (S, S) [0, 1] inputs, each framed in its outcome colour."""
    plt = pyplot()
    rows: dict[str, list[int]] = {key: [] for key in OUTCOMES}
    for i, (label, pred) in enumerate(zip(labels, predictions, strict=True)):
        rows[outcome(int(label), int(pred))].append(i)
    cols = max(1, per_outcome)
    fig, axes = plt.subplots(len(OUTCOMES), cols, figsize=(2.3 * cols, 2.6 * len(OUTCOMES)), squeeze=False)
    for r, key in enumerate(OUTCOMES):
        chosen = rows[key][:cols]
        for c in range(cols):
            ax = axes[r, c]
            ax.set_xticks([])
            ax.set_yticks([])
            if c >= len(chosen):
                for spine in ax.spines.values():
                    spine.set_visible(False)
                if c == 0:
                    ax.text(0.5, 0.5, f"no {OUTCOME_NAMES[key]}s", ha="center", va="center",
                            fontsize=9, color="#555555", transform=ax.transAxes)
                continue
            i = chosen[c]
            ax.imshow(np.clip(images[i], 0, 1), cmap="gray", vmin=0, vmax=1)
            for spine in ax.spines.values():
                spine.set_edgecolor(OUTCOME_COLORS[key])
                spine.set_linewidth(4)
            pred_name, true_name = CLASS_NAMES[int(predictions[i])], CLASS_NAMES[int(labels[i])]
            ax.set_title(f"{captions[i]}\npred {pred_name} ({probabilities[i]:.2f})\ntrue {true_name}",
                         fontsize=7.5, color=OUTCOME_COLORS[key])
        axes[r, 0].set_ylabel(OUTCOME_NAMES[key], fontsize=10, color=OUTCOME_COLORS[key], fontweight="bold")
    fig.suptitle(f"{title}: p = P(abnormal), called abnormal when p >= {threshold:.2f}; frame colour = outcome",
                 fontsize=10)
    fig.tight_layout()
    return save_figure(fig, path)


def plot_roc(
    labels: np.ndarray,
    probabilities: np.ndarray,
    body_parts: np.ndarray,
    path: str | Path,
    title: str = "Study-level ROC",
) -> Path:
    """ROC curve per body part plus the overall curve, AUROC and n studies in the legend."""
    plt = pyplot()
    y = np.asarray(labels)
    p = np.asarray(probabilities, dtype=np.float64)
    parts = np.asarray(body_parts, dtype=object)
    fig, ax = plt.subplots(figsize=(6.2, 5.6))
    ax.plot([0, 1], [0, 1], color="#bbbbbb", linestyle="--", linewidth=1)
    groups = [(part, parts == part, BODY_PART_COLORS.get(part, "#7f7f7f"), 1.4) for part in sorted(set(parts))]
    groups.append(("all", np.ones(len(y), dtype=bool), "black", 2.6))
    for name, mask, color, width in groups:
        yy, pp = y[mask], p[mask]
        label = f"{name.removeprefix('XR_').lower() if name != 'all' else 'overall'} (n={mask.sum()})"
        if len(np.unique(yy)) < 2:
            ax.plot([], [], color=color, linewidth=width, label=f"{label}: AUROC n/a (one class)")
            continue
        fpr, tpr = roc_points(yy, pp)
        ax.plot(fpr, tpr, color=color, linewidth=width, label=f"{label}: AUROC {np.trapezoid(tpr, fpr):.3f}")
    ax.set_xlim(-0.01, 1.01)
    ax.set_ylim(-0.01, 1.01)
    ax.set_xlabel("1 - specificity (false positive rate)")
    ax.set_ylabel("sensitivity (true positive rate)")
    ax.set_title(title)
    ax.set_aspect("equal")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize=8, framealpha=0.9)
    fig.tight_layout()
    return save_figure(fig, path)


def roc_points(labels: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(false positive rate, true positive rate) at every distinct cut, from (0, 0) to (1, 1).

    Tied scores move both rates at once (a diagonal step), so the trapezoid area
    under these points is the Mann-Whitney AUROC with ties counted one half.
    """
    y = np.asarray(labels, dtype=np.float64)
    s = np.asarray(scores, dtype=np.float64)
    order = np.argsort(-s, kind="stable")
    y, s = y[order], s[order]
    last_of_block = np.r_[s[1:] != s[:-1], True]
    tp, fp = np.cumsum(y)[last_of_block], np.cumsum(1 - y)[last_of_block]
    return np.r_[0.0, fp / max(fp[-1], 1)], np.r_[0.0, tp / max(tp[-1], 1)]


def plot_confusion(
    labels: np.ndarray,
    predictions: np.ndarray,
    path: str | Path,
    title: str = "Study-level confusion matrix",
    class_names: Sequence[str] = CLASS_NAMES,
) -> Path:
    """2 x 2 counts with row percentages (share of each true class), shaded by row share."""
    plt = pyplot()
    y = np.asarray(labels, dtype=np.int64)
    pred = np.asarray(predictions, dtype=np.int64)
    counts = np.zeros((2, 2), dtype=np.int64)
    np.add.at(counts, (y, pred), 1)
    rows = counts.sum(axis=1, keepdims=True)
    share = np.divide(counts, rows, out=np.zeros((2, 2)), where=rows > 0)
    fig, ax = plt.subplots(figsize=(4.6, 4.0))
    ax.imshow(share, cmap=CONFUSION_CMAP, vmin=0, vmax=1)
    for (r, c), count in np.ndenumerate(counts):
        ax.text(c, r, f"{count}\n{100 * share[r, c]:.1f}%", ha="center", va="center", fontsize=12,
                color="white" if share[r, c] > 0.6 else "black")
    ax.set_xticks([0, 1], [f"pred {n}" for n in class_names])
    ax.set_yticks([0, 1], [f"true {n}" for n in class_names])
    ax.set_title(f"{title}\n(count, % of true class)", fontsize=10)
    fig.tight_layout()
    return save_figure(fig, path)


def plot_reliability(
    curves: Mapping[str, ReliabilityCurve],
    path: str | Path,
    title: str = "Reliability diagram (study level)",
) -> Path:
    """Observed abnormal fraction vs mean predicted P(abnormal) per bin, ECE in the legend; counts below."""
    plt = pyplot()
    fig, (ax, hist) = plt.subplots(2, 1, figsize=(5.6, 6.4), sharex=True,
                                   gridspec_kw={"height_ratios": [3, 1]})
    ax.plot([0, 1], [0, 1], color="#bbbbbb", linestyle="--", linewidth=1, label="perfect calibration")
    n = max(1, len(curves))
    for k, (name, curve) in enumerate(curves.items()):
        color = RELIABILITY_COLORS[(k + 1) % len(RELIABILITY_COLORS)]
        filled = curve.counts > 0
        ax.plot(curve.mean_probability[filled], curve.fraction_positive[filled], marker="o", color=color,
                label=f"{name}: ECE {curve.ece:.3f}")
        width = np.diff(curve.edges) / n
        hist.bar(curve.edges[:-1] + k * width, curve.counts, width=width, align="edge", color=color,
                 alpha=0.8, label=name)
    ax.set_xlim(0, 1)
    ax.set_ylim(-0.03, 1.03)
    ax.set_ylabel("observed fraction abnormal")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(loc="upper left", fontsize=8)
    hist.set_xlabel("predicted P(abnormal)")
    hist.set_ylabel("cases per bin")
    hist.grid(alpha=0.3)
    fig.tight_layout()
    return save_figure(fig, path)
