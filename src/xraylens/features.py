"""Frozen backbone features, computed once per image: the CPU recipe's training data (``train.backbone=cached``).

Why: fine-tuning an ImageNet backbone at 512 px runs at a few images per
second on a 2-core CPU, and every epoch repeats it. With the backbone frozen
its output for an image never changes, so it is computed once (one forward
pass, no gradients) and every epoch trains only the small head on the stored
maps: tens of epochs in the time of one fine-tuning epoch.

What this gives up: image augmentation (rotation, zoom, intensity), since the
features are of the un-augmented square. A horizontal flip is kept, applied
to the stored map (an approximation of flipping the image: the filters are
not mirror-symmetric). For a 1x1 head under top-k pooling that flip changes
nothing (the same cells, moved); trainable stages (partial fine-tuning) would
read the flipped map through pretrained 3x3 and 5x5 filters that never made
one. So the features of the mirrored films can be computed and stored too
(:class:`Mirrored`), twice the work and memory, and the flip is exact:
``train.feature_flip`` ``auto`` does that with trainable stages, ``mirror``
always (+0.02 study AUROC on realistic data, README), ``map`` never.

Memory: features are kept as float16 in RAM, 229 kB
per image for ``mil_efficientnet_lite0`` at 512 px (37k MURA images: 8.5 GB); 4x that for
``mil_efficientnet_lite0_stride8``, whose map has 4x the cells; 2.1x for
``mil_efficientnet_lite0_multiscale`` (232 channels stacked from three stages).
"""

from __future__ import annotations

import logging
import math
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from xraylens.config import ConfigError

log = logging.getLogger(__name__)

FEATURE_PRECISIONS = ("32", "bf16", "auto")
FEATURE_FLIPS = ("auto", "mirror", "map")  # train.feature_flip: how data.augment.hflip flips stored features
BF16_CPU_FLAGS = ("avx512_bf16", "amx_bf16")  # native bfloat16 arithmetic; elsewhere it is emulated, slower


def resolve_precision(precision: str, device: str | torch.device = "cpu") -> str:
    """``"auto"`` -> ``"bf16"`` where the hardware computes bfloat16 natively, else ``"32"``.

    Why not bf16 everywhere: on a CPU without AVX-512 BF16 or AMX the
    conversion is emulated and can be slower than float32.
    """
    if precision != "auto":
        return precision
    kind = torch.device(device).type
    if kind == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "32"
    if kind != "cpu":
        return "32"
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as handle:
            flags = next((line.split(":", 1)[1].split() for line in handle if line.startswith("flags")), [])
    except OSError:  # not Linux: stay exact
        return "32"
    return "bf16" if any(flag in flags for flag in BF16_CPU_FLAGS) else "32"


def feature_precision(precision: str, engine: str, device: str | torch.device = "cpu") -> str:
    """The precision features are computed in, once the engine is chosen: ONNX Runtime runs float32."""
    if engine == "onnxruntime":
        if precision == "bf16":
            raise ValueError("the onnxruntime feature engine computes float32; use precision 32 or auto with it")
        return "32"
    return resolve_precision(precision, device)


