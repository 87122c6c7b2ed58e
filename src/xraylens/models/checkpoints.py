"""Checkpoints that describe themselves: weights plus everything needed to rebuild the model and its inputs.

A checkpoint carries the model config, preprocessing, class names and
versions, so evaluation, explanation, inference and export never depend on
today's command line. Loading always uses ``torch.load(weights_only=True)``:
a checkpoint never runs code.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from xraylens._version import __version__
from xraylens.config import CLASS_NAMES, ModelConfig, from_dict, to_dict
from xraylens.data.preprocess import Preprocessing
from xraylens.models.factory import create_model
from xraylens.models.weights import unreadable_file_message

CHECKPOINT_FORMAT = "xraylens.checkpoint"
CHECKPOINT_FORMAT_VERSION = 1


class CheckpointError(ValueError):
    """A file that is not a usable xraylens checkpoint; the message names the file and the fix."""


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


def read_checkpoint_file(path: str | Path, *, mmap: bool = False) -> Any:
    """``torch.load(weights_only=True)`` of ``path``, with every failure a :class:`CheckpointError` naming it.

    weights_only admits tensors and plain containers only: a file that carries
    any other Python object (a pickle payload: code that would run on load) is
    refused before anything in it runs. The message says which object it was,
    and never suggests loading the file unsafely.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    try:
        return torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except Exception as exc:  # noqa: BLE001 - unpickling errors come in many types
        raise CheckpointError(unreadable_file_message(path, exc)) from exc


def load_checkpoint(path: str | Path) -> LoadedModel:
    """Rebuild a model from a slim or a Lightning checkpoint written by xraylens; weights only, no pickle."""
    path = Path(path)
    raw = read_checkpoint_file(path)
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
    # channels_last: evaluation, CAMs and prediction run 1.5-2x faster on CPUs (oneDNN) and on GPUs with
    # AMP, whatever the layout of the input batch (benchmarks/bench_explain.py, bench_inference.py)
    model.eval().to(memory_format=torch.channels_last)
    return LoadedModel(model=model, meta=meta, path=path)
