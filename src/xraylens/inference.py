"""One path from a file to a verdict (and, on request, a heatmap, boxes and a sentence).

The CLI (`xraylens predict`), the web server and the ONNX parity check all go
through :class:`Predictor`, so a radiograph gets the same probability whichever
door it came in by. The pipeline is numpy up to the network input (read ->
letterbox -> normalise, from :mod:`xraylens.data.preprocess`); an *engine*
turns a (B, C, S, S) float32 batch into logits: :class:`TorchEngine` here,
``OnnxEngine`` in :mod:`xraylens.export` (which runs without torch).

Calibration and the decision rule come from the checkpoint (temperature,
threshold), never from today's command line. A study's probability is the
mean of its views' probabilities, as in the MURA paper; a folder of views is
one study.

Thread safety: a Predictor is built once and shared by server requests. The
torch model is used under one lock: CAM methods register hooks on the model
and freeze its parameters, so an unlocked forward pass in another thread would
feed its activations into someone else's heatmap. On a CPU, torch already uses
every core inside one forward pass, so serialising costs little.
"""

from __future__ import annotations

import glob
import json
import logging
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from xraylens.config import CLASS_NAMES, ExplainConfig, from_dict
from xraylens.data.images import DEFAULT_MAX_PIXELS, ImageReadError, read_image, sniff_kind
from xraylens.data.preprocess import Letterbox, Preprocessing, letterbox, normalize

if TYPE_CHECKING:
    from xraylens.explain.regions import Box

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".dcm", ".dicom")
ENGINES = ("torch", "onnx")


# ---------------------------------------------------------------- what a model is, without torch


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

    @classmethod
    def from_meta(cls, meta: Any) -> ModelCard:
        """From a ``models.CheckpointMeta`` (its training config may carry the explain settings)."""
        explain = meta.experiment.get("explain") if isinstance(meta.experiment, dict) else None
        return cls(meta.model.name, meta.preprocessing, tuple(meta.class_names), float(meta.threshold),
                   float(meta.temperature), meta.xraylens_version, dict(meta.summary), _explain_config(explain))

    def to_dict(self) -> dict[str, Any]:
        from xraylens.config import to_dict

        return {"architecture": self.architecture, "preprocessing": self.preprocessing.to_dict(),
                "class_names": list(self.class_names), "threshold": self.threshold,
                "temperature": self.temperature, "xraylens_version": self.xraylens_version,
                "summary": self.summary, "explain": to_dict(self.explain)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelCard:
        return cls(str(data["architecture"]), Preprocessing.from_dict(data["preprocessing"]),
                   tuple(data.get("class_names", CLASS_NAMES)), float(data.get("threshold", 0.5)),
                   float(data.get("temperature", 1.0)), str(data.get("xraylens_version", "unknown")),
                   dict(data.get("summary", {})), _explain_config(data.get("explain")))


def _explain_config(data: Any) -> ExplainConfig:
    if not isinstance(data, dict):
        return ExplainConfig()
    try:
        return from_dict(ExplainConfig, data, "explain")
    except ValueError:  # written by another version: the defaults are a safe way to draw boxes
        log.warning("explain settings in the model are not understood by this version; using defaults")
        return ExplainConfig()


# ---------------------------------------------------------------- results


@dataclass(frozen=True)
class ImagePrediction:
    """One radiograph's result; boxes and the heatmap are in original pixel coordinates."""

    source: str  # file path, or "<array>"
    probability: float  # calibrated P(abnormal)
    verdict: str  # a class name: "abnormal" when probability >= threshold
    threshold: float
    width: int
    height: int
    study: str | None = None  # the folder holding the view
    body_part: str | None = None  # "XR_WRIST" when the path says so
    boxes: tuple[Box, ...] = ()
    explanation: str | None = None
    heatmap: np.ndarray | None = field(default=None, repr=False)  # (height, width) float32 in [0, 1]

    @property
    def size(self) -> tuple[int, int]:
        return self.width, self.height

    def to_dict(self) -> dict[str, Any]:
        return {"path": self.source, "study": self.study, "body_part": self.body_part,
                "probability": round(self.probability, 6), "verdict": self.verdict, "threshold": self.threshold,
                "width": self.width, "height": self.height, "boxes": [b.to_dict() for b in self.boxes],
                "explanation": self.explanation}


@dataclass(frozen=True)
class StudyPrediction:
    study: str
    probability: float  # mean of the views' probabilities
    verdict: str
    n_images: int
    body_part: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"study": self.study, "body_part": self.body_part, "probability": round(self.probability, 6),
                "verdict": self.verdict, "n_images": self.n_images}


@dataclass(frozen=True)
class Failure:
    path: str
    reason: str


