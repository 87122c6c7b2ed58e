"""The run folder a training writes, and the Lightning Trainer that writes it.

::

    RUN/config.yaml            the resolved experiment config (older ones kept on resume if changed)
    RUN/metrics.csv            one row per epoch (0-based, as Lightning counts), merged from csv/version_*/
    RUN/training_history.png   loss, accuracy and AUROC per epoch, training vs validation
    RUN/tensorboard/           TensorBoard event files (one version per start or resume)
    RUN/csv/                   Lightning's CSVLogger output, the source of metrics.csv
    RUN/checkpoints/           best-k by validation loss, last.ckpt, best.ckpt (copy of the lowest)

``metrics.csv`` and the figure are refreshed at the start of every epoch and at
the end, so a crashed run still shows how far it got.
"""

from __future__ import annotations

import logging
import shutil
import time
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import lightning as L
import pandas as pd
import torch
from lightning.pytorch.callbacks import Callback, Checkpoint, EarlyStopping, ModelCheckpoint, TQDMProgressBar
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger
from lightning.pytorch.plugins.io import TorchCheckpointIO

from xraylens.atomic import atomic_path, atomic_write_text, atomic_write_with
from xraylens.config import ExperimentConfig, dump_config, save_config

log = logging.getLogger(__name__)

METRIC_COLUMNS: tuple[str, ...] = (
    "epoch", "train_loss", "train_acc", "train_auroc", "val_loss", "val_acc", "val_auroc", "lr",
)
OPTIONAL_COLUMNS: tuple[str, ...] = ("train_box_loss",)  # only runs that log them (train.box_fraction > 0)
BEST_NAME = "best.ckpt"


