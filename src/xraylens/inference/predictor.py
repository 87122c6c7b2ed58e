"""One path from a file to a verdict (and, on request, a heatmap, boxes and a sentence).

The CLI (`xraylens predict`), the web server and the ONNX parity check all go
through :class:`Predictor`, so a radiograph gets the same probability whichever
door it came in by. The pipeline is numpy up to the network input (read ->
letterbox -> normalise, from :mod:`xraylens.data.preprocess`); an engine
(:mod:`xraylens.inference.engines`) turns the batch into logits.

Calibration and the decision rule come from the checkpoint (temperature,
threshold), never from today's command line. A study's probability is the
mean of its views' probabilities, as in the MURA paper; a folder of views is
one study.

:class:`OnnxPredictor` lives here, beside the class it extends, because
``Predictor.from_checkpoint`` hands ``engine="onnx"`` to it. ONNX models are
opened only when named by the caller, never found beside a checkpoint.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from xraylens.data.images import DEFAULT_MAX_PIXELS, ImageReadError, read_image
from xraylens.data.preprocess import Letterbox, letterbox, normalize
from xraylens.inference.engines import Engine, LazyTorchCams, TorchEngine
from xraylens.inference.model_card import ModelCard
from xraylens.inference.onnx_runtime import OnnxEngine, default_onnx_path, read_card
from xraylens.inference.results import (
    Failure,
    ImagePrediction,
    Predictions,
    StudyPrediction,
    body_part_of,
    study_of,
)

# auto: the torch checkpoint, its logits run by ONNX Runtime for large CPU jobs (TorchEngine.prepare)
ENGINES = ("auto", "torch", "onnx")


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
                        method: str | None = None, max_pixels: int = DEFAULT_MAX_PIXELS,
                        onnx: str | Path | None = None) -> Predictor:
        """``engine`` None picks ``onnx`` for a ``.onnx`` file or when ``onnx`` is given, ``auto`` otherwise.

        ``auto`` is the torch checkpoint whose logits, for a job of at least
        :data:`xraylens.onnx_cpu.AUTO_MIN_IMAGES` images on a CPU, ONNX Runtime
        computes from an in-memory export (``torch`` never does that).

        An ONNX model is opened only when the caller names it: ``path`` itself,
        or ``onnx`` together with a ``.ckpt`` (which then gives the heatmaps:
        ONNX Runtime has no gradients). A ``.onnx`` that merely lies next to a
        checkpoint is never picked up by itself: a file nobody asked for, which
        may have come from anywhere, is not fed to a parser.
        """
        path = Path(path)
        engine = engine or ("onnx" if path.suffix == ".onnx" or onnx is not None else "auto")
        if engine not in ENGINES:
            raise ValueError(f"engine must be one of {', '.join(ENGINES)}, got {engine!r}")
        if engine == "onnx":
            if path.suffix == ".onnx":
                if onnx is not None:
                    raise ValueError(f"{path} is already the ONNX model; pass the .ckpt with --onnx {onnx}")
                return OnnxPredictor.open(path, device=device, method=method, max_pixels=max_pixels)
            if onnx is None:
                raise ValueError(
                    f"--engine onnx with the checkpoint {path}: name the ONNX model to run, e.g. --onnx "
                    f"{default_onnx_path(path)} (written by `xraylens export {path}`), or pass the .onnx file "
                    "instead of the checkpoint; xraylens never opens a .onnx it was not given")
            return OnnxPredictor.open(onnx, checkpoint=path, device=device, method=method, max_pixels=max_pixels)
        if onnx is not None:
            raise ValueError(f"--onnx {onnx} needs the onnx engine; drop --engine {engine}")
        if path.suffix == ".onnx":
            raise ValueError(f"{path} is an ONNX model; use engine='onnx' (--engine onnx) or pass the .ckpt")
        from xraylens.models import load_checkpoint

        loaded = load_checkpoint(path)
        card = ModelCard.from_meta(loaded.meta)
        return cls(TorchEngine(loaded.model, card.architecture, device, onnx_runtime=engine == "auto"), card,
                   method=method, max_pixels=max_pixels, source=path)

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
        prepare = getattr(self.engine, "prepare", None)
        if callable(prepare) and paths:
            prep = self.card.preprocessing
            prepare(len(paths), (prep.in_channels, prep.size, prep.size))
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

    def predict_index(self, table: Any, *, batch_size: int = 16, explain: bool = False,
                      progress: bool = True) -> Predictions:
        """Rows of a dataset index (``path``, ``file``, ``study_id``, ``body_part``; any format).

        A FracAtlas folder holds thousands of one-image studies and a GRAZPEDWRI-DX
        part folder mixes patients, so studies and body parts come from the
        index, not from folders; sources are the index's relative paths.
        """
        import dataclasses

        rows = {str(r.file): (str(r.path), str(r.study_id), str(r.body_part)) for r in table.itertuples(index=False)}
        result = self.predict_many(list(rows), batch_size=batch_size, explain=explain, progress=progress)
        images = [dataclasses.replace(p, source=rows[p.source][0], study=rows[p.source][1], body_part=rows[p.source][2])
                  for p in result.images]
        failures = [Failure(rows.get(f.path, (f.path,))[0], f.reason) for f in result.failures]
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
                           max_boxes=cfg.max_boxes, join_fraction=cfg.box_join_fraction)
        sentence = describe(float(probability), self.card.threshold, boxes, crop,
                            body_part=body_part_of(source), method=self.method)
        mapped = tuple(
            b.mapped(g.box_to_original((b.x0 + g.left, b.y0 + g.top, b.x1 + g.left, b.y1 + g.top)),
                     g.orig_w, g.orig_h)
            for b in boxes
        )
        full = np.clip(g.to_original(heatmap), 0.0, 1.0) if keep_heatmap else None
        return {"boxes": mapped, "explanation": sentence, "heatmap": full}


class OnnxPredictor(Predictor):
    """A :class:`Predictor` whose probabilities come from ONNX Runtime (no torch needed for them)."""

    @classmethod
    def open(cls, path: str | Path, *, checkpoint: str | Path | None = None, device: str = "cpu",
             method: str | None = None, max_pixels: int = DEFAULT_MAX_PIXELS) -> OnnxPredictor:
        """The ONNX model ``path``; with ``checkpoint`` (its torch original) heatmaps work too."""
        path = Path(path)
        if path.suffix != ".onnx":
            raise ValueError(f"{path}: expected an ONNX model file (.onnx), written by `xraylens export`")
        if not path.is_file():
            hint = f"; run `xraylens export {checkpoint}` first (it writes {path})" if checkpoint else ""
            raise FileNotFoundError(f"ONNX model {path} does not exist{hint}")
        checkpoint = Path(checkpoint) if checkpoint is not None else None
        if checkpoint is not None and not checkpoint.is_file():
            raise FileNotFoundError(f"checkpoint {checkpoint} does not exist")
        engine = OnnxEngine(path, device)
        card = read_card(engine.session)
        cam_engine = LazyTorchCams(checkpoint, card, device) if checkpoint is not None else None
        return cls(engine, card, method=method, max_pixels=max_pixels, cam_engine=cam_engine, source=path)
