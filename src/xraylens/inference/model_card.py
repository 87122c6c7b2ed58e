"""What a predictor must know about its network, without torch.

The card travels in checkpoints (built from their metadata) and in ONNX files
(as JSON metadata), so both engines rebuild the same preprocessing, threshold,
temperature and explanation settings from the model itself, never from
today's command line.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

from xraylens.config import CLASS_NAMES, ExplainConfig, from_dict
from xraylens.data.preprocess import Preprocessing

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ModelCard:
    """What a predictor needs to know about its network: travels in checkpoints and ONNX metadata."""

    architecture: str
    preprocessing: Preprocessing
    class_names: tuple[str, ...] = CLASS_NAMES
    threshold: float = 0.5
    temperature: float = 1.0
    xraylens_version: str = "unknown"
    summary: dict[str, Any] = field(default_factory=dict)
    explain: ExplainConfig = field(default_factory=ExplainConfig)
    # the training run's data settings (format, test split of the box datasets): `predict --data` rebuilds
    # the same split from them; plain JSON types
    data: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_meta(cls, meta: Any) -> ModelCard:
        """From a ``models.CheckpointMeta`` (its training config may carry the explain settings)."""
        experiment = meta.experiment if isinstance(meta.experiment, dict) else {}
        return cls(meta.model.name, meta.preprocessing, tuple(meta.class_names), float(meta.threshold),
                   float(meta.temperature), meta.xraylens_version, dict(meta.summary),
                   _explain_config(experiment.get("explain")), _data_settings(experiment.get("data")))

    def to_dict(self) -> dict[str, Any]:
        from xraylens.config import to_dict

        return {"architecture": self.architecture, "preprocessing": self.preprocessing.to_dict(),
                "class_names": list(self.class_names), "threshold": self.threshold,
                "temperature": self.temperature, "xraylens_version": self.xraylens_version,
                "summary": self.summary, "explain": to_dict(self.explain), "data": self.data}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelCard:
        return cls(str(data["architecture"]), Preprocessing.from_dict(data["preprocessing"]),
                   tuple(data.get("class_names", CLASS_NAMES)), float(data.get("threshold", 0.5)),
                   float(data.get("temperature", 1.0)), str(data.get("xraylens_version", "unknown")),
                   dict(data.get("summary", {})), _explain_config(data.get("explain")),
                   _data_settings(data.get("data")))


def _data_settings(data: Any) -> dict[str, Any]:
    """The data settings that decide a dataset's splits (not paths or loader details)."""
    keys = ("format", "test_fraction", "test_seed", "official_split", "label")
    return {k: data[k] for k in keys if k in data} if isinstance(data, dict) else {}


def _explain_config(data: Any) -> ExplainConfig:
    if not isinstance(data, dict):
        return ExplainConfig()
    try:
        return from_dict(ExplainConfig, data, "explain")
    except ValueError:  # written by another version: the defaults are a safe way to draw boxes
        log.warning("explain settings in the model are not understood by this version; using defaults")
        return ExplainConfig()
