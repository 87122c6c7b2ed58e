"""Training curves: loss, accuracy and AUROC per epoch, training vs validation.

The figure answers the questions one asks of a finished run at a glance: did
it learn, when did it start to overfit, and which epoch was kept (the dotted
line marks the lowest validation loss, the epoch of ``best.ckpt``).
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from xraylens.plots.style import TRAIN_COLOR, VAL_COLOR, pyplot, save_figure

PANELS: tuple[tuple[str, str], ...] = (("loss", "loss (weighted BCE)"), ("acc", "accuracy"), ("auroc", "AUROC"))


def plot_history(metrics: pd.DataFrame | str | Path, out: str | Path, title: str | None = None) -> Path:
    """Draw ``metrics`` (a run's ``metrics.csv``: epoch, train_*/val_* columns) to ``out`` (PNG)."""
    table = pd.read_csv(metrics) if isinstance(metrics, str | Path) else metrics
    if "epoch" not in table.columns:
        raise ValueError("plot_history: metrics need an 'epoch' column (a run's metrics.csv)")
    plt = pyplot()
    fig, axes = plt.subplots(1, len(PANELS), figsize=(4.2 * len(PANELS), 3.4), constrained_layout=True)
    best_epoch = None
    if "val_loss" in table and table["val_loss"].notna().any():
        best_epoch = table.loc[table["val_loss"].idxmin(), "epoch"]
    for ax, (key, label) in zip(axes, PANELS, strict=True):
        for stage, color in (("train", TRAIN_COLOR), ("val", VAL_COLOR)):
            column = f"{stage}_{key}"
            if column in table and table[column].notna().any():
                rows = table[table[column].notna()]
                ax.plot(rows["epoch"], rows[column], marker="o", markersize=3, color=color,
                        label="training" if stage == "train" else "validation")
        if best_epoch is not None:
            ax.axvline(best_epoch, color="0.5", linestyle=":", linewidth=1)
        if key != "loss":
            ax.set_ylim(min(0.4, ax.get_ylim()[0]), 1.01)
        ax.set_xlabel("epoch")
        ax.set_title(label)
        ax.grid(alpha=0.3)
        ax.xaxis.get_major_locator().set_params(integer=True)
    axes[0].legend(loc="best", fontsize="small")
    if title:
        fig.suptitle(title)
    return save_figure(fig, out)
