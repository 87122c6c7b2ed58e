"""Networks: one factory over torchvision, and checkpoints that describe themselves.

``create_model`` returns a torchvision backbone whose head is one logit
(P(abnormal) = sigmoid), optionally with a one-channel stem for grayscale
radiographs. ``ARCHITECTURES`` knows, per architecture, where the stem, the
head and the CAM target layer live, so explanations work on any registered
model without string guessing at call sites.

A checkpoint carries everything needed to rebuild the model and its input
pipeline (weights, model config, preprocessing, class names, versions), so
evaluation, explanation, inference and export never depend on today's command
line. Loading always uses ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import math
import urllib.error
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from xraylens._version import __version__
from xraylens.config import CLASS_NAMES, ModelConfig, from_dict, to_dict
from xraylens.data.preprocess import Preprocessing

CHECKPOINT_FORMAT = "xraylens.checkpoint"
CHECKPOINT_FORMAT_VERSION = 1


class PretrainedWeightsError(RuntimeError):
    """ImageNet weights were requested but could not be obtained (typically: no internet)."""


class CheckpointError(ValueError):
    """A file that is not a usable xraylens checkpoint; the message names the file and the fix."""


@dataclass(frozen=True)
class Architecture:
    """Where the parts of one torchvision architecture live (dotted attribute paths)."""

    stem: str  # first convolution (adapted for one-channel input)
    head: str  # final nn.Linear (replaced by a one-logit Linear)
    target_layer: str  # default CAM layer: last spatial feature map
    head_dropout: str | None = None  # nn.Dropout right before the head, if any
    # Modules between target_layer output and global pooling (for the classic CAM):
    # densenet applies ReLU after ``features``; others feed the pooled map straight to the head.
    cam_activation: Callable[[torch.Tensor], torch.Tensor] | None = None
    cam_exact: bool = True  # False where a normalisation sits between pooling and the head
    # The global-average-pooling module, or None where torchvision pools inside ``forward``
    # (then other pooling is appended to ``features`` and forward's pooling sees a 1x1 map).
    pool_module: str | None = None


ARCHITECTURES: dict[str, Architecture] = {
    "mobilenet_v2": Architecture("features.0.0", "classifier.1", "features.18", "classifier.0"),
    "densenet121": Architecture("features.conv0", "classifier", "features.norm5",
                                cam_activation=torch.relu),
    "densenet169": Architecture("features.conv0", "classifier", "features.norm5",
                                cam_activation=torch.relu),
    "resnet18": Architecture("conv1", "fc", "layer4", pool_module="avgpool"),
    "resnet50": Architecture("conv1", "fc", "layer4", pool_module="avgpool"),
    "efficientnet_b0": Architecture("features.0.0", "classifier.1", "features.8", "classifier.0",
                                    pool_module="avgpool"),
    "convnext_tiny": Architecture("features.0.0", "classifier.2", "features.7", cam_exact=False,
                                  pool_module="avgpool"),
}
MODEL_NAMES: tuple[str, ...] = tuple(ARCHITECTURES)
POOLINGS: tuple[str, ...] = ("avg", "max", "lse")


class GlobalPool(nn.Module):
    """Global spatial pooling of a (B, C, H, W) map to (B, C, 1, 1): average, max or log-sum-exp.

    Average pooling (torchvision's, and the MURA paper's) lets a finding that
    covers 1% of the image move the pooled feature by about 1%. Max pooling
    scores the one place that looks most abnormal (multiple-instance learning,
    as in Oquab et al. 2015); log-sum-exp with sharpness ``r`` sits between the
    two (Wang et al. 2017, ChestX-ray8). On our synthetic data, trained from
    random weights, neither changed the outcome much (README, "What learns").
    None has parameters, so every pooling shares the same weights layout.
    """

    def __init__(self, kind: str = "avg", sharpness: float = 5.0, fresh_output: bool = False) -> None:
        super().__init__()
        if kind not in POOLINGS:
            raise ValueError(f"unknown pooling {kind!r}; available: {', '.join(POOLINGS)}")
        self.kind = kind
        self.sharpness = float(sharpness)
        # densenet's forward applies ReLU *in place* to what ``features`` returns, which would
        # overwrite the max's output that its backward needs: hand it a copy instead.
        self.fresh_output = fresh_output

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.kind == "avg":
            pooled = x.mean(dim=(2, 3), keepdim=True)
        elif self.kind == "max":
            pooled = x.amax(dim=(2, 3), keepdim=True)
        else:
            r = self.sharpness
            flat = x.flatten(2)  # (B, C, H*W)
            pooled = ((torch.logsumexp(r * flat, dim=2) - math.log(flat.shape[2])) / r)[:, :, None, None]
        return pooled.clone() if self.fresh_output else pooled

    def extra_repr(self) -> str:
        return self.kind if self.kind != "lse" else f"lse, sharpness={self.sharpness}"


def architecture(name: str) -> Architecture:
    try:
        return ARCHITECTURES[name]
    except KeyError:
        raise ValueError(f"unknown model {name!r}; available: {', '.join(MODEL_NAMES)}") from None


def get_submodule(model: nn.Module, dotted: str) -> nn.Module:
    return model.get_submodule(dotted)


def _set_submodule(model: nn.Module, dotted: str, module: nn.Module) -> None:
    parent_name, _, child = dotted.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, child, module)


def create_model(
    name: str = "mobilenet_v2",
    pretrained: bool = False,
    weights_path: str | Path | None = None,
    in_channels: int = 1,
    dropout: float = 0.2,
    pooling: str = "avg",
) -> nn.Module:
    """Build a torchvision classifier with a one-logit head.

    ``pretrained`` loads torchvision's ImageNet weights (cached under TORCH_HOME,
    downloaded otherwise); ``weights_path`` loads the same ImageNet weights from a
    local file, for air-gapped machines. Random initialisation is the default.
    ``pooling`` replaces the global average pooling (see :class:`GlobalPool`).
    """
    import torchvision

    arch = architecture(name)
    if in_channels not in (1, 3):
        raise ValueError(f"in_channels must be 1 or 3, got {in_channels}")
    if pooling not in POOLINGS:
        raise ValueError(f"unknown pooling {pooling!r}; available: {', '.join(POOLINGS)}")
    model = torchvision.models.get_model(name, weights=None)
    if weights_path is not None:
        model.load_state_dict(_read_state_dict(Path(weights_path)))
    elif pretrained:
        model.load_state_dict(_download_imagenet_weights(name))

    head = get_submodule(model, arch.head)
    assert isinstance(head, nn.Linear)
    new_head = nn.Linear(head.in_features, 1)
    nn.init.normal_(new_head.weight, std=0.01)
    nn.init.zeros_(new_head.bias)
    _set_submodule(model, arch.head, new_head)
    if arch.head_dropout is not None:
        _set_submodule(model, arch.head_dropout, nn.Dropout(p=dropout))

    if in_channels == 1:
        stem = get_submodule(model, arch.stem)
        assert isinstance(stem, nn.Conv2d)
        folded = nn.Conv2d(1, stem.out_channels, stem.kernel_size, stem.stride, stem.padding,
                           stem.dilation, stem.groups, stem.bias is not None)
        with torch.no_grad():
            # Summing the RGB filters gives the same response to a gray image (R = G = B).
            folded.weight.copy_(stem.weight.sum(dim=1, keepdim=True))
            if stem.bias is not None:
                folded.bias.copy_(stem.bias)
        _set_submodule(model, arch.stem, folded)
    if pooling != "avg":
        _replace_pooling(model, arch, pooling)
    return model


def _replace_pooling(model: nn.Module, arch: Architecture, pooling: str) -> None:
    if arch.pool_module is not None:
        _set_submodule(model, arch.pool_module, GlobalPool(pooling))
        return
    features = get_submodule(model, "features")
    assert isinstance(features, nn.Sequential)
    # forward() then average-pools a 1x1 map (a no-op); densenet's ReLU after ``features`` must
    # come before the pooling, and is a no-op on the non-negative result when applied again.
    if arch.cam_activation is torch.relu:
        features.add_module("pool", nn.Sequential(nn.ReLU(), GlobalPool(pooling, fresh_output=True)))
    else:
        features.add_module("pool", GlobalPool(pooling))


def create_model_from_config(cfg: ModelConfig) -> nn.Module:
    return create_model(cfg.name, cfg.pretrained, cfg.weights_path, cfg.in_channels, cfg.dropout, cfg.pooling)


def target_layer(model: nn.Module, name: str) -> nn.Module:
    """The default CAM layer of a model built by ``create_model(name)``."""
    return get_submodule(model, architecture(name).target_layer)


def head_layer(model: nn.Module, name: str) -> nn.Linear:
    head = get_submodule(model, architecture(name).head)
    assert isinstance(head, nn.Linear)
    return head


def backbone_parameters(model: nn.Module, name: str) -> list[nn.Parameter]:
    """Every parameter except the head's: what the 'frozen backbone' recipe freezes."""
    head_ids = {id(p) for p in head_layer(model, name).parameters()}
    return [p for p in model.parameters() if id(p) not in head_ids]