@torch.inference_mode()
def compute_features(model: nn.Module, images: Dataset, *, batch_size: int = 16, num_workers: int = 0,
                     channels_last: bool = True, device: str | torch.device = "cpu", precision: str = "32",
                     progress: bool = True, desc: str = "features", tail: int = 0,
                     copies: int = 1, engine: str = "torch",
                     runner: tuple[Any, str] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """``model.features`` of every sample of ``images`` (dicts with ``image`` and ``ok``).

    Returns (N, K, h, w) float16 features and the (N,) bool ``ok`` flags
    (unreadable images get zero features and stay excluded from the loss).
    ``precision="bf16"`` runs the backbone under bfloat16 autocast: about 2x
    faster on a CPU with AVX-512 bf16, and within noise of fp32 in our sweep
    (README); evaluation and inference still run the model in fp32. ``"auto"``
    picks bf16 where the hardware has it (:func:`resolve_precision`), unless
    ONNX Runtime computes the features (:func:`feature_precision`). ``tail``
    stops that many stages early (partial fine-tuning trains the rest).
    ``copies``: processes on this machine storing the same features at once
    (DDP ranks on one node), counted in the memory check. ``engine``:
    ``"torch"``, ``"onnxruntime"`` (float32 on the CPU, faster than PyTorch's
    float32 and bf16 alike) or ``"auto"`` (:func:`xraylens.onnx_cpu.resolve_engine`).
    ``runner``: a :func:`xraylens.onnx_cpu.runner` of :class:`~xraylens.onnx_cpu.Trunk` built by the
    caller, reused across calls (one export for train and validation); it
    replaces ``engine`` and stays open.
    """
    from xraylens.onnx_cpu import Trunk, close, resolve_engine
    from xraylens.onnx_cpu import runner as make_runner

    if precision not in FEATURE_PRECISIONS:
        raise ValueError(f"feature precision must be one of {', '.join(FEATURE_PRECISIONS)}, got {precision!r}")
    engine = runner[1] if runner is not None else resolve_engine(engine, precision, device, images=len(images))
    precision = feature_precision(precision, engine, device)
    if engine == "onnxruntime" and torch.device(device).type != "cpu":
        raise ValueError(f"the onnxruntime feature engine runs on the CPU; got device {device}")
    from tqdm.auto import tqdm

    total = len(images)
    if total == 0:
        raise ValueError("no images to compute features for")
    was_training = model.training
    model.eval().to(device)
    loader = DataLoader(images, batch_size=batch_size, num_workers=num_workers, shuffle=False)
    stored: torch.Tensor | None = None
    oks = torch.zeros(total, dtype=torch.bool)
    done = 0
    run, owned = (runner[0], False) if runner is not None else (None, True)
    try:
        for batch in tqdm(loader, desc=desc, unit="batch", disable=not progress, leave=False):
            x = batch["image"].to(device)
            if run is None:
                run, engine = make_runner(Trunk(model, tail), tuple(x.shape[1:]), engine, desc=desc)
            if done == 0:
                log.info("%s: computed by %s in %s", desc, engine, "bfloat16" if precision == "bf16" else "float32")
            if channels_last and engine == "torch":
                x = x.contiguous(memory_format=torch.channels_last)
            with torch.autocast(torch.device(device).type, dtype=torch.bfloat16, enabled=precision == "bf16"):
                features = run(x)
            if stored is None:  # the first batch gives the shape: claim the whole store at once, or say why not
                stored = allocate_features(total, tuple(features.shape[1:]), desc, copies=copies)
            stored[done : done + len(features)] = features.to("cpu", torch.float16)
            oks[done : done + len(features)] = batch["ok"].bool()
            done += len(features)
    finally:
        if owned:
            close(run)
        model.train(was_training)
    assert stored is not None and done == total
    return stored, oks


@torch.no_grad()
def cell_grid(model: nn.Module, features: torch.Tensor, tail: int = 0) -> tuple[int, int]:
    """(h, w) of the instance map that stored ``features`` give: where box masks go.

    Why: features stored before trainable stages (``tail`` > 0) can be on a
    finer grid than the map the loss sees (blocks.2 at stride 8 below a
    stride-16 map), so the grid is read off the head's own output.
    """
    if tail == 0:
        return tuple(features.shape[-2:])
    was_training = model.training
    model.eval()
    try:
        cells = model.classify_with_map(features[:1].float(), tail)[1]
    finally:
        model.train(was_training)
    return tuple(cells.shape[-2:])


def allocate_features(count: int, shape: tuple[int, ...], desc: str = "features", copies: int = 1) -> torch.Tensor:
    """An empty (count, *shape) float16 store, after checking that this machine has the memory for it.

    Why one store, filled in place: collecting batches and concatenating them
    needs twice the memory at the end, and at MURA's size (37k images) that is
    the difference between fitting in RAM and being killed mid-setup. Every DDP
    rank stores all the features (``copies`` of them share the node's RAM), and
    each rank checks before any has filled its store, so the check counts them all.
    """
    need = count * math.prod(shape) * 2 * max(1, copies)
    have = available_memory()
    if have is not None and need > 0.9 * have:
        ranks = f" ({copies} processes on this machine, each with its own copy)" if copies > 1 else ""
        raise FeatureMemoryError(
            f"{desc}: storing {count:,} images x {shape} float16 features needs {need / 1e9:.1f} GB{ranks} and this "
            f"machine has {have / 1e9:.1f} GB available. Use {'fewer devices per node, ' if copies > 1 else ''}a model with a smaller map "
            "(model.name=mil_efficientnet_lite0 stores half of mil_efficientnet_lite0_multiscale's), a smaller "
            "data.image_size, train.backbone=frozen (features recomputed every epoch, nothing stored), or more RAM")
    return torch.empty((count, *shape), dtype=torch.float16)


def available_memory() -> int | None:
    """Bytes of RAM the kernel can hand out now (``MemAvailable``), or None where it cannot be read."""
    try:
        with open("/proc/meminfo", encoding="ascii") as handle:
            for line in handle:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


class FeatureMemoryError(ConfigError):
    """The stored features would not fit in this machine's memory: a setting to change, caught like a config error."""


class Mirrored(Dataset):
    """A dataset of samples with an ``image`` (C, S, S), each mirrored left to right: features of flipped films."""

    def __init__(self, images: Dataset) -> None:
        self.images = images

    def __len__(self) -> int:
        return len(self.images)  # type: ignore[arg-type]

    def __getitem__(self, i: int) -> dict[str, Any]:
        sample = dict(self.images[i])
        sample["image"] = sample["image"].flip(-1)
        return sample


class FeatureSet(Dataset):
    """Stored features in the shape of a training sample: ``features``, ``label``, ``ok``, ``part``, ``index``.

    ``masks`` (optional, box supervision): (N, h, w) int8 box masks on the
    instance map's grid (``grid``; the features' own unless they were stored
    before trainable stages, :func:`cell_grid`), -1 for images without
    supervision. Samples then also carry ``mask`` (0/1, flipped with the
    features) and ``boxed``. ``mirrored`` (optional): the features of each
    image mirrored left to right (:class:`Mirrored`); with ``hflip`` a flipped
    sample takes them instead of the flipped stored map.
    """

    def __init__(self, features: torch.Tensor, ok: torch.Tensor, labels: torch.Tensor, parts: torch.Tensor,
                 hflip: bool = False, masks: torch.Tensor | None = None,
                 grid: tuple[int, int] | None = None, mirrored: torch.Tensor | None = None) -> None:
        if not len(features) == len(ok) == len(labels) == len(parts):
            raise ValueError("features, ok, labels and parts must have one entry per image")
        expected = (len(features), *(grid or features.shape[-2:]))
        if masks is not None and tuple(masks.shape) != expected:
            raise ValueError(f"box masks {tuple(masks.shape)} do not match the instance map's grid {expected}")
        if mirrored is not None and mirrored.shape != features.shape:
            raise ValueError(f"mirrored features {tuple(mirrored.shape)} do not match {tuple(features.shape)}")
        self.features, self.ok, self.labels, self.parts = features, ok, labels.float(), parts.long()
        self.hflip = hflip
        self.masks = masks
        self.mirrored = mirrored

    def _flipped(self, rows: torch.Tensor) -> torch.Tensor:
        """(B, K, h, w) float features of ``rows``' mirrored films: stored, or the stored map flipped."""
        if self.mirrored is not None:
            return self.mirrored[rows].float()
        return self.features[rows].float().flip(-1)

    def __len__(self) -> int:
        return len(self.features)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor | int | bool]:
        f = self.features[i].float()  # (K, h, w)
        mask = self.masks[i] if self.masks is not None else None
        if self.hflip and bool(torch.rand(()) < 0.5):
            f = self._flipped(torch.tensor([i]))[0]
            mask = mask.flip(-1) if mask is not None else None
        sample = {"features": f, "label": self.labels[i], "ok": bool(self.ok[i]), "part": int(self.parts[i]),
                  "index": i}
        if mask is not None:
            sample.update(mask=mask.clamp(min=0).to(torch.uint8), boxed=bool(mask[0, 0] >= 0))
        return sample

    def __getitems__(self, indices: list[int]) -> dict[str, torch.Tensor]:
        """A whole batch in one gather: per-sample conversion and stacking cost 20x more on a CPU.

        The DataLoader calls this instead of ``__getitem__`` for each index; pair it
        with :func:`collate_batch`, since the batch comes out already collated.
        """
        rows = torch.as_tensor(indices, dtype=torch.long)
        f = self.features[rows].float()  # (B, K, h, w)
        masks = self.masks[rows] if self.masks is not None else None  # (B, h, w)
        if self.hflip:
            mirrored = torch.rand(len(rows)) < 0.5
            f[mirrored] = self._flipped(rows[mirrored])
            if masks is not None:
                masks[mirrored] = masks[mirrored].flip(-1)
        batch = {"features": f, "label": self.labels[rows], "ok": self.ok[rows], "part": self.parts[rows],
                 "index": rows}
        if masks is not None:
            batch["boxed"] = masks[:, 0, 0] >= 0
            batch["mask"] = masks.clamp(min=0).to(torch.uint8)
        return batch


def collate_batch(batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The DataLoader's collate for :class:`FeatureSet`: its ``__getitems__`` batches already."""
    return batch
