"""The ONNX Runtime side of prediction: sessions, the card an exported file carries, the engine.

Here rather than in :mod:`xraylens.export` because prediction must open an
``.onnx`` without the exporter (and without torch): ``export`` writes the
format these names read, so it imports them from here, never the other way.
An exported file takes the normalised (B, C, S, S) batch as ``image`` and
returns ``logit`` and ``probability``; its :class:`ModelCard` is JSON under
the metadata key ``xraylens``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from xraylens.inference.model_card import ModelCard

METADATA_KEY = "xraylens"
INPUT_NAME, LOGIT_NAME, PROBABILITY_NAME = "image", "logit", "probability"
ONNX_HINT = "pip install 'xraylens[onnx]'"


def default_onnx_path(checkpoint: str | Path) -> Path:
    """``runs/x/best.ckpt`` -> ``runs/x/best.onnx``: where ``xraylens export`` writes by default."""
    return Path(checkpoint).with_suffix(".onnx")


def _onnxruntime() -> Any:
    try:
        import onnxruntime
    except ImportError as exc:
        raise ImportError(f"ONNX Runtime is not installed: {ONNX_HINT}") from exc
    return onnxruntime


def inference_session(path: Path, device: str) -> Any:
    ort = _onnxruntime()
    providers = ["CPUExecutionProvider"]
    if device.startswith("cuda"):
        if "CUDAExecutionProvider" not in ort.get_available_providers():
            raise ValueError(f"device {device!r}: this onnxruntime has no CUDA provider (pip install onnxruntime-gpu)")
        providers.insert(0, "CUDAExecutionProvider")
    try:
        return ort.InferenceSession(str(path), providers=providers)
    except Exception as exc:  # noqa: BLE001 - onnxruntime raises its own exception types
        raise ValueError(f"{path}: cannot be loaded by ONNX Runtime ({exc}); re-export it with xraylens export") from exc


def read_card(session_or_path: Any) -> ModelCard:
    """The :class:`ModelCard` stored by ``export_onnx`` in an ONNX file's metadata."""
    session = (session_or_path if hasattr(session_or_path, "get_modelmeta")
               else inference_session(Path(session_or_path), "cpu"))
    props = session.get_modelmeta().custom_metadata_map
    if METADATA_KEY not in props:
        raise ValueError("ONNX model has no xraylens metadata (was it written by `xraylens export`?); "
                         "xraylens needs it for the preprocessing and threshold")
    return ModelCard.from_dict(json.loads(props[METADATA_KEY]))


class OnnxEngine:
    """An ONNX Runtime session (thread-safe ``run``; no lock needed)."""

    name = "onnx"

    def __init__(self, path: str | Path, device: str = "cpu") -> None:
        self.path = Path(path)
        self.session = inference_session(self.path, device)

    def logits(self, batch: np.ndarray) -> np.ndarray:
        (logit,) = self.session.run([LOGIT_NAME], {INPUT_NAME: np.ascontiguousarray(batch, dtype=np.float32)})
        return logit.reshape(-1).astype(np.float64)

    def cams(self, batch: np.ndarray, *, method: str, target: str, layer: str | None = None) -> np.ndarray:
        raise NotImplementedError("ONNX Runtime computes no gradients; heatmaps come from the torch engine")