@dataclass
class Predictions:
    images: list[ImagePrediction]
    studies: list[StudyPrediction]
    failures: list[Failure]

    def to_dict(self) -> dict[str, Any]:
        return {"images": [p.to_dict() for p in self.images], "studies": [s.to_dict() for s in self.studies],
                "failures": [{"path": f.path, "reason": f.reason} for f in self.failures]}


# ---------------------------------------------------------------- engines


class Engine(Protocol):
    name: str

    def logits(self, batch: np.ndarray) -> np.ndarray:
        """(B, C, S, S) float32 normalised -> (B,) float64 logits."""

    def cams(self, batch: np.ndarray, *, method: str, target: str, layer: str | None = None) -> np.ndarray:
        """(B, C, S, S) -> (B, S, S) float32 heatmaps in [0, 1]; ``layer`` None = the architecture's default."""


class TorchEngine:
    """A checkpoint's network in eval mode, loaded once; every use is under one lock (see module doc)."""

    name = "torch"

    def __init__(self, model: Any, architecture: str, device: str = "cpu") -> None:
        self.model = model.to(device).eval()
        self.architecture = architecture
        self.device = device
        self._lock = threading.Lock()

    def logits(self, batch: np.ndarray) -> np.ndarray:
        import torch

        with self._lock, torch.inference_mode():
            out = self.model(torch.from_numpy(np.ascontiguousarray(batch)).to(self.device))
        return out.reshape(-1).double().cpu().numpy()

    def cams(self, batch: np.ndarray, *, method: str, target: str, layer: str | None = None) -> np.ndarray:
        import torch

        from xraylens.explain.cams import compute_cams

        with self._lock:
            return compute_cams(self.model, self.architecture, torch.from_numpy(np.ascontiguousarray(batch)),
                                method=method, target=target, layer=layer)


# ---------------------------------------------------------------- the predictor


