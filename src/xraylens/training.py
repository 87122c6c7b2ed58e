"""Training: the LightningModule (loss, optimiser, schedule, metrics) and ``fit(cfg, out)``.

The recipe is the MURA paper's: binary cross-entropy on one logit, weighted
per body part so both classes of every part weigh the same; Adam; the
learning rate divided by 10 when validation loss plateaus; early stopping on
validation loss. ``train.freeze_backbone_epochs`` adds the seed's recipe:
train the head alone first, then fine-tune everything at a lower rate.
``train.backbone=frozen`` trains the head alone throughout, and ``cached``
does so on backbone features computed once per image (the CPU recipe for
ImageNet transfer, :mod:`xraylens.features`). ``train.trainable_stages``
makes either a partial fine-tune: the backbone's last stages train as well
(cached features are then taken before them). ``train.optimizer=adamw`` with
``train.schedule=onecycle`` is warmup then cosine decay, stepped per batch.
``train.box_fraction`` adds, for the images whose true boxes it uses, a loss
on the model's instance map (:func:`box_loss`). A global-local model
(``gmic_*``) has its global and local logits trained beside the fused one.

Scale comes from Lightning: ``train.accelerator/devices/num_nodes/strategy/
precision`` go straight to ``lightning.Trainer``. Metrics are torchmetrics
objects, so under DDP they are computed over every rank's images, not
averaged per rank.

A run folder holds ``config.yaml``, ``metrics.csv`` (one row per epoch),
``training_history.png``, ``tensorboard/`` and ``checkpoints/`` (best-k by
validation loss, ``last.ckpt`` and ``best.ckpt``). Checkpoints are written
atomically and describe themselves (``models.load_checkpoint`` rebuilds the
network from one without any config).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning as L
import torch
import torch.nn.functional as F
from torch import nn
from torchmetrics import MeanMetric
from torchmetrics.classification import BinaryAccuracy, BinaryAUROC

from xraylens.config import ALL_BODY_PARTS, ConfigError, ExperimentConfig, to_dict
from xraylens.datamodule import RadiographDataModule, load_training_data, loss_weights
from xraylens.models import (
    CheckpointMeta,
    architecture,
    backbone_parameters,
    backbone_tail,
    create_model_from_config,
    has_feature_split,
    has_logit_parts,
    head_layer,
    head_parameters,
    preprocessing_for,
)
from xraylens.models.mil import max_trainable_stages
from xraylens.output_dir import OutputExistsError
from xraylens.runfolder import RunFiles, build_trainer, write_history

log = logging.getLogger(__name__)

STAGES = ("train", "val")
TRAIN_METRICS_KEY = "xraylens_train_metrics"  # mid-epoch checkpoints: the epoch's training metrics so far
_TRAIN_METRICS = ("train_loss", "train_acc", "train_auroc")
BACKBONE_MODES = ("finetune", "frozen", "cached")
OPTIMIZERS = ("adam", "adamw")
SCHEDULES = ("plateau", "onecycle")


class RadiographClassifier(L.LightningModule):
    """Normal/abnormal classifier around any one-logit network (kept as ``self.net``).

    ``loss_weights`` maps body part -> [w_normal, w_abnormal] (see
    :func:`xraylens.datamodule.loss_weights`); ``data_summary`` is copied into
    every checkpoint. Batches are dicts with ``image`` (B, C, S, S), ``label``
    (B,), ``ok`` (B,) and ``part`` (B,); images with ``ok=False`` (unreadable)
    are left out of the loss and the metrics.
    """

    def __init__(
        self,
        net: nn.Module,
        cfg: ExperimentConfig,
        loss_weights: dict[str, list[float]] | None = None,
        data_summary: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        self.net = net.to(memory_format=torch.channels_last) if cfg.train.channels_last else net
        self.cfg = cfg
        try:
            self.tail = backbone_tail(self.net, cfg.model.name, cfg.train.trainable_stages)
        except ValueError as exc:
            raise ConfigError(f"train.trainable_stages={cfg.train.trainable_stages}: {exc}") from exc
        if cfg.train.backbone != "finetune":
            # never unfrozen, so DDP can leave these out of its all-reduce from the start
            for p in backbone_parameters(self.net, cfg.model.name):
                p.requires_grad_(False)
            for p in self._tail_parameters():
                p.requires_grad_(True)
        self.logit_parts = has_logit_parts(cfg.model.name)
        self.data_summary = dict(data_summary or {})
        weights = loss_weights or {}
        table = [[float(v) for v in weights.get(part, [1.0, 1.0])] for part in ALL_BODY_PARTS]
        self.register_buffer("class_weights", torch.tensor(table), persistent=False)  # (parts, 2)
        # Plain dicts of primitives only: the checkpoint must load with torch.load(weights_only=True).
        self.save_hyperparameters({"experiment": to_dict(cfg), "loss_weights": {p: list(map(float, w))
                                                                               for p, w in weights.items()}})
        for stage in STAGES:
            setattr(self, f"{stage}_loss", MeanMetric())
            setattr(self, f"{stage}_acc", BinaryAccuracy())
            setattr(self, f"{stage}_auroc", BinaryAUROC())
        self._lr_logged = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, S, S) normalised images -> (B, 1) logits of P(abnormal)."""
        return self.net(x)

    def _tail_parameters(self) -> list[nn.Parameter]:
        return [p for stage in self.tail for p in stage.parameters()]

    def _logits(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor | None, list[torch.Tensor]]:
        """(B,) logits from images, or from stored backbone features (``train.backbone=cached``).

        With box masks in the batch, also the (B, h, w) instance map behind them. A global-local model
        adds its global and local logits (GMIC's loss supervises all three), else the list is empty.
        """
        tail = 0
        if "features" in batch:  # stored before the trainable stages, which run here
            features, tail = batch["features"], self.cfg.train.trainable_stages
        else:
            x = batch["image"]
            if self.cfg.train.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            if self.logit_parts:
                parts = self.net.forward_parts(x)
                cells = parts.cells.float() if "mask" in batch else None
                return (parts.logit.squeeze(1).float(), cells,
                        [parts.global_logit.squeeze(1).float(), parts.local_logit.squeeze(1).float()])
            if "mask" not in batch:
                return self.net(x).squeeze(1).float(), None, []
            features = self.net.features(x)
        if "mask" not in batch:
            return self.net.classify_features(features, tail).squeeze(1).float(), None, []
        logits, cells = self.net.classify_with_map(features, tail)
        return logits.squeeze(1).float(), cells.float(), []

    # ------------------------------------------------------------ steps

    def _step(self, batch: dict[str, torch.Tensor], stage: str) -> torch.Tensor:
        y = batch["label"].float()  # (B,)
        ok = batch["ok"].bool()  # (B,)
        logits, cells, auxiliary = self._logits(batch)  # (B,), (B, h, w) or None, [(B,), ...]
        weights = self.class_weights[batch["part"], y.long()] * ok  # unreadable images weigh nothing
        n_ok = ok.sum()
        loss = logits.new_zeros(())
        for each in (logits, *auxiliary):
            per_image = F.binary_cross_entropy_with_logits(each, y, reduction="none")
            # Mean over readable images; a batch with none gives a zero loss that still reaches every parameter.
            loss = loss + (per_image * weights).sum() / n_ok.clamp(min=1)
        if cells is not None:
            boxes = box_loss(cells, batch["mask"], batch["boxed"].bool() & ok) / n_ok.clamp(min=1)
            self.log(f"{stage}_box_loss", boxes.detach(), on_step=False, on_epoch=True, sync_dist=True)
            loss = loss + self.cfg.train.box_weight * boxes
        probs = torch.sigmoid(logits.detach())[ok]
        target = y[ok].long()
        getattr(self, f"{stage}_loss").update(loss.detach(), weight=n_ok.float())
        if bool(ok.any()):  # torchmetrics refuses empty updates
            getattr(self, f"{stage}_acc").update(probs, target)
            getattr(self, f"{stage}_auroc").update(probs, target)
        for name in ("loss", "acc", "auroc"):
            metric = getattr(self, f"{stage}_{name}")
            # Metric objects are synchronised across ranks by torchmetrics at epoch end.
            self.log(f"{stage}_{name}", metric, on_step=False, on_epoch=True,
                     prog_bar=stage == "val" and name != "acc", metric_attribute=f"{stage}_{name}")
        return loss

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        if not self._lr_logged:  # at the epoch's first batch, also the first after a mid-epoch resume
            self._lr_logged = True
            self.log("lr", self.optimizers().param_groups[0]["lr"], on_step=False, on_epoch=True, sync_dist=True)
        loss = self._step(batch, "train")
        self.log("train_loss_step", loss, on_step=True, on_epoch=False, prog_bar=True)
        return loss

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        self._step(batch, "val")

    # ------------------------------------------------------------ optimisation

    def configure_optimizers(self) -> dict[str, Any]:
        t = self.cfg.train
        name = self.cfg.model.name
        frozen = t.freeze_backbone_epochs > 0
        groups = [{"params": head_parameters(self.net, name), "lr": t.lr, "name": "head"}]
        if t.backbone == "finetune":
            # Frozen for the first epochs = learning rate 0, not requires_grad=False: DDP fixes the set of
            # gradients it all-reduces when it wraps the model, so parameters unfrozen later would never sync.
            groups.append({"params": backbone_parameters(self.net, name), "lr": 0.0 if frozen else t.lr,
                           "name": "backbone"})
        elif self.tail:
            groups.append({"params": self._tail_parameters(), "lr": t.lr * t.finetune_lr_factor, "name": "tail"})
        kind = torch.optim.AdamW if t.optimizer == "adamw" else torch.optim.Adam
        optimizer = kind(groups, lr=t.lr, weight_decay=t.weight_decay)
        if t.schedule == "onecycle":
            scheduler = torch.optim.lr_scheduler.OneCycleLR(
                optimizer, max_lr=[g["lr"] for g in groups], pct_start=t.warmup_fraction, anneal_strategy="cos",
                total_steps=max(1, int(self.trainer.estimated_stepping_batches)))
            return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}
        scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, mode="min", factor=0.1,
                                                               patience=t.plateau_patience)
        return {"optimizer": optimizer,
                "lr_scheduler": {"scheduler": scheduler, "monitor": "val_loss", "interval": "epoch"}}

    def on_train_epoch_start(self) -> None:
        if self.cfg.train.backbone != "finetune":
            # a frozen backbone keeps its ImageNet batch-norm statistics (train() would update them)
            trained = [head_layer(self.net, self.cfg.model.name), *self.tail]  # the trainable tail's BN learns
            head_ids = {id(m) for part in trained for m in part.modules()}
            for module in self.net.modules():
                if isinstance(module, nn.modules.batchnorm._BatchNorm) and id(module) not in head_ids:
                    module.eval()
        self._unfreeze_when_due()

    def _unfreeze_when_due(self) -> None:
        t = self.cfg.train
        if t.freeze_backbone_epochs > 0 and self.current_epoch == t.freeze_backbone_epochs:
            lr = t.lr * t.finetune_lr_factor
            for group in self.optimizers().param_groups:
                group["lr"] = lr
            scheduler = self.lr_schedulers()
            if scheduler is not None:
                scheduler.num_bad_epochs = 0  # a new phase: give it the full patience
            log.info("epoch %d: backbone unfrozen; fine-tuning every layer at lr %.3g", self.current_epoch, lr)
        # The head's rate for this epoch (the backbone's is 0 while frozen, the same afterwards) is logged
        # at the epoch's first batch: a run resumed mid-epoch does not pass through this hook.
        self._lr_logged = False

    # ------------------------------------------------------------ checkpoints

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["xraylens"] = self.checkpoint_meta().to_dict()
        done = self._batches_done_this_epoch()
        if done:  # a mid-epoch save (train.checkpoint_every_n_steps): keep the epoch's metrics so far
            from xraylens.resume import metric_states

            checkpoint[TRAIN_METRICS_KEY] = {"batches_done": done, "batches_per_epoch": self._batches_per_epoch(),
                                             "metrics": metric_states(self, _TRAIN_METRICS)}

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        saved = checkpoint.get(TRAIN_METRICS_KEY)
        if saved and 0 < saved["batches_done"] < saved["batches_per_epoch"]:  # resuming into that epoch
            from xraylens.resume import restore_metric_states

            restore_metric_states(self, saved["metrics"])

    def _batches_done_this_epoch(self) -> int:
        """Training batches finished in the current epoch when saved from inside it, else 0."""
        if self._trainer is None or not self.trainer.training:
            return 0
        done = int(self.trainer.fit_loop.epoch_loop.batch_progress.current.processed)
        return done if done < self._batches_per_epoch() else 0

    def _batches_per_epoch(self) -> int:
        total = self.trainer.num_training_batches
        return int(total) if total != float("inf") else 1 << 62

    def checkpoint_meta(self) -> CheckpointMeta:
        summary = dict(self.data_summary)
        summary["epochs"] = int(self.current_epoch) + 1
        current = self.trainer.callback_metrics.get("val_loss") if self._trainer is not None else None
        best = None
        callback = self.trainer.checkpoint_callback if self._trainer is not None else None
        if callback is not None and callback.best_model_score is not None:
            best = float(callback.best_model_score)
        if current is not None:
            summary["val_loss"] = float(current)
            best = float(current) if best is None else min(best, float(current))
        summary["best_val_loss"] = best
        return CheckpointMeta(
            model=self.cfg.model,
            preprocessing=preprocessing_for(self.cfg.model, self.cfg.data.image_size, self.cfg.data.clahe_clip),
            experiment=to_dict(self.cfg),
            summary=summary,
        )


