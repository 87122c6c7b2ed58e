"""Experiment configuration as frozen dataclasses that round-trip to YAML.

Why dataclasses and not a dict: a typo in a YAML key or a ``--set`` override
must fail loudly before hours of training, not be silently ignored. Every
section is frozen so a config object can be shared between the data module,
the LightningModule and the checkpoint without anyone mutating it.

This module imports nothing from the rest of the package.
"""

from __future__ import annotations

import dataclasses
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

BODY_PARTS: tuple[str, ...] = (
    "XR_ELBOW",
    "XR_FINGER",
    "XR_FOREARM",
    "XR_HAND",
    "XR_HUMERUS",
    "XR_SHOULDER",
    "XR_WRIST",
)
# Parts that only the box datasets have (FracAtlas: leg, hip, and images showing several parts). Training
# weighs classes per part over BODY_PARTS + these; MURA folders still admit only the seven above.
OTHER_BODY_PARTS: tuple[str, ...] = ("XR_HIP", "XR_LEG", "XR_MIXED")
ALL_BODY_PARTS: tuple[str, ...] = BODY_PARTS + OTHER_BODY_PARTS
CLASS_NAMES: tuple[str, str] = ("normal", "abnormal")


class ConfigError(ValueError):
    """A configuration file or override that cannot be applied as written."""


@dataclass(frozen=True)
class AugmentConfig:
    """Training-time augmentation; evaluation never augments."""

    rotation_degrees: float = 30.0
    zoom: float = 0.1  # random scale in [1 - zoom, 1 + zoom]
    hflip: bool = True
    brightness: float = 0.2
    contrast: float = 0.2


@dataclass(frozen=True)
class DataConfig:
    """Where the images are, how they are split and how they are shaped."""

    root: str = "data/synth"
    body_parts: tuple[str, ...] = ()  # empty = all seven parts
    image_size: int = 128  # square side after aspect-preserving resize + pad
    # Local contrast (CLAHE) clip limit on the letterboxed square, e.g. 2.0; 0 = off. Travels in checkpoints.
    clahe_clip: float = 0.0
    val_fraction: float = 0.15  # share of train *patients* held out for validation
    split_seed: int = 0
    num_workers: int = 2
    cache: str = "auto"  # "auto" (use a cache if present), "off", or a path to a cache folder
    # Ground-truth boxes (CSV path,x0,y0,x1,y1,kind) for train.box_fraction > 0: "auto" = boxes.csv in
    # data.root or next to MURA-v1.1 (where `xraylens data synth` writes it), or a path.
    boxes: str = "auto"
    # Which reader (xraylens.data.formats): "auto" detects it from the folder; "mura", "fracatlas", "grazpedwri".
    format: str = "auto"
    # FracAtlas and GRAZPEDWRI-DX ship no test split: this share of their patients (stratified by body part
    # and label, drawn with test_seed) becomes the test split "valid"; MURA keeps its official one.
    test_fraction: float = 0.2
    test_seed: int = 0
    # FracAtlas only: "off", or "test" / "valid": that file of Utilities/Fracture Split is the test split for
    # the fractured images it lists and the other two files go to train; the seeded split places the rest.
    official_split: str = "off"
    # GRAZPEDWRI-DX only: "fracture" (the fracture_visible flag) or "any" (also any box of a finding class).
    label: str = "fracture"
    augment: AugmentConfig = field(default_factory=AugmentConfig)


@dataclass(frozen=True)
class ModelConfig:
    """Which network, and where its starting weights come from."""

    name: str = "mobilenet_v2"
    pretrained: bool = False  # torchvision ImageNet weights (downloads unless cached in TORCH_HOME)
    weights_path: str | None = None  # local .pth/.safetensors file of ImageNet weights, for offline hosts
    in_channels: int = 1  # radiographs are grayscale; 1 folds a pretrained RGB stem into one channel
    dropout: float = 0.2
    # Global pooling before the head: "avg" (torchvision's and the MURA paper's), "max", "lse" or "topk".
    # max/lse/topk are multiple-instance pooling for small findings (models.pooling; README: measured effect);
    # mil_* models pool their instance map with it (topk is what they are measured with). "topk:F" averages
    # the top fraction F of locations (default 0.02; README, "What learns": the fraction measured).
    pooling: str = "avg"