class Predictor:
    """File or array -> :class:`ImagePrediction`; build it once (``from_checkpoint``) and share it."""

    def __init__(self, engine: Engine, card: ModelCard, *, method: str | None = None,
                 max_pixels: int = DEFAULT_MAX_PIXELS, cam_engine: Engine | None = None,
                 source: str | Path | None = None) -> None:
        self.engine = engine
        self.card = card
        self.method = method or card.explain.method
        self.max_pixels = max_pixels
        self.source = str(source) if source is not None else None
        self._cam_engine = cam_engine if cam_engine is not None else (engine if engine.name == "torch" else None)

    @classmethod
    def from_checkpoint(cls, path: str | Path, *, engine: str | None = None, device: str = "cpu",
                        method: str | None = None, max_pixels: int = DEFAULT_MAX_PIXELS) -> Predictor:
        """``engine`` None picks ``onnx`` for a ``.onnx`` file, ``torch`` otherwise.

        With ``engine="onnx"`` and a ``.ckpt``, the ``.onnx`` written next to it by
        ``xraylens export`` is used, and the checkpoint is kept for heatmaps (ONNX
        Runtime has no gradients, so CAMs always come from torch).
        """
        path = Path(path)
        engine = engine or ("onnx" if path.suffix == ".onnx" else "torch")
        if engine not in ENGINES:
            raise ValueError(f"engine must be one of {', '.join(ENGINES)}, got {engine!r}")
        if engine == "onnx":
            from xraylens.export import OnnxPredictor

            return OnnxPredictor.open(path, device=device, method=method, max_pixels=max_pixels)
        if path.suffix == ".onnx":
            raise ValueError(f"{path} is an ONNX model; use engine='onnx' (--engine onnx) or pass the .ckpt")
        from xraylens.models import load_checkpoint

        loaded = load_checkpoint(path)
        card = ModelCard.from_meta(loaded.meta)
        return cls(TorchEngine(loaded.model, card.architecture, device), card, method=method,
                   max_pixels=max_pixels, source=path)

    # ------------------------------------------------------------ facts

    @property
    def threshold(self) -> float:
        return self.card.threshold

    @property
    def can_explain(self) -> bool:
        return self._cam_engine is not None

    def info(self) -> dict[str, Any]:
        """What `GET /api/model` and reports show."""
        prep = self.card.preprocessing
        return {"architecture": self.card.architecture, "input_size": prep.size, "in_channels": prep.in_channels,
                "class_names": list(self.card.class_names), "threshold": self.card.threshold,
                "temperature": self.card.temperature, "xraylens_version": self.card.xraylens_version,
                "engine": self.engine.name, "cam_method": self.method if self.can_explain else None,
                "summary": self.card.summary}

    # ------------------------------------------------------------ prediction

    def read(self, path: str | Path) -> np.ndarray:
        return read_image(path, max_pixels=self.max_pixels)

    def predict_image(self, image: str | Path | np.ndarray, *, explain: bool = False) -> ImagePrediction:
        """One radiograph (a path, or a 2-D array in [0, 1]); ``explain`` adds heatmap, boxes and sentence."""
        if isinstance(image, np.ndarray):
            array, source = image, "<array>"
        else:
            array, source = self.read(image), str(image)
        return self.predict_arrays([array], [source], explain=explain, keep_heatmaps=True)[0]

    def predict_arrays(self, images: Sequence[np.ndarray], sources: Sequence[str] | None = None, *,
                       explain: bool = False, keep_heatmaps: bool = False) -> list[ImagePrediction]:
        """A batch of decoded images -> predictions (one network call, one CAM call)."""
        if explain and not self.can_explain:
            raise ValueError(
                "heatmaps need the torch checkpoint (ONNX Runtime computes no gradients); predict with "
                "--engine torch, or keep the .ckpt next to the .onnx and pass the .ckpt with --engine onnx"
            )
        sources = list(sources) if sources is not None else ["<array>"] * len(images)
        if not images:
            return []
        prep = self.card.preprocessing
        geometries: list[Letterbox] = []
        inputs = []
        for image in images:
            if image.ndim != 2:
                raise ValueError(f"expected a 2-D grayscale image in [0, 1], got shape {image.shape}")
            square, geometry = letterbox(image.astype(np.float32, copy=False), prep.size)
            geometries.append(geometry)
            inputs.append(normalize(square, prep))
        batch = np.stack(inputs).astype(np.float32, copy=False)  # (B, C, S, S)
        probabilities = self.probabilities_from_logits(self.engine.logits(batch))
        heatmaps = self._cams(batch) if explain else None
        results = []
        for i, (geometry, source) in enumerate(zip(geometries, sources, strict=True)):
            extra = self._explain_one(probabilities[i], heatmaps[i], geometry, source, keep_heatmaps) \
                if heatmaps is not None else {}
            results.append(ImagePrediction(
                source=source, probability=float(probabilities[i]), verdict=self.verdict(probabilities[i]),
                threshold=self.card.threshold, width=geometry.orig_w, height=geometry.orig_h,
                study=study_of(source), body_part=body_part_of(source), **extra))
        return results

    def predict_many(self, paths: Iterable[str | Path], *, batch_size: int = 16, explain: bool = False,
                     progress: bool = True, keep_heatmaps: bool = False) -> Predictions:
        """Many files: unreadable ones become :class:`Failure` rows, the rest are predicted in batches."""
        from tqdm.auto import tqdm

        paths = [str(p) for p in paths]
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        images: list[ImagePrediction] = []
        failures: list[Failure] = []
        with tqdm(total=len(paths), desc="predict", unit="img", disable=not progress) as bar:
            for start in range(0, len(paths), batch_size):
                arrays, sources = [], []
                for path in paths[start : start + batch_size]:
                    try:
                        arrays.append(self.read(path))
                        sources.append(path)
                    except (ImageReadError, ValueError, OSError) as exc:
                        failures.append(Failure(path, str(exc).removeprefix(f"{path}: ")))
                images += self.predict_arrays(arrays, sources, explain=explain, keep_heatmaps=keep_heatmaps)
                bar.update(len(paths[start : start + batch_size]))
        return Predictions(images, self.studies(images), failures)

    def studies(self, images: Sequence[ImagePrediction]) -> list[StudyPrediction]:
        """Group views by folder; a study's probability is the mean of its views' (MURA paper)."""
        groups: dict[str, list[ImagePrediction]] = {}
        for prediction in images:
            if prediction.study is not None:
                groups.setdefault(prediction.study, []).append(prediction)
        out = []
        for study, views in groups.items():
            probability = float(np.mean([v.probability for v in views]))
            out.append(StudyPrediction(study, probability, self.verdict(probability), len(views), views[0].body_part))
        return out

    def probabilities_from_logits(self, logits: np.ndarray) -> np.ndarray:
        z = np.asarray(logits, dtype=np.float64) / self.card.temperature
        return 1.0 / (1.0 + np.exp(-z))

    def verdict(self, probability: float) -> str:
        names = self.card.class_names
        return names[-1] if probability >= self.card.threshold else names[0]

    # ------------------------------------------------------------ explanations

    def _cams(self, batch: np.ndarray) -> np.ndarray:
        assert self._cam_engine is not None
        return self._cam_engine.cams(batch, method=self.method, target=self.card.explain.target,
                                     layer=self.card.explain.layer)

    def _explain_one(self, probability: float, heatmap: np.ndarray, geometry: Letterbox, source: str,
                     keep_heatmap: bool) -> dict[str, Any]:
        """Boxes are found on the heatmap cropped to the image (the pad is not part of it), then mapped back."""
        from xraylens.explain.regions import describe, find_boxes

        cfg = self.card.explain
        g = geometry
        crop = heatmap[g.top : g.top + g.new_h, g.left : g.left + g.new_w]  # (new_h, new_w)
        boxes = find_boxes(crop, mode=cfg.threshold_mode, threshold=cfg.threshold,
                           min_area_fraction=cfg.min_box_area_fraction, nms_iou=cfg.nms_iou,
                           max_boxes=cfg.max_boxes)
        sentence = describe(float(probability), self.card.threshold, boxes, crop,
                            body_part=body_part_of(source), method=self.method)
        mapped = tuple(
            b.mapped(g.box_to_original((b.x0 + g.left, b.y0 + g.top, b.x1 + g.left, b.y1 + g.top)),
                     g.orig_w, g.orig_h)
            for b in boxes
        )
        full = np.clip(g.to_original(heatmap), 0.0, 1.0) if keep_heatmap else None
        return {"boxes": mapped, "explanation": sentence, "heatmap": full}