def box_loss(cells: torch.Tensor, mask: torch.Tensor, boxed: torch.Tensor) -> torch.Tensor:
    """Sum over the ``boxed`` images of a balanced per-cell BCE on the instance map (Li et al., CVPR 2018).

    Cells a true box touches should score abnormal, the rest normal. Inside
    and outside are averaged separately, since a fracture line covers a few of
    1024 cells and a plain mean would teach only "normal everywhere". A normal
    image (no box) has only the outside term. ``mask`` may be at the input's
    resolution; it is max-pooled onto the map's grid.
    """
    if not bool(boxed.any()):
        return cells.sum() * 0.0  # keeps the graph whole: DDP expects every parameter to get a gradient
    target = mask[boxed].float()
    if target.shape[-2:] != cells.shape[-2:]:
        target = F.adaptive_max_pool2d(target.unsqueeze(1), cells.shape[-2:]).squeeze(1)
    per_cell = F.binary_cross_entropy_with_logits(cells[boxed], target, reduction="none").flatten(1)
    target = target.flatten(1)
    inside = (per_cell * target).sum(1) / target.sum(1).clamp(min=1)
    outside = (per_cell * (1 - target)).sum(1) / (1 - target).sum(1).clamp(min=1)
    return (inside + outside).sum()


# ---------------------------------------------------------------- fit


