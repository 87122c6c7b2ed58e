"""What training reads: the indexed ``train`` split (MURA or a box dataset), divided by patient, as data loaders.

Kept apart from :mod:`xraylens.training` so the data side (index, split,
cache, class weights, samplers) can be read and tested without a network.

Validation under DDP uses a sampler that does not repeat images: Lightning's
default pads every rank to the same length by duplicating a few images, which
would make validation loss and AUROC (and so early stopping and ``best.ckpt``)
depend on the number of GPUs.

With ``train.box_fraction > 0`` a seeded share of the training images also
carries its true boxes (the dataset's own for FracAtlas and GRAZPEDWRI-DX,
else ``data.boxes`` / ``boxes.csv``), mapped once onto the letterboxed square (from the
image header, so the cache path needs no decoding); the training samples
then hold a box mask that the augmentation moves with the image.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset

from xraylens.config import ALL_BODY_PARTS, BODY_PARTS, ExperimentConfig
from xraylens.data.augment import train_transform
from xraylens.data.boxes import (
    TrueBox,
    boxes_on_input,
    choose_supervised,
    find_box_table,
    read_box_table,
    square_mask,
)
from xraylens.data.cache import CacheError, SquareCache, find_cache
from xraylens.data.dataset import RadiographDataset
from xraylens.data.images import ImageReadError, image_size
from xraylens.data.preprocess import letterbox_geometry
from xraylens.data.problems import DataError, format_problems
from xraylens.models import preprocessing_for

log = logging.getLogger(__name__)


@dataclass
class TrainingData:
    """The two tables training needs, where they came from, and the cache (if any) that serves them."""

    root: Path  # the folder the index paths are relative to (MURA: the one that contains MURA-v1.1)
    train: pd.DataFrame  # index rows (path, file, body_part, patient_id, label, ...)
    val: pd.DataFrame
    cache: SquareCache | None = None
    # train.box_fraction > 0: training row position -> (K, 4) true boxes on the letterboxed square
    train_boxes: dict[int, np.ndarray] | None = None

    def summary(self) -> dict[str, Any]:
        """Counts that go into every checkpoint (plain types only)."""
        boxed = {} if self.train_boxes is None else {"box_supervised_images": len(self.train_boxes)}
        return {**boxed,
            "data_root": str(self.root),
            "train_images": len(self.train),
            "val_images": len(self.val),
            "train_patients": int(self.train["patient_id"].nunique()),
            "val_patients": int(self.val["patient_id"].nunique()),
            "train_abnormal_fraction": round(float(self.train["label"].mean()), 4),
            "body_parts": sorted(self.train["body_part"].unique().tolist()),
        }


def load_training_data(cfg: ExperimentConfig, progress: bool = True) -> TrainingData:
    """Index ``cfg.data.root`` (train split, chosen body parts, its format), split by patient, find the cache."""
    from xraylens.data.formats import open_for
    from xraylens.data.splits import split_train_val

    data = cfg.data
    index = open_for(data.root, data, splits=("train",), body_parts=data.body_parts or None, progress=progress)
    if index.problems:
        log.warning("indexing %s skipped %s\n(the full list: `xraylens data summary %s`)", index.root,
                    format_problems(index.problems), data.root)
    if index.table.empty:
        raise DataError(f"{index.root}: no training images for body parts {list(data.body_parts) or 'all'}")
    table = split_train_val(index.table, data.val_fraction, data.split_seed)
    train = table[table["subset"] == "train"].reset_index(drop=True)
    val = table[table["subset"] == "val"].reset_index(drop=True)
    if train.empty or val.empty:
        raise DataError(
            f"{index.root}: the patient split left {len(train)} training and {len(val)} validation images; "
            f"training needs both (adjust data.val_fraction={data.val_fraction} or add patients)"
        )
    boxes = None
    if cfg.train.box_fraction > 0:
        table_of_boxes = index.boxes if index.boxes is not None and data.boxes == "auto" else _box_table(cfg, index.root)
        boxes = supervised_boxes(train, table_of_boxes, cfg.train.box_fraction, cfg.train.seed, data.image_size)
    return TrainingData(root=index.root, train=train, val=val, cache=_usable_cache(cfg, index.root, table),
                        train_boxes=boxes)


def _box_table(cfg: ExperimentConfig, mura_parent: Path) -> dict[str, list[TrueBox]]:
    if cfg.data.boxes != "auto":
        return read_box_table(cfg.data.boxes)
    path = find_box_table(cfg.data.root, mura_parent)
    if path is None:
        raise DataError(f"train.box_fraction={cfg.train.box_fraction} needs ground-truth boxes, but neither "
                        f"{cfg.data.root} nor {mura_parent} holds a boxes.csv; give one with data.boxes=PATH "
                        "(columns path,x0,y0,x1,y1,kind) or set train.box_fraction=0")
    return read_box_table(path)


def supervised_boxes(train: pd.DataFrame, table: dict[str, list[TrueBox]], fraction: float, seed: int,
                     size: int) -> dict[int, np.ndarray]:
    """Row position -> (K, 4) boxes on the ``size`` square, for the seeded ``fraction`` of ``train``."""
    paths = train["path"].astype(str).tolist()
    chosen = choose_supervised(train["label"].to_numpy(), [p in table for p in paths], fraction, seed)
    out: dict[int, np.ndarray] = {}
    for i in chosen:
        try:
            geometry = letterbox_geometry(*image_size(train["file"].iat[i]), size)
        except ImageReadError as exc:
            log.warning("no box supervision for an unreadable image: %s", exc)
            continue
        out[int(i)] = boxes_on_input(table.get(paths[i], []), geometry)
    with_boxes = sum(len(b) > 0 for b in out.values())
    log.info("box supervision on %d of %d training images (%d with boxes, %d normal)", len(out), len(train),
             with_boxes, len(out) - with_boxes)
    if not with_boxes:
        log.warning("train.box_fraction=%s: no chosen training image has a box in the table; check that its "
                    "paths are MURA-relative like %s", fraction, paths[0] if paths else "MURA-v1.1/train/...")
    return out


def _usable_cache(cfg: ExperimentConfig, root: Path, table: pd.DataFrame) -> SquareCache | None:
    """The pre-resized cache when it exists and covers every image; says which way images are read."""
    size = cfg.data.image_size
    cache = find_cache(cfg.data.cache, root, size)
    if cache is None:
        if cfg.data.cache == "auto" and cfg.train.backbone != "cached":  # cached: every image is read once
            log.info("no %dpx cache under %s: decoding images on the fly (faster epochs: "
                     "`xraylens data cache %s --size %d`)", size, root, root, size)
        return None
    absent = cache.missing(table["path"])
    if absent:
        message = (f"{cache.folder} lacks {len(absent)} of {len(table)} images (first: {absent[0]}); "
                   f"rebuild it with `xraylens data cache {root} --size {size}`")
        if cfg.data.cache != "auto":
            raise CacheError(message)
        log.warning("ignoring a stale cache: %s", message)
        return None
    log.info("reading %dpx squares from the pre-resized cache %s", size, cache.folder)
    return cache


def loss_weights(train: pd.DataFrame, weighted: bool = True) -> dict[str, list[float]]:
    """``{body part: [w_normal, w_abnormal]}`` from training image counts, as in the MURA paper.

    w_abnormal = N_T / (A_T + N_T) and w_normal = A_T / (A_T + N_T) for body
    part T, so each part's two classes contribute equally to the loss. A part
    with only one class keeps equal weights (the formula would give its
    images zero weight). ``weighted=False`` gives every image weight 1.
    """
    weights = {part: [1.0, 1.0] for part in (*BODY_PARTS, *sorted(set(train["body_part"]) - set(BODY_PARTS)))}
    if not weighted:
        return weights
    for part, rows in train.groupby("body_part"):
        abnormal = int((rows["label"] == 1).sum())
        normal = len(rows) - abnormal
        if abnormal == 0 or normal == 0:
            log.warning("%s has only %s training images: using equal class weights for it",
                        part, "normal" if abnormal == 0 else "abnormal")
            weights[str(part)] = [0.5, 0.5]
        else:
            weights[str(part)] = [abnormal / len(rows), normal / len(rows)]
    return weights


def grid_masks(boxes: dict[int, np.ndarray], count: int, size: int, grid: tuple[int, int]) -> torch.Tensor:
    """(count, h, w) int8 box masks on a feature grid: 1 in cells a box touches, 0 outside, -1 = no boxes.

    Rows without supervision are marked -1 so stored features need no second
    "boxed" array; a cell is inside when any of its pixels is (max pooling).
    """
    masks = torch.full((count, *grid), -1, dtype=torch.int8)
    for i, rows in boxes.items():
        square = torch.from_numpy(square_mask(rows, size)).float()[None, None]
        masks[i] = F.adaptive_max_pool2d(square, grid)[0, 0].to(torch.int8)
    return masks


class TaggedDataset(Dataset):
    """A :class:`RadiographDataset` whose samples also carry ``part``, the body part's index in ALL_BODY_PARTS."""

    def __init__(self, dataset: RadiographDataset) -> None:
        self.dataset = dataset
        self.parts = np.array([ALL_BODY_PARTS.index(p) for p in dataset.table["body_part"]], dtype=np.int64)

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, i: int) -> dict[str, Any]:
        sample = self.dataset[i]
        sample["part"] = int(self.parts[i])
        return sample