def _read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    if not path.is_file():
        raise PretrainedWeightsError(f"weights file {path} does not exist")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - re-raised with the file named
        raise PretrainedWeightsError(f"{path}: not a readable PyTorch state dict ({exc})") from exc
    if isinstance(state, dict) and "state_dict" in state:
        state = state["state_dict"]
    return state


def _download_imagenet_weights(name: str) -> dict[str, torch.Tensor]:
    import torchvision

    weights = torchvision.models.get_model_weights(name).DEFAULT
    filename = weights.url.rsplit("/", 1)[-1]
    try:
        return weights.get_state_dict(progress=True, check_hash=True)
    except (urllib.error.URLError, OSError, RuntimeError) as exc:
        raise PretrainedWeightsError(
            f"could not obtain ImageNet weights for {name} ({exc}). This machine seems offline. Either "
            f"download {weights.url} elsewhere and pass it with --weights PATH (model.weights_path), or "
            f"place {filename} in $TORCH_HOME/hub/checkpoints/ (TORCH_HOME defaults to ~/.cache/torch), "
            f"or train from random initialisation (model.pretrained=false)."
        ) from exc


# ---------------------------------------------------------------- checkpoints


@dataclass(frozen=True)
class CheckpointMeta:
    """Everything except the weights: enough to rebuild the network and its inputs."""

    model: ModelConfig
    preprocessing: Preprocessing
    class_names: tuple[str, ...] = CLASS_NAMES
    xraylens_version: str = __version__
    experiment: dict[str, Any] = field(default_factory=dict)  # full training config, as a plain dict
    summary: dict[str, Any] = field(default_factory=dict)  # e.g. best validation loss, epochs, data counts
    temperature: float = 1.0  # calibration (temperature scaling); 1.0 = none
    threshold: float = 0.5  # decision threshold on P(abnormal)

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": CHECKPOINT_FORMAT,
            "format_version": CHECKPOINT_FORMAT_VERSION,
            "model": to_dict(self.model),
            "preprocessing": self.preprocessing.to_dict(),
            "class_names": list(self.class_names),
            "xraylens_version": self.xraylens_version,
            "experiment": self.experiment,
            "summary": self.summary,
            "temperature": float(self.temperature),
            "threshold": float(self.threshold),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CheckpointMeta:
        return cls(
            model=from_dict(ModelConfig, data["model"], "model"),
            preprocessing=Preprocessing.from_dict(data["preprocessing"]),
            class_names=tuple(data.get("class_names", CLASS_NAMES)),
            xraylens_version=str(data.get("xraylens_version", "unknown")),
            experiment=dict(data.get("experiment", {})),
            summary=dict(data.get("summary", {})),
            temperature=float(data.get("temperature", 1.0)),
            threshold=float(data.get("threshold", 0.5)),
        )