@dataclass(frozen=True)
class FitResult:
    run_dir: Path
    best_checkpoint: Path | None  # RUN/checkpoints/best.ckpt (lowest validation loss)
    last_checkpoint: Path | None  # RUN/checkpoints/last.ckpt (resume from here)
    best_val_loss: float | None
    epochs_run: int  # epochs completed in total, including those before a resume
    global_rank: int = 0  # under DDP every rank returns; only rank 0 wrote the run files


class RunExistsError(OutputExistsError):
    """The output folder already holds a training run and this call would overwrite it."""


# What a training run writes into its folder: what ``overwrite=True`` (``--overwrite``) removes first.
RUN_OUTPUTS = ("checkpoints", "csv", "tensorboard", "metrics.csv", "training_history.png", "config.yaml",
               "config.until-epoch*.yaml")


def fit(cfg: ExperimentConfig, out: str | Path, *, resume: str | Path | None = None,
        progress: bool = True, overwrite: bool = False, callbacks: Sequence[L.Callback] = ()) -> FitResult:
    """Train ``cfg`` into the run folder ``out``; ``resume`` continues from a Lightning checkpoint.

    Raises :class:`~xraylens.models.PretrainedWeightsError` when ImageNet weights
    cannot be obtained, :class:`~xraylens.data.problems.DataError` for an
    unusable dataset, and :class:`RunExistsError` rather than overwrite a run
    (``overwrite=True`` deletes the earlier run's files first instead).
    ``callbacks`` are added to the Trainer's (e.g. a custom logger or a test's probe).
    """
    from lightning.pytorch.utilities import rank_zero_only

    run_dir = Path(out)
    if resume is not None:
        if overwrite:
            raise ConfigError("resume continues the run in its folder; it cannot be combined with overwrite")
        _check_resumable(Path(resume), cfg)
    elif rank_zero_only.rank == 0:
        _check_fresh(run_dir, overwrite)
    check_train_settings(cfg)
    L.seed_everything(cfg.train.seed, workers=True, verbose=False)
    data = load_training_data(cfg, progress=progress)
    log.info("training on %d images (%d patients), validating on %d images (%d patients) from %s",
             len(data.train), data.train["patient_id"].nunique(), len(data.val), data.val["patient_id"].nunique(),
             data.root)
    net = create_model_from_config(cfg.model)
    module = RadiographClassifier(net, cfg, loss_weights(data.train, cfg.train.weighted_loss), data.summary())
    trainer = build_trainer(cfg, run_dir, progress=progress, callbacks=[RunFiles(run_dir, cfg), *callbacks])
    feature_model = module.net if cfg.train.backbone == "cached" else None
    trainer.fit(module, datamodule=RadiographDataModule(cfg, data, feature_model=feature_model),
                ckpt_path=str(resume) if resume is not None else None, weights_only=True)
    if trainer.is_global_zero:
        write_history(trainer, run_dir)
    checkpoints = run_dir / "checkpoints"
    best_score = trainer.checkpoint_callback.best_model_score if trainer.checkpoint_callback else None
    return FitResult(
        run_dir=run_dir,
        best_checkpoint=checkpoints / "best.ckpt" if (checkpoints / "best.ckpt").is_file() else None,
        last_checkpoint=checkpoints / "last.ckpt" if (checkpoints / "last.ckpt").is_file() else None,
        best_val_loss=float(best_score) if best_score is not None else None,
        epochs_run=int(trainer.current_epoch),
        global_rank=int(trainer.global_rank),
    )


