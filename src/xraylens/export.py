"""ONNX export with a parity check: one self-describing ``.onnx`` file per checkpoint.

The exported graph takes the normalised (B, C, S, S) float32 batch (B is
dynamic) and returns two (B, 1) outputs: ``logit`` and the calibrated
``probability`` = sigmoid(logit / temperature). Everything else a consumer
needs (preprocessing, class names, threshold, temperature, architecture,
xraylens version, training summary) is stored as JSON in the model's
``metadata_props`` (key ``xraylens``; the main fields also under their own
keys, so Netron and ``onnx.load`` show them).

One file: weights are embedded (``external_data=False``). Our largest network
(DenseNet-169) is ~50 MB, far below protobuf's 2 GB limit, and a single file
cannot lose its ``.onnx.data`` sibling on the way to a deployment machine.

Runtime: the file is read back by :mod:`xraylens.inference.onnx_runtime` and
:class:`~xraylens.inference.predictor.OnnxPredictor`, which need onnxruntime,
numpy, OpenCV and Pillow but not torch; torch is imported only for heatmaps
(ONNX Runtime has no gradients), which come from the checkpoint kept next to
the ``.onnx``. They live on the prediction side so that prediction never
imports the exporter; their names are still importable from here.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from xraylens.data.preprocess import letterbox, normalize
from xraylens.inference.model_card import ModelCard
from xraylens.inference.onnx_runtime import (
    INPUT_NAME,
    LOGIT_NAME,
    METADATA_KEY,
    ONNX_HINT,
    PROBABILITY_NAME,
    OnnxEngine,
    default_onnx_path,
    inference_session,
    read_card,
)
from xraylens.inference.predictor import OnnxPredictor

__all__ = [
    "INPUT_NAME", "LOGIT_NAME", "METADATA_KEY", "PROBABILITY_NAME", "ExportResult", "OnnxEngine", "OnnxPredictor",
    "default_onnx_path", "export_onnx", "parity_inputs", "read_card", "synthetic_radiograph",
]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ExportResult:
    path: Path
    max_abs_diff: float  # on the probability output, over every parity input
    max_abs_diff_logit: float
    n_checked: int  # images compared between torch and ONNX Runtime (0 = check skipped)
    tolerance: float

    @property
    def passed(self) -> bool:
        return self.n_checked == 0 or self.max_abs_diff <= self.tolerance


# ---------------------------------------------------------------- export


def export_onnx(checkpoint: str | Path, out_path: str | Path | None = None, *, opset: int | None = None,
                check: bool = True, tolerance: float = 1e-4, images: Sequence[str | Path] = (),
                seed: int = 0, overwrite: bool = False) -> ExportResult:
    """Export a checkpoint to one ``.onnx`` file and compare ONNX Runtime with torch.

    Parity inputs: random normalised tensors, synthetic radiograph-like images
    through the real preprocessing, and ``images`` (files) if given. The file is
    kept even when the check fails (``result.passed`` is False), so it can be
    inspected; ``xraylens export`` exits non-zero then. An existing file at the
    destination is refused (:class:`~xraylens.output_dir.OutputExistsError`)
    unless ``overwrite``.
    """
    import torch

    from xraylens.atomic import atomic_path
    from xraylens.models import load_checkpoint
    from xraylens.onnx_cpu import dynamo_export
    from xraylens.output_dir import claim_output_file

    try:
        import onnxscript  # noqa: F401 - the dynamo exporter needs it; fail early with the extra named
    except ImportError as exc:
        raise ImportError(f"ONNX export needs onnx and onnxscript: {ONNX_HINT}") from exc

    loaded = load_checkpoint(checkpoint)
    card = ModelCard.from_meta(loaded.meta)
    prep = card.preprocessing
    out = claim_output_file(out_path if out_path is not None else default_onnx_path(checkpoint),
                            overwrite=overwrite, what="ONNX export")
    wrapped = _exported_module(loaded.model, card.temperature).eval()
    example = torch.zeros(2, prep.in_channels, prep.size, prep.size)
    program = dynamo_export(wrapped, example, input_names=[INPUT_NAME],
                            output_names=[LOGIT_NAME, PROBABILITY_NAME], opset=opset)
    program.model.metadata_props.update(_metadata(card))
    program.model.doc_string = (f"xraylens {card.architecture}: input '{INPUT_NAME}' (B, {prep.in_channels}, "
                                f"{prep.size}, {prep.size}) normalised; outputs logit, probability (B, 1)")
    with atomic_path(out) as tmp:
        program.save(tmp, external_data=False)
    log.info("wrote %s (%.1f MB)", out, out.stat().st_size / 2**20)
    if not check:
        return ExportResult(out, float("nan"), float("nan"), 0, tolerance)

    batch = parity_inputs(card, images, seed=seed)
    with torch.inference_mode():
        logit_t, prob_t = (t.numpy() for t in wrapped(torch.from_numpy(batch)))
    session = inference_session(out, "cpu")
    logit_o, prob_o = session.run([LOGIT_NAME, PROBABILITY_NAME], {INPUT_NAME: batch})
    single = session.run([PROBABILITY_NAME], {INPUT_NAME: batch[:1]})[0]  # the batch axis really is dynamic
    diff_p = max(float(np.abs(prob_o - prob_t).max()), float(np.abs(single - prob_t[:1]).max()))
    diff_l = float(np.abs(logit_o - logit_t).max())
    return ExportResult(out, diff_p, diff_l, len(batch), tolerance)


def _exported_module(net: Any, temperature: float) -> Any:
    import torch

    class Exported(torch.nn.Module):
        """The network plus calibration, so ONNX consumers get P(abnormal) without our code."""

        def __init__(self) -> None:
            super().__init__()
            self.net = net
            self.register_buffer("temperature", torch.tensor(float(temperature)))

        def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            logit = self.net(image)  # (B, 1)
            return logit, torch.sigmoid(logit / self.temperature)

    return Exported()


def _metadata(card: ModelCard) -> dict[str, str]:
    full = card.to_dict()
    props = {METADATA_KEY: json.dumps(full)}
    for key in ("architecture", "preprocessing", "class_names", "threshold", "temperature", "xraylens_version"):
        props[key] = json.dumps(full[key])
    return props


def parity_inputs(card: ModelCard, images: Sequence[str | Path] = (), *, seed: int = 0) -> np.ndarray:
    """(N, C, S, S) float32: 2 random tensors, 2 synthetic radiographs, then ``images`` through the pipeline."""
    from xraylens.data.images import read_image

    prep = card.preprocessing
    rng = np.random.default_rng(seed)
    out = [rng.standard_normal((2, prep.in_channels, prep.size, prep.size)).astype(np.float32)]
    arrays = [synthetic_radiograph(rng, 300, 220), synthetic_radiograph(rng, 180, 260)]
    arrays += [read_image(p) for p in images]
    out += [normalize(letterbox(a, prep.size)[0], prep)[None] for a in arrays]
    return np.ascontiguousarray(np.concatenate(out).astype(np.float32))


def synthetic_radiograph(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """A dark field with a bright elongated 'bone', a cortex-like rim and noise: real-ish value statistics."""
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
    cy, cx = height / 2, width / 2
    r = ((xs - cx) / (0.18 * width)) ** 2 + ((ys - cy) / (0.42 * height)) ** 2
    image = 0.1 + 0.55 * (r < 1) + 0.25 * ((r > 0.7) & (r < 1))
    image += rng.normal(0, 0.04, size=image.shape)
    return np.clip(image, 0, 1).astype(np.float32)