@dataclass(frozen=True)
class TrainConfig:
    """Optimisation and the Lightning Trainer's scale settings."""

    epochs: int = 10
    batch_size: int = 32
    lr: float = 1e-4
    weight_decay: float = 0.0
    freeze_backbone_epochs: int = 0  # the seed's recipe: train only the head first
    finetune_lr_factor: float = 0.1  # lr multiplier once the backbone is unfrozen
    # What of the network trains: "finetune" (everything, after freeze_backbone_epochs), "frozen" (the head
    # only; the backbone's batch norm stays in eval mode) or "cached" (frozen, and the backbone's features are
    # computed once per image, so an epoch costs only the head: the CPU recipe; needs a mil_* model).
    backbone: str = "finetune"
    # Partial fine-tuning (frozen/cached, mil_* models): the backbone's last N stages train too, at lr x
    # finetune_lr_factor; with "cached" the features are stored before them, so epochs stay cheap.
    trainable_stages: int = 0
    # "bf16": compute cached features under bfloat16 autocast (~2x on CPUs with AVX-512 BF16 / AMX);
    # "auto": 32 when ONNX Runtime computes them (feature_engine, below), else bf16 where the hardware
    # computes it natively, else 32
    feature_precision: str = "32"
    # What computes the cached features: "torch", "onnxruntime" (the trunk exported once, float32 on the
    # CPU: 2.7x PyTorch's float32 on an AVX2 CPU, 2.5-3.4x its bf16 on one with AVX-512 BF16) or "auto"
    # (onnxruntime on a CPU when the onnx extra is installed and feature_precision is not bf16, else torch);
    # a failed export or parity check falls back to torch
    feature_engine: str = "torch"
    # How data.augment.hflip flips cached features: "mirror" (the features of the mirrored film, computed and
    # stored too: exact, 2x the feature time and memory), "map" (the stored map flipped: free, but trainable
    # stages then read a map their pretrained filters never made) or "auto" (mirror when trainable_stages > 0)
    feature_flip: str = "auto"
    optimizer: str = "adam"  # "adam" (the MURA paper's) or "adamw" (decoupled weight decay)
    # "plateau": lr / 10 when validation loss stalls (the paper's); "onecycle": warmup then cosine decay
    # over the whole run (warmup_fraction of the steps), stepped every batch
    schedule: str = "plateau"
    warmup_fraction: float = 0.1
    accumulate_grad_batches: int = 1  # effective batch = batch_size x this (x devices)
    # Box supervision (Li et al., CVPR 2018): the true boxes of this seeded share of the training images
    # (data.boxes) add a loss on the model's instance map, inside vs outside the boxes. 0 = image labels
    # only (weak supervision, the default). Needs a model with a native map (mil_*).
    box_fraction: float = 0.0
    box_weight: float = 1.0  # weight of that loss against the image loss
    plateau_patience: int = 1  # ReduceLROnPlateau (factor 0.1) on validation loss
    early_stopping_patience: int = 5
    save_top_k: int = 3
    weighted_loss: bool = True  # MURA paper's per-body-part class weights
    accelerator: str = "auto"
    devices: str = "auto"  # "auto", an int as text, or a list like "0,1"
    num_nodes: int = 1
    strategy: str = "auto"  # "ddp" to scale across GPUs / nodes
    precision: str = "32-true"  # "bf16-mixed" / "16-mixed" on GPUs
    channels_last: bool = True
    seed: int = 0
    # Mid-epoch safety for long runs: also write RUN/checkpoints/last.ckpt every N optimiser steps (0 = only at
    # epoch ends). A run killed between two saves resumes from the last one (`--resume`).
    checkpoint_every_n_steps: int = 0
    # Repeatable to the bit on one process (data.num_workers=0): each epoch's order comes from (seed, epoch),
    # every batch's random draws from (seed, batch), torch uses deterministic kernels, and a run killed
    # mid-epoch resumes to the same result (xraylens.resume; README "Reliability").
    deterministic: bool = False
    limit_train_batches: float = 1.0
    limit_val_batches: float = 1.0
    log_every_n_steps: int = 10


@dataclass(frozen=True)
class ExplainConfig:
    """How heatmaps are made and turned into boxes."""

    method: str = "gradcam"
    target: str = "abnormal"  # or "normal"
    # CAM layer as a dotted module name (e.g. "features.6"); None = the architecture's default, its last
    # feature map (stride 32: a 4x4 grid at 128 px). Earlier layers give finer maps (README: measured).
    layer: str | None = None
    threshold_mode: str = "fraction"  # "fraction" of max, "percentile", or "otsu"
    threshold: float = 0.5
    min_box_area_fraction: float = 0.002
    nms_iou: float = 0.3
    max_boxes: int = 5
    # regions this close (a fraction of the long side) are one box: a plate's screw heads, a line's pieces
    box_join_fraction: float = 0.06


@dataclass(frozen=True)
class ExperimentConfig:
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    explain: ExplainConfig = field(default_factory=ExplainConfig)


# ---------------------------------------------------------------- conversion


def to_dict(cfg: Any) -> dict[str, Any]:
    """Plain nested dict (tuples become lists) that YAML and ``torch.load(weights_only=True)`` accept."""

    def convert(value: Any) -> Any:
        if dataclasses.is_dataclass(value):
            return {f.name: convert(getattr(value, f.name)) for f in dataclasses.fields(value)}
        if isinstance(value, tuple | list):
            return [convert(v) for v in value]
        return value

    return convert(cfg)