@dataclass
class LoadedModel:
    model: nn.Module  # in eval mode, on CPU
    meta: CheckpointMeta
    path: Path


LIGHTNING_PREFIX = "net."  # the LightningModule keeps the network as ``self.net``


def save_checkpoint(path: str | Path, model: nn.Module, meta: CheckpointMeta) -> Path:
    """A slim, self-describing checkpoint (no optimiser state), written atomically."""
    from xraylens.atomic import atomic_write_with

    payload = meta.to_dict()
    payload["state_dict"] = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    return atomic_write_with(path, lambda handle: torch.save(payload, handle))


def load_checkpoint(path: str | Path) -> LoadedModel:
    """Rebuild a model from a slim or a Lightning checkpoint written by xraylens; weights only, no pickle."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    try:
        raw = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - unpickling errors come in many types
        raise CheckpointError(
            f"{path}: cannot be read as a PyTorch checkpoint with weights_only=True ({type(exc).__name__}: "
            f"{str(exc).splitlines()[0] if str(exc) else ''}). Is it a file written by `xraylens train`?"
        ) from exc
    if not isinstance(raw, dict):
        raise CheckpointError(f"{path}: expected a checkpoint dictionary, found {type(raw).__name__}")
    if "xraylens" in raw and "state_dict" in raw:  # Lightning checkpoint
        meta_dict = raw["xraylens"]
        state = {k[len(LIGHTNING_PREFIX):]: v for k, v in raw["state_dict"].items() if k.startswith(LIGHTNING_PREFIX)}
    elif raw.get("format") == CHECKPOINT_FORMAT:
        meta_dict, state = raw, raw.get("state_dict", {})
    else:
        raise CheckpointError(
            f"{path}: no xraylens metadata inside (keys: {', '.join(sorted(map(str, raw))[:8])}). "
            "xraylens needs a checkpoint written by `xraylens train` (it records the model and preprocessing)."
        )
    if meta_dict.get("format_version", 1) > CHECKPOINT_FORMAT_VERSION:
        raise CheckpointError(f"{path}: written by a newer xraylens (format {meta_dict['format_version']}); upgrade")
    try:
        meta = CheckpointMeta.from_dict(meta_dict)
    except (KeyError, ValueError, TypeError) as exc:
        raise CheckpointError(f"{path}: xraylens metadata is incomplete or invalid ({exc})") from exc
    cfg = meta.model
    model = create_model(cfg.name, pretrained=False, weights_path=None, in_channels=cfg.in_channels,
                         dropout=cfg.dropout, pooling=cfg.pooling)
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise CheckpointError(f"{path}: weights do not fit a {cfg.name} ({str(exc).splitlines()[0]})") from exc
    model.eval()
    return LoadedModel(model=model, meta=meta, path=path)