def check_train_settings(cfg: ExperimentConfig) -> None:
    """Refuse settings that cannot work together before any data is read."""
    t = cfg.train
    for key, value, allowed in (("train.backbone", t.backbone, BACKBONE_MODES),
                                ("train.optimizer", t.optimizer, OPTIMIZERS),
                                ("train.schedule", t.schedule, SCHEDULES)):
        if value not in allowed:
            raise ConfigError(f"{key}={value!r}; choose one of {', '.join(allowed)}")
    from xraylens.features import FEATURE_FLIPS, FEATURE_PRECISIONS
    from xraylens.onnx_cpu import ENGINES

    if t.feature_precision not in FEATURE_PRECISIONS:
        raise ConfigError(f"train.feature_precision={t.feature_precision!r}; choose one of "
                          f"{', '.join(FEATURE_PRECISIONS)}")
    if t.feature_engine not in ENGINES:
        raise ConfigError(f"train.feature_engine={t.feature_engine!r}; choose one of {', '.join(ENGINES)}")
    if t.feature_engine == "onnxruntime" and t.feature_precision == "bf16":
        raise ConfigError("train.feature_engine=onnxruntime computes float32 features; use train.feature_precision=32 "
                          "(or auto) with it, or train.feature_engine=torch for bf16")
    if t.feature_engine == "onnxruntime" and t.accelerator not in ("cpu", "auto"):
        raise ConfigError(f"train.feature_engine=onnxruntime runs on the CPU; with train.accelerator={t.accelerator} "
                          "use train.feature_engine=torch (or auto)")
    if cfg.data.clahe_clip < 0:
        raise ConfigError(f"data.clahe_clip is a CLAHE clip limit (e.g. 2.0), or 0 for off; got {cfg.data.clahe_clip}")
    if t.accumulate_grad_batches < 1:
        raise ConfigError(f"train.accumulate_grad_batches must be >= 1, got {t.accumulate_grad_batches}")
    if not 0.0 < t.warmup_fraction < 1.0:
        raise ConfigError(f"train.warmup_fraction must be in (0, 1), got {t.warmup_fraction}")
    if t.schedule == "onecycle" and t.freeze_backbone_epochs > 0:
        raise ConfigError("train.schedule=onecycle plans the learning rate of the whole run and cannot be "
                          "combined with train.freeze_backbone_epochs; use train.schedule=plateau for the "
                          "frozen-then-fine-tune recipe")
    if t.backbone != "finetune" and t.freeze_backbone_epochs > 0:
        raise ConfigError(f"train.backbone={t.backbone} keeps the backbone frozen for the whole run; "
                          "train.freeze_backbone_epochs applies to train.backbone=finetune only")
    if not 0.0 <= t.box_fraction <= 1.0:
        raise ConfigError(f"train.box_fraction is a share of the training images, in [0, 1]; got {t.box_fraction}")
    if t.box_fraction > 0 and not architecture(cfg.model.name).native_map:
        raise ConfigError(f"train.box_fraction trains a model's own instance map, and {cfg.model.name} has none; "
                          "use a mil_* or gmic_* model (e.g. mil_efficientnet_lite0) or set train.box_fraction=0")
    if t.trainable_stages < 0:
        raise ConfigError(f"train.trainable_stages counts backbone stages, >= 0; got {t.trainable_stages}")
    if t.trainable_stages > 0 and (t.backbone == "finetune" or not has_feature_split(cfg.model.name)):
        raise ConfigError("train.trainable_stages (partial fine-tuning) applies to train.backbone=frozen or "
                          f"cached with a mil_* model; got train.backbone={t.backbone}, model {cfg.model.name} "
                          "(train.backbone=finetune already trains every stage)")
    if t.trainable_stages > 0 and t.trainable_stages > max_trainable_stages(cfg.model.name):
        raise ConfigError(f"train.trainable_stages={t.trainable_stages}: {cfg.model.name} can train at most its "
                          f"last {max_trainable_stages(cfg.model.name)} backbone stages; "
                          f"cannot train the last {t.trainable_stages}")
    if t.feature_flip not in FEATURE_FLIPS:
        raise ConfigError(f"train.feature_flip must be one of {', '.join(FEATURE_FLIPS)}, got {t.feature_flip!r}")
    if t.backbone == "cached" and not has_feature_split(cfg.model.name):
        why = (" (its crops follow the global map as it learns, so no feature is fixed)"
               if has_logit_parts(cfg.model.name) else "")
        raise ConfigError(f"train.backbone=cached needs a model that splits into features and a head "
                          f"(the mil_* models); {cfg.model.name} does not{why}. Use train.backbone=frozen.")