def from_dict(cls: type, data: dict[str, Any] | None, where: str = "") -> Any:
    """Build dataclass ``cls`` from ``data``; unknown keys and wrong types are errors naming the key."""
    data = data or {}
    if not isinstance(data, dict):
        raise ConfigError(f"{where or cls.__name__}: expected a mapping, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ConfigError(
            f"unknown config key(s) {', '.join(_join(where, k) for k in unknown)}; "
            f"valid keys{' under ' + where if where else ''}: {', '.join(sorted(known))}"
        )
    kwargs = {name: _coerce(hints[name], value, _join(where, name)) for name, value in data.items()}
    return cls(**kwargs)


def _join(prefix: str, key: str) -> str:
    return f"{prefix}.{key}" if prefix else key


class _Yaml12Loader(yaml.SafeLoader):
    """YAML with 1.2 booleans: only true/false are booleans, so ``cache: off`` stays the word "off"."""


_Yaml12Loader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:bool"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_Yaml12Loader.add_implicit_resolver(
    "tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF")
)


def _load_yaml(text: str) -> Any:
    return yaml.load(text, Loader=_Yaml12Loader)  # noqa: S506 - a SafeLoader subclass


def _coerce(hint: Any, value: Any, where: str) -> Any:
    if dataclasses.is_dataclass(hint):
        return from_dict(hint, value, where)
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(arg, value, where)
            except ConfigError as exc:
                errors.append(str(exc))
        raise ConfigError(errors[0] if errors else f"{where}: cannot be {value!r}")
    if origin is tuple:
        if isinstance(value, str):
            value = [v.strip() for v in value.split(",") if v.strip()]
        if not isinstance(value, list | tuple):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        return tuple(_coerce(args[0], v, where) for v in value)
    if hint is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{where}: expected true/false, got {value!r}")
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where}: expected an integer, got {value!r}")
        return value
    if hint is float:
        if isinstance(value, str):  # YAML 1.1 reads "1e-4" (no dot) as text
            try:
                value = float(value)
            except ValueError:
                raise ConfigError(f"{where}: expected a number, got {value!r}") from None
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(f"{where}: expected a number, got {value!r}")
        return float(value)
    if hint is str:
        if isinstance(value, bool) or value is None:
            raise ConfigError(f"{where}: expected text, got {value!r}")
        return str(value)
    return value


# ---------------------------------------------------------------- files and overrides


def load_config(path: str | Path | None = None, overrides: list[str] | tuple[str, ...] = ()) -> ExperimentConfig:
    """Defaults, then the YAML file (if any), then ``key.sub=value`` overrides, in that order."""
    raw: dict[str, Any] = {}
    if path is not None:
        path = resolve_preset(path)
        try:
            raw = _load_yaml(Path(path).read_text()) or {}
        except yaml.YAMLError as exc:
            raise ConfigError(f"{path}: not valid YAML ({exc})") from exc
        if not isinstance(raw, dict):
            raise ConfigError(f"{path}: expected a mapping of sections (data, model, train, explain)")
    for item in overrides:
        apply_override(raw, item)
    return from_dict(ExperimentConfig, raw)


def apply_override(raw: dict[str, Any], item: str) -> None:
    """Apply ``section.key=value`` to a raw dict; the value is parsed as YAML (``true``, ``3``, ``[a, b]``)."""
    if "=" not in item:
        raise ConfigError(f"override {item!r} must look like section.key=value, e.g. train.epochs=3")
    key, _, text = item.partition("=")
    parts = [p for p in key.strip().split(".") if p]
    if not parts:
        raise ConfigError(f"override {item!r} has an empty key")
    try:
        value = _load_yaml(text) if text.strip() else ""
    except yaml.YAMLError:
        value = text
    node = raw
    for part in parts[:-1]:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise ConfigError(f"override {item!r}: {part} is not a section")
    node[parts[-1]] = value


def save_config(cfg: ExperimentConfig, path: str | Path) -> Path:
    """Write the config as YAML atomically (a crash never leaves half a file)."""
    from xraylens.atomic import atomic_write_text

    return atomic_write_text(path, dump_config(cfg))


def dump_config(cfg: Any) -> str:
    return yaml.safe_dump(to_dict(cfg), sort_keys=False)


def preset_dir() -> Path:
    return Path(__file__).parent / "configs"


def resolve_preset(path: str | Path) -> Path:
    """A file path, or the bare name of a shipped preset (``demo_cpu`` -> configs/demo_cpu.yaml)."""
    candidate = Path(path)
    if candidate.is_file():
        return candidate
    shipped = preset_dir() / (candidate.name if candidate.suffix else f"{candidate.name}.yaml")
    if shipped.is_file():
        return shipped
    names = ", ".join(sorted(p.stem for p in preset_dir().glob("*.yaml")))
    raise ConfigError(f"config {path} not found: give a YAML file path or a preset name ({names})")