# ---------------------------------------------------------------- inputs and outputs


def study_of(source: str) -> str | None:
    return None if source.startswith("<") else str(Path(source).parent)


def body_part_of(source: str) -> str | None:
    """MURA paths name the body part (``.../XR_WRIST/patient.../study1_positive/image1.png``)."""
    return next((part.upper() for part in Path(source).parts if part.upper().startswith("XR_")), None)


def collect_inputs(inputs: Sequence[str | Path]) -> tuple[list[str], list[Failure]]:
    """Files, folders (walked recursively for image files) and globs -> sorted unique paths.

    In folders, image files are .png/.jpg/.jpeg/.dcm/.dicom, or extension-less DICOM. Hidden files (macOS ``._image1.png`` resource forks, common in MURA copies)
    are skipped in folders. An input that matches nothing is a failure row.
    """
    found: list[str] = []
    failures: list[Failure] = []
    for item in map(str, inputs):
        path = Path(item)
        if path.is_dir():
            files = sorted(str(p) for p in path.rglob("*")
                           if p.is_file() and not any(part.startswith(".") for part in p.relative_to(path).parts)
                           and _looks_like_image(p))
            if not files:
                failures.append(Failure(item, f"folder has no image files ({', '.join(IMAGE_SUFFIXES)})"))
            found += files
        elif path.exists():
            found.append(item)
        elif glob.has_magic(item):
            matches = sorted(p for p in glob.glob(item, recursive=True) if Path(p).is_file())
            if not matches:
                failures.append(Failure(item, "pattern matches no files"))
            found += matches
        else:
            failures.append(Failure(item, "no such file or folder"))
    return list(dict.fromkeys(found)), failures


def _looks_like_image(path: Path) -> bool:
    """By extension; files without one are taken when they are DICOM (PACS exports often have no suffix)."""
    if path.suffix.lower() in IMAGE_SUFFIXES:
        return True
    if path.suffix:
        return False
    try:
        return sniff_kind(path) == "dicom"
    except ImageReadError:
        return False


def write_predictions(predictions: Predictions, path: str | Path) -> Path:
    """``.json`` (images, studies, failures) or ``.csv`` (one row per image and per study), atomically."""
    from xraylens.atomic import atomic_write_json, atomic_write_text

    path = Path(path)
    if path.suffix.lower() == ".json":
        return atomic_write_json(path, predictions.to_dict())
    if path.suffix.lower() != ".csv":
        raise ValueError(f"--out must end in .csv or .json, got {path.name}")
    import csv
    import io

    buffer = io.StringIO()
    columns = ["level", "path", "study", "body_part", "probability", "verdict", "n_images", "width", "height",
               "boxes", "explanation", "error"]
    writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    for p in predictions.images:
        writer.writerow({"level": "image", "path": p.source, "study": p.study, "body_part": p.body_part,
                         "probability": f"{p.probability:.6f}", "verdict": p.verdict, "n_images": 1,
                         "width": p.width, "height": p.height,
                         "boxes": json.dumps([b.to_dict() for b in p.boxes]) if p.explanation else "",
                         "explanation": p.explanation or ""})
    for s in predictions.studies:
        writer.writerow({"level": "study", "path": s.study, "study": s.study, "body_part": s.body_part,
                         "probability": f"{s.probability:.6f}", "verdict": s.verdict, "n_images": s.n_images})
    for f in predictions.failures:
        writer.writerow({"level": "failed", "path": f.path, "error": f.reason})
    return atomic_write_text(path, buffer.getvalue())