def _check_fresh(run_dir: Path, overwrite: bool = False) -> None:
    existing = sorted((run_dir / "checkpoints").glob("*.ckpt")) if (run_dir / "checkpoints").is_dir() else []
    if not (existing or (run_dir / "metrics.csv").exists()):
        return  # empty, or a start killed before its first checkpoint: nothing to lose
    if not overwrite:
        raise RunExistsError(
            f"{run_dir} already holds a training run ({len(existing)} checkpoint(s)); continue it with "
            f"--resume {run_dir / 'checkpoints' / 'last.ckpt'}, choose a new --out folder, or pass "
            "--overwrite to delete it and start again"
        )
    from xraylens.output_dir import claim_output_dir

    log.warning("--overwrite: deleting the earlier training run in %s", run_dir)
    claim_output_dir(run_dir, overwrite=True, outputs=RUN_OUTPUTS, what="training run")


def checkpoint_experiment(path: str | Path) -> dict[str, Any]:
    """The training config stored in an xraylens Lightning checkpoint, as a plain dict (for ``--resume``)."""
    from xraylens.models import CheckpointError
    from xraylens.models.checkpoints import read_checkpoint_file

    path = Path(path)
    raw = read_checkpoint_file(path, mmap=True)
    meta = raw.get("xraylens") if isinstance(raw, dict) else None
    if not meta or "optimizer_states" not in raw:
        raise CheckpointError(f"{path}: not a resumable xraylens training checkpoint (use a file from "
                              "RUN/checkpoints/, e.g. last.ckpt)")
    return dict(meta.get("experiment", {}))


def _check_resumable(path: Path, cfg: ExperimentConfig) -> None:
    experiment = checkpoint_experiment(path)
    stored_train = experiment.get("train", {})
    if cfg.train.schedule == "onecycle" and stored_train.get("epochs") != cfg.train.epochs:
        raise ConfigError(
            f"{path} was trained with train.schedule=onecycle over {stored_train.get('epochs')} epochs; that "
            f"schedule is planned for the whole run, so resuming with train.epochs={cfg.train.epochs} cannot "
            "extend it. Resume with the run's own epochs, or start a new run from its weights.")
    stored = experiment.get("model", {})
    wanted = to_dict(cfg.model)
    keys = ("name", "in_channels")
    if any(stored.get(k) != wanted[k] for k in keys):
        raise ConfigError(
            f"{path} holds a {stored.get('name')} with in_channels={stored.get('in_channels')}, but the config asks "
            f"for {wanted['name']} with in_channels={wanted['in_channels']}; resume with the run's own config "
            "(omit --config; `xraylens train` then reads it from the checkpoint)"
        )
