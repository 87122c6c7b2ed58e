"""Engines: what turns a normalised (B, C, S, S) float32 batch into logits (and, for torch, heatmaps).

A :class:`~xraylens.inference.predictor.Predictor` holds an engine rather than
a network, so the same preprocessing and decision rule serve torch and ONNX
Runtime (:class:`~xraylens.inference.onnx_runtime.OnnxEngine`, which runs
without torch).

Thread safety: a Predictor is built once and shared by server requests. The
torch model is used under one lock: CAM methods register hooks on the model
and freeze its parameters, so an unlocked forward pass in another thread would
feed its activations into someone else's heatmap. On a CPU, torch already uses
every core inside one forward pass, so serialising costs little.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

if TYPE_CHECKING:
    from xraylens.inference.model_card import ModelCard

log = logging.getLogger(__name__)


class Engine(Protocol):
    name: str

    def logits(self, batch: np.ndarray) -> np.ndarray:
        """(B, C, S, S) float32 normalised -> (B,) float64 logits."""

    def cams(self, batch: np.ndarray, *, method: str, target: str, layer: str | None = None) -> np.ndarray:
        """(B, C, S, S) -> (B, S, S) float32 heatmaps in [0, 1]; ``layer`` None = the architecture's default."""


class TorchEngine:
    """A checkpoint's network in eval mode, loaded once; every use is under one lock (see module doc)."""

    name = "torch"

    def __init__(self, model: Any, architecture: str, device: str = "cpu", *, onnx_runtime: bool = False) -> None:
        self.model = model.to(device).eval()
        self.architecture = architecture
        self.device = device
        self.onnx_runtime = onnx_runtime
        self._lock = threading.Lock()
        self._fast: Any = None  # the logits in ONNX Runtime once :meth:`prepare` built them; False: it could not

    def prepare(self, images: int, shape: tuple[int, ...]) -> str:
        """Before a job of ``images`` inputs of ``shape``: what will compute the logits, ``torch`` or ``onnxruntime``.

        Why: with ``onnx_runtime`` set, a CPU job large enough to pay for the
        ~15 s export (:func:`xraylens.onnx_cpu.resolve_engine`) runs the logits
        in ONNX Runtime, 3-5x faster than PyTorch for the EfficientNet models,
        parity-checked, falling back to PyTorch with the reason logged
        (:func:`xraylens.onnx_cpu.runner`). Heatmaps always come from the torch
        model: they need its gradients.
        """
        from xraylens.onnx_cpu import resolve_engine, runner

        with self._lock:
            if self._fast is None and self.onnx_runtime and \
                    resolve_engine("auto", "32", self.device, images=images) == "onnxruntime":
                run, engine = runner(self.model, tuple(shape), "onnxruntime", desc=self.architecture)
                self._fast = run if engine == "onnxruntime" else False
            return "onnxruntime" if self._fast else "torch"

    def logits(self, batch: np.ndarray) -> np.ndarray:
        import torch

        with self._lock, torch.inference_mode():
            x = torch.from_numpy(np.ascontiguousarray(batch))
            out = self._fast(x) if self._fast else self.model(x.to(self.device))
        return out.reshape(-1).double().cpu().numpy()

    def cams(self, batch: np.ndarray, *, method: str, target: str, layer: str | None = None) -> np.ndarray:
        import torch

        from xraylens.explain.cams import compute_cams

        with self._lock:
            return compute_cams(self.model, self.architecture, torch.from_numpy(np.ascontiguousarray(batch)),
                                method=method, target=target, layer=layer)


class LazyTorchCams:
    """Loads the checkpoint (and torch) on the first heatmap request only."""

    name = "torch"

    def __init__(self, checkpoint: Path, card: ModelCard, device: str) -> None:
        self.checkpoint, self.card, self.device = checkpoint, card, device
        self._engine: Any = None
        self._lock = threading.Lock()

    def _load(self) -> Any:
        with self._lock:
            if self._engine is None:
                from xraylens.models import load_checkpoint

                log.info("heatmaps come from the torch checkpoint %s (ONNX Runtime has no gradients)",
                         self.checkpoint)
                loaded = load_checkpoint(self.checkpoint)
                if loaded.meta.model.name != self.card.architecture:
                    raise ValueError(f"{self.checkpoint} is a {loaded.meta.model.name}, but the ONNX model next "
                                     f"to it is a {self.card.architecture}; re-export it")
                self._engine = TorchEngine(loaded.model, self.card.architecture, self.device)
            return self._engine

    def logits(self, batch: np.ndarray) -> np.ndarray:
        return self._load().logits(batch)

    def cams(self, batch: np.ndarray, *, method: str, target: str, layer: str | None = None) -> np.ndarray:
        return self._load().cams(batch, method=method, target=target, layer=layer)