def build_trainer(cfg: ExperimentConfig, run_dir: Path, *, progress: bool = True,
                  callbacks: Sequence[Callback] = ()) -> L.Trainer:
    """A Trainer configured from ``cfg.train``; scale settings are passed through unchanged."""
    # Lightning 2.6's batch flattening trips torch 2.14's LeafSpec deprecation once per run: nothing
    # a user can act on, so it is not printed (other warnings still are).
    warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\)` is deprecated")
    t = cfg.train
    checkpoints = run_dir / "checkpoints"
    top_k = ModelCheckpoint(dirpath=checkpoints, filename="epoch{epoch:03d}-val_loss{val_loss:.4f}",
                            auto_insert_metric_name=False, monitor="val_loss", mode="min",
                            save_top_k=max(1, t.save_top_k), save_last=True,
                            enable_version_counter=False)  # a resume overwrites last.ckpt, never last-v1.ckpt
    every: list[Callback] = [top_k, BestCopy(top_k), *callbacks]
    if t.checkpoint_every_n_steps > 0:
        # last.ckpt in the middle of epochs too, so a killed run loses at most N steps (no monitor: the
        # validation loss of mid-epoch weights is not known; the top-k above stay epoch-end only)
        every.insert(1, ModelCheckpoint(dirpath=checkpoints, filename="last", monitor=None, save_top_k=1,
                                        every_n_train_steps=t.checkpoint_every_n_steps,
                                        enable_version_counter=False))
    if t.deterministic:
        from xraylens.resume import SeededSteps

        every.insert(0, SeededSteps(t.seed))
    if t.early_stopping_patience > 0:
        every.append(EarlyStopping(monitor="val_loss", mode="min", patience=t.early_stopping_patience))
    if progress:
        every.append(TQDMProgressBar())
    return L.Trainer(
        accelerator=t.accelerator,
        devices=_devices(t.devices),
        num_nodes=t.num_nodes,
        strategy=t.strategy,
        precision=t.precision,
        deterministic="warn" if t.deterministic else None,  # warn: a GPU op without a deterministic kernel
        max_epochs=t.epochs,
        logger=[CSVLogger(run_dir, name="csv"), TensorBoardLogger(run_dir, name="tensorboard", default_hp_metric=False)],
        callbacks=every,
        plugins=[AtomicCheckpointIO()],
        enable_progress_bar=progress,
        enable_model_summary=progress,
        limit_train_batches=_limit(t.limit_train_batches),
        limit_val_batches=_limit(t.limit_val_batches),
        log_every_n_steps=t.log_every_n_steps,
        accumulate_grad_batches=t.accumulate_grad_batches,
        default_root_dir=run_dir,
    )


def _devices(text: str) -> int | str:
    """``"4"`` -> 4 (a count); ``"auto"``, ``"-1"`` and ``"0,1"`` (device ids) go through as text."""
    text = str(text).strip()
    return int(text) if text.isdigit() else text


def _limit(value: float) -> float | int | None:
    """Lightning reads a float as a fraction of the batches and an int as a count: 1.0 = all, 20 = 20 batches."""
    if value == 1.0:
        return None  # Lightning's default (all batches), without its log line saying so
    return int(value) if value > 1 and float(value).is_integer() else value


class AtomicCheckpointIO(TorchCheckpointIO):
    """Checkpoints go to a temporary file that replaces the target only once complete.

    A crash or pre-emption mid-save leaves the previous ``last.ckpt`` intact,
    which is exactly the file ``--resume`` needs.
    """

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any | None = None) -> None:
        if storage_options is not None:
            raise TypeError(f"{type(self).__name__} takes no storage_options, got {storage_options!r}")
        atomic_write_with(path, lambda handle: torch.save(checkpoint, handle))


class BestCopy(Checkpoint):
    """Keeps ``best.ckpt`` a copy of the top-k callback's lowest-validation-loss checkpoint.

    A ``Checkpoint`` subclass so Lightning runs its hooks after those of the
    ``ModelCheckpoint`` it follows (checkpoint callbacks run last, in their given
    order); it copies whenever that callback's best path has changed.
    """

    def __init__(self, source: ModelCheckpoint) -> None:
        self.source = source
        self.copied: str | None = None

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._refresh(trainer)

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._refresh(trainer)  # for runs that validate (and checkpoint) more than once per epoch

    def _refresh(self, trainer: L.Trainer) -> None:
        best = self.source.best_model_path
        if trainer.sanity_checking or not trainer.is_global_zero or not best or best == self.copied:
            return
        target = Path(self.source.dirpath or Path(best).parent) / BEST_NAME
        with atomic_path(target) as tmp:
            shutil.copyfile(best, tmp)
        self.copied = best


FIGURE_EVERY_S = 20.0  # the history figure costs ~0.5 s of matplotlib: more than a cached-head epoch


class RunFiles(Callback):
    """Writes ``config.yaml`` at the start and refreshes ``metrics.csv`` every epoch.

    The history figure is redrawn at most every ``FIGURE_EVERY_S`` seconds
    (and always at the end, by :func:`write_history` in ``fit``): redrawing it
    every epoch made 30 one-second head epochs 3x slower (bench_training.py).
    """

    def __init__(self, run_dir: Path, cfg: ExperimentConfig) -> None:
        self.run_dir = run_dir
        self.cfg = cfg
        self.first_epoch: int | None = None
        self.drawn_at = time.monotonic()

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.is_global_zero:
            return
        path = self.run_dir / "config.yaml"
        if path.is_file() and path.read_text() != dump_config(self.cfg):
            kept = path.with_name(f"config.until-epoch{trainer.current_epoch}.yaml")
            path.replace(kept)
            log.info("config changed on resume; the previous one is kept as %s", kept)
        save_config(self.cfg, path)

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.first_epoch is None:
            self.first_epoch = trainer.current_epoch
        elif trainer.is_global_zero:
            draw = time.monotonic() - self.drawn_at >= FIGURE_EVERY_S
            write_history(trainer, self.run_dir, figure=draw)
            if draw:
                self.drawn_at = time.monotonic()


def write_history(trainer: L.Trainer, run_dir: Path, *, figure: bool = True) -> pd.DataFrame:
    """Flush the CSV logger, merge its files into ``RUN/metrics.csv`` and (``figure``) redraw the history figure."""
    from xraylens.plots.history import plot_history

    for logger in trainer.loggers:
        if isinstance(logger, CSVLogger):
            logger.save()
    table = epoch_table(run_dir / "csv")
    if table.empty:
        return table
    atomic_write_text(run_dir / "metrics.csv", table.to_csv(index=False))
    if not figure:
        return table
    module = trainer.lightning_module
    title = None
    if module is not None and hasattr(module, "cfg"):
        title = f"{module.cfg.model.name}, {module.cfg.data.image_size}px"
    plot_history(table, run_dir / "training_history.png", title=title)
    return table


def epoch_table(csv_root: Path) -> pd.DataFrame:
    """One row per epoch from every ``version_*/metrics.csv`` under ``csv_root``.

    A later version (a resume) replaces the epochs it re-ran and everything after
    them, so resuming from an older checkpoint never leaves stale rows behind.
    """
    files = sorted(csv_root.glob("version_*/metrics.csv"), key=lambda p: int(p.parent.name.split("_")[1]))
    merged = pd.DataFrame(columns=list(METRIC_COLUMNS))
    optional: list[str] = []
    for file in files:
        frame = pd.read_csv(file)
        if "epoch" not in frame or frame.empty:
            continue
        frame = frame[frame["epoch"].notna()]
        optional += [c for c in OPTIONAL_COLUMNS if c in frame.columns and c not in optional]
        present = [c for c in (*METRIC_COLUMNS, *OPTIONAL_COLUMNS) if c in frame.columns]
        frame = frame[present].groupby("epoch", sort=True).last().reset_index()
        metrics = [c for c in present if c != "epoch"]
        frame = frame[frame[metrics].notna().any(axis=1)] if metrics else frame.iloc[0:0]
        if frame.empty:
            continue
        kept = merged[merged["epoch"] < frame["epoch"].min()]
        merged = frame if kept.empty else pd.concat([kept, frame], ignore_index=True)
    merged = merged.reindex(columns=[*METRIC_COLUMNS, *optional])
    if not merged.empty:
        merged["epoch"] = merged["epoch"].astype(int)
    return merged.reset_index(drop=True)