class RadiographDataModule(L.LightningDataModule):
    """Training (augmented, shuffled) and validation (as is) loaders over :class:`TrainingData`.

    With ``feature_model`` (``train.backbone=cached``) the loaders serve that
    model's frozen backbone features instead of images, computed once in
    ``setup`` (:mod:`xraylens.features`).
    """

    def __init__(self, cfg: ExperimentConfig, data: TrainingData, feature_model: nn.Module | None = None) -> None:
        super().__init__()
        self.cfg = cfg
        self.data = data
        self.prep = preprocessing_for(cfg.model, cfg.data.image_size, cfg.data.clahe_clip)
        self.feature_model = feature_model
        self.train_set: Dataset | None = None
        self.val_set: Dataset | None = None

    def _dataset(self, table: pd.DataFrame, train: bool) -> TaggedDataset:
        source = self.data.cache.source_for(table["path"]) if self.data.cache is not None else None
        transform = train_transform(self.cfg.data.augment) if train else None
        boxes = self.data.train_boxes if train else None
        return TaggedDataset(RadiographDataset(table, self.prep, transform=transform, square_source=source,
                                               boxes=boxes))

    def setup(self, stage: str | None = None) -> None:
        if self.train_set is not None:
            return
        if self.feature_model is None:
            self.train_set = self._dataset(self.data.train, train=True)
            self.val_set = self._dataset(self.data.val, train=False)
        else:
            from xraylens.onnx_cpu import close

            runner = self._trunk_runner()
            try:
                self.train_set = self._features(self.data.train, "train", hflip=self.cfg.data.augment.hflip,
                                                boxes=self.data.train_boxes, runner=runner)
                self.val_set = self._features(self.data.val, "val", hflip=False, runner=runner)
            finally:
                close(runner[0])

    def _device(self) -> torch.device | str:
        return self.trainer.strategy.root_device if self.trainer is not None else "cpu"

    def _trunk_runner(self) -> tuple[Any, str]:
        """What computes the frozen features, built once for train and validation (one ONNX export)."""
        from xraylens.onnx_cpu import Trunk, resolve_engine, runner

        t = self.cfg.train
        engine = resolve_engine(t.feature_engine, t.feature_precision, self._device(),
                                images=len(self.data.train) + len(self.data.val))
        return runner(Trunk(self.feature_model, t.trainable_stages),
                      (self.prep.in_channels, self.prep.size, self.prep.size), engine, desc="frozen features")

    def _features(self, table: pd.DataFrame, name: str, hflip: bool,
                  boxes: dict[int, np.ndarray] | None = None, runner: tuple[Any, str] | None = None) -> Dataset:
        from xraylens.features import FeatureSet, Mirrored, cell_grid, compute_features, feature_precision

        images = self._dataset(table, train=False)  # un-augmented squares: features are computed once
        device = self._device()
        progress = self.trainer is None or self.trainer.progress_bar_callback is not None
        tail = self.cfg.train.trainable_stages

        def compute(source: Dataset, desc: str) -> tuple[torch.Tensor, torch.Tensor]:
            return compute_features(self.feature_model, source, batch_size=self.cfg.train.batch_size,
                                    num_workers=self.cfg.data.num_workers, device=device,
                                    channels_last=self.cfg.train.channels_last, progress=progress,
                                    precision=self.cfg.train.feature_precision, runner=runner, desc=desc, tail=tail,
                                    copies=self.trainer.num_devices if self.trainer is not None else 1)

        features, ok = compute(images, f"frozen features ({name})")
        # trainable stages must not read a flipped map through filters that never made one (features.py)
        mirror = hflip and (self.cfg.train.feature_flip == "mirror" or self.cfg.train.feature_flip == "auto" and tail)
        mirrored = compute(Mirrored(images), f"frozen features ({name}, mirrored)")[0] if mirror else None
        log.info("computed frozen features for %d %s images%s: %s float16 (computed in %s)", len(features), name,
                 " and their mirror images" if mirrored is not None else "", tuple(features.shape[1:]),
                 feature_precision(self.cfg.train.feature_precision, runner[1] if runner else "torch", device))
        grid = cell_grid(self.feature_model, features, tail)
        masks = None if boxes is None else grid_masks(boxes, len(features), self.prep.size, grid)
        return FeatureSet(features, ok, torch.tensor(images.dataset.labels), torch.tensor(images.parts),
                          hflip=hflip, masks=masks, grid=grid, mirrored=mirrored)

    def _loader(self, dataset: Dataset, **kwargs: Any) -> DataLoader:
        workers = self.cfg.data.num_workers
        on_gpu = self.trainer is not None and self.trainer.strategy.root_device.type == "cuda"
        if self.feature_model is not None:
            from xraylens.features import collate_batch

            # stored features are in this process's memory already: workers would only copy them
            workers, kwargs = 0, {**kwargs, "collate_fn": collate_batch}
        kind: type[DataLoader] = DataLoader
        if "seed" in kwargs:
            from xraylens.resume import ResumableLoader

            kind = ResumableLoader
        return kind(dataset, batch_size=self.cfg.train.batch_size, num_workers=workers,
                    persistent_workers=workers > 0, pin_memory=on_gpu, **kwargs)

    def train_dataloader(self) -> DataLoader:
        assert self.train_set is not None, "call setup() first"
        replicas = self.trainer.world_size if self.trainer is not None else 1
        # A last batch of one image breaks BatchNorm; drop the remainder when a rank has more than a batch.
        drop_last = len(self.train_set) // replicas > self.cfg.train.batch_size
        if self.cfg.train.deterministic and replicas == 1:
            # the order of each epoch from (seed, epoch), resumable mid-epoch (xraylens.resume)
            return self._loader(self.train_set, drop_last=drop_last, seed=self.cfg.train.seed)
        return self._loader(self.train_set, shuffle=True, drop_last=drop_last)

    def val_dataloader(self) -> DataLoader:
        assert self.val_set is not None, "call setup() first"
        sampler = None
        if self.trainer is not None and self.trainer.world_size > 1:
            from lightning.pytorch.overrides.distributed import UnrepeatedDistributedSampler

            sampler = UnrepeatedDistributedSampler(self.val_set, num_replicas=self.trainer.world_size,
                                                   rank=self.trainer.global_rank, shuffle=False)
        return self._loader(self.val_set, shuffle=False, sampler=sampler)

