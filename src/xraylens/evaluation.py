"""Evaluate one checkpoint, or an ensemble of them, on a dataset split the way the MURA paper does.

Everything is rebuilt from the checkpoints: architecture, preprocessing,
temperature, threshold, and the validation subset used for calibration and
threshold choice (``val_fraction`` and ``split_seed`` from the training config
stored in the checkpoint). Nothing comes from today's command line except
which data to read and where to write.

An ensemble averages the models' probabilities (the paper's top-5 ensemble);
each model sees its inputs through its own preprocessing. Study probability is
the mean of the study's image probabilities. Unreadable images are dropped,
counted and listed in ``metrics.json``; they never stop an evaluation. With a
box table (the synthetic dataset's ``boxes.csv``), AUROC and kappa are also
reported per finding kind (:mod:`xraylens.finding_kinds`).

This module predicts and measures; :mod:`xraylens.evaluation_report` turns the
result into the report folder (tables, figures, summary text).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from xraylens._version import __version__
from xraylens.calibration import (
    THRESHOLD_METHODS,
    apply_temperature,
    binary_nll,
    choose_threshold,
    expected_calibration_error,
    fit_temperature,
    logit,
    sigmoid,
)
from xraylens.config import DataConfig
from xraylens.data.dataset_index import FORMAT_NAMES
from xraylens.evaluation_report import (
    IMAGE_COLUMNS,
    STUDY_COLUMNS,
    per_body_part_table,
    per_kind_table,
    summary_text,
    write_report,
)
from xraylens.finding_kinds import (
    FindingKinds,
    find_box_table,
    kinds_from_boxes,
    per_kind_metrics,
    read_finding_kinds,
)
from xraylens.metrics import METRIC_NAMES, evaluation_metrics, to_jsonable
from xraylens.models import LoadedModel

log = logging.getLogger(__name__)

THRESHOLD_CHOICES: tuple[str, ...] = ("checkpoint", "0.5", *THRESHOLD_METHODS)
ECE_BINS = 10


class EvaluationError(ValueError):
    """An evaluation that cannot run as asked (no validation data, a bad threshold...); says what to change."""


@dataclass
class EvaluationReport:
    """What ``evaluate`` measured and wrote; ``metrics`` is exactly the content of ``metrics.json``."""

    metrics: dict[str, Any]
    images: pd.DataFrame  # one row per readable image: IMAGE_COLUMNS (+ study_path)
    studies: pd.DataFrame  # one row per study: STUDY_COLUMNS (+ study_id)
    paths: dict[str, Path] = field(default_factory=dict)  # output name -> file
    summary: str = ""


# ---------------------------------------------------------------- prediction


def predict_table(
    loaded_models: list[LoadedModel],
    table: pd.DataFrame,
    *,
    batch_size: int = 64,
    num_workers: int = 0,
    progress: bool = True,
    device: str | None = None,
    engine: str = "torch",
) -> np.ndarray:
    """P(abnormal) per row of ``table`` (needs ``file``), averaged over models; NaN where unreadable.

    Each model's logits are divided by its checkpoint's temperature before the
    sigmoid. Models sharing a preprocessing share one pass over the images.
    ``device=None`` uses CUDA when available; models are moved there in place.
    ``engine``: ``"torch"``, ``"onnxruntime"`` (each model exported once and
    run in float32 on the CPU: 4x faster for the demo's model on an AVX2 CPU)
    or ``"auto"`` (:func:`xraylens.onnx_cpu.resolve_engine`).
    """
    import torch
    from torch.utils.data import DataLoader
    from tqdm.auto import tqdm

    from xraylens.data.dataset import RadiographDataset
    from xraylens.onnx_cpu import close, resolve_engine, runner

    if not loaded_models:
        raise EvaluationError("predict_table needs at least one model")
    target = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    engine = resolve_engine(engine, "32", target, images=len(table))
    table = table.reset_index(drop=True)
    total = np.zeros(len(table), dtype=np.float64)
    readable = np.ones(len(table), dtype=bool)
    by_prep: dict[Any, list[LoadedModel]] = {}
    for loaded in loaded_models:
        by_prep.setdefault(loaded.meta.preprocessing, []).append(loaded)
    for prep, members in by_prep.items():
        loader = DataLoader(RadiographDataset(table, prep), batch_size=batch_size, shuffle=False,
                            num_workers=num_workers)
        shape = (prep.in_channels, prep.size, prep.size)
        nets = [(runner(m.model.to(target).eval(), shape, engine, desc=m.meta.model.name)[0], m.meta.temperature)
                for m in members]
        desc = f"predicting ({len(members)} model{'s' * (len(members) > 1)}, {prep.size}px)"
        try:
            with torch.inference_mode():
                for batch in tqdm(loader, desc=desc, unit="batch", disable=not progress, leave=False):
                    x = batch["image"].to(target)  # (B, C, S, S) normalised
                    rows = batch["index"].numpy()
                    readable[rows] &= batch["ok"].numpy().astype(bool)
                    for net, temperature in nets:
                        z = net(x).reshape(-1).double().cpu().numpy()  # (B,) logits
                        total[rows] += sigmoid(z / temperature)
        finally:
            for net, _ in nets:
                close(net)
    probs = total / len(loaded_models)
    probs[~readable] = np.nan
    return probs


def study_table(images: pd.DataFrame, threshold: float) -> pd.DataFrame:
    """One row per study (index order kept): mean probability of its views, and the decision."""
    grouped = images.groupby("study_id", sort=False)
    studies = grouped.agg(
        study_path=("study_path", "first"),
        body_part=("body_part", "first"),
        n_views=("path", "size"),
        label=("label", "first"),
        probability=("probability", "mean"),
    ).reset_index()
    studies["prediction"] = (studies["probability"] >= threshold).astype(np.int64)
    return studies[[*STUDY_COLUMNS, "study_id"]]


# ---------------------------------------------------------------- evaluate


def evaluate(
    checkpoints: list[Path],
    data_root: str | Path,
    *,
    split: str = "valid",
    out: str | Path,
    body_parts: list[str] | None = None,
    calibrate: bool = False,
    threshold: str = "checkpoint",
    n_boot: int = 1000,
    seed: int = 0,
    batch_size: int = 64,
    num_workers: int = 0,
    progress: bool = True,
    device: str | None = None,
    boxes: str | Path | None = None,
    format: str | None = None,
    overwrite: bool = False,
    engine: str = "torch",
) -> EvaluationReport:
    """Predict ``split`` with the checkpoint(s), measure, and write every report file into ``out``.

    ``threshold``: ``checkpoint`` (the value stored at training), a number such
    as ``0.5``, or ``youden`` / ``kappa`` (maximised on validation studies).
    ``calibrate`` fits a temperature on the validation images first.
    ``boxes``: a box table (``path,...,kind``) for metrics per finding kind
    (:mod:`xraylens.finding_kinds`); ``None`` uses ``boxes.csv`` in the data
    folder when there is one, and without a table there are no per-kind
    metrics; FracAtlas and GRAZPEDWRI-DX bring their own boxes. ``format``
    names the dataset's layout (default: the checkpoint's ``data.format``,
    usually auto-detection); its test split is rebuilt with the checkpoint's
    ``data.test_fraction`` and friends, so it is the one training left out.
    An ``out`` that is not empty is refused with
    :class:`~xraylens.output_dir.OutputExistsError` unless ``overwrite`` (then the
    earlier report's files are removed first). ``engine``: what runs the
    models (:func:`predict_table`; ``"auto"`` is ONNX Runtime on a CPU for 256
    images or more). Raises CheckpointError, DataError
    or EvaluationError with the fix in the message.
    """
    from xraylens.data.formats import open_for
    from xraylens.models import load_checkpoint

    threshold = _check_threshold_spec(threshold)
    if not checkpoints:
        raise EvaluationError("give at least one checkpoint")
    from xraylens.evaluation_report import REPORT_FILES
    from xraylens.output_dir import claim_output_dir

    models = [load_checkpoint(path) for path in checkpoints]  # a wrong path is named before the folder
    out = claim_output_dir(out, overwrite=overwrite, outputs=REPORT_FILES, what="evaluation")
    run = dict(batch_size=batch_size, num_workers=num_workers, progress=progress, device=device, engine=engine)
    data_config = models[0].meta.experiment.get("data", {}) or {}
    index = open_for(data_root, data_config, format=format, splits=(split,), body_parts=body_parts,
                     progress=progress)
    if index.table.empty:
        raise EvaluationError(f"no labelled images in split {split!r} of {data_root} (body parts: {body_parts or 'all'})")
    kinds = _finding_kinds(boxes, data_root, index)  # before predicting: a bad table fails fast
    images, unreadable = _with_probabilities(index.table, predict_table(models, index.table, **run))
    if images.empty:
        raise EvaluationError(f"none of the {len(unreadable)} images of split {split!r} could be read "
                              f"(e.g. {unreadable[0]}); check the files with `xraylens data summary --verify`")

    val_images, validation = None, None
    if calibrate or threshold in THRESHOLD_METHODS:
        val_table, validation = validation_table(models, data_root, progress=progress, format=format)
        if split == "train":
            log.warning("evaluating split 'train', which contains the validation subset used for fitting")
        val_images, val_unreadable = _with_probabilities(val_table, predict_table(models, val_table, **run))
        validation.update(n_images=len(val_images), n_studies=int(val_images["study_id"].nunique()),
                          unreadable=len(val_unreadable))

    raw = images["probability"].to_numpy()
    calibration, value, method = _decide(threshold, calibrate, models, images, val_images)
    images["prediction"] = (images["probability"] >= value).astype(np.int64)
    studies = study_table(images, value)
    raw_studies = study_table(images.assign(probability=raw), 0.5)  # as the checkpoints delivered them

    metrics: dict[str, Any] = {
        "xraylens_version": __version__,
        "split": split,
        "dataset": "MURA" if index.format == "mura" else FORMAT_NAMES[index.format],
        "data_root": str(index.root),
        "body_parts": sorted(images["body_part"].unique().tolist()),
        "checkpoints": [_describe(m) for m in models],
        "threshold": value,
        "threshold_method": method,
        "temperature": calibration["temperature"],
        "calibration": calibration,
        "ece": _ece(images, raw, studies, raw_studies, calibrate),
        "validation": validation,
        "bootstrap": {"n_boot": n_boot, "seed": seed, "level": 0.95, "resampled": "studies",
                      "method": "percentile"},
        "skipped": {"count": len(unreadable), "unreadable": unreadable,
                    "index_problems": index.problem_summary()},
    }
    metrics.update(evaluation_metrics(images["label"].to_numpy(), images["probability"].to_numpy(),
                                      images["study_id"].to_numpy(), images["body_part"].to_numpy(),
                                      value, n_boot=n_boot, seed=seed))
    if kinds is not None:
        metrics["boxes"] = str(kinds.source)
        metrics["per_kind"] = per_kind_metrics(images, kinds, value, n_boot=n_boot, seed=seed)
    metrics = to_jsonable(metrics)
    report = EvaluationReport(metrics=metrics, images=images, studies=studies)
    report.paths = write_report(out, metrics, images, studies, raw_studies=raw_studies,
                                preprocessing=models[0].meta.preprocessing, seed=seed)
    report.summary = summary_text(metrics, out)
    log.info("%s", report.summary)
    return report


def validation_table(
    models: list[LoadedModel], data_root: str | Path, *, progress: bool = True, format: str | None = None
) -> tuple[pd.DataFrame, dict[str, Any]]:
    """The validation subset carved from ``train`` exactly as training did (settings from the checkpoint)."""
    from xraylens.data.formats import open_for
    from xraylens.data.splits import split_train_val

    defaults = DataConfig()
    settings = []
    for m in models:
        data = m.meta.experiment.get("data", {}) or {}
        settings.append((float(data.get("val_fraction", defaults.val_fraction)),
                         int(data.get("split_seed", defaults.split_seed)),
                         tuple(data.get("body_parts") or defaults.body_parts)))
    if len(set(settings)) > 1:
        log.warning("checkpoints were trained with different validation splits %s; using the first's", settings)
    val_fraction, split_seed, parts = settings[0]
    info: dict[str, Any] = {"val_fraction": val_fraction, "split_seed": split_seed, "body_parts": list(parts)}
    if val_fraction <= 0:
        raise EvaluationError(
            f"{models[0].path} was trained without a validation subset (val_fraction=0), so there is nothing "
            "to calibrate or choose a threshold on; drop --calibrate and use --threshold checkpoint or 0.5"
        )
    data_config = models[0].meta.experiment.get("data", {}) or {}
    index = open_for(data_root, data_config, format=format, splits=("train",), body_parts=parts or None,
                     progress=progress)
    table = split_train_val(index.table, val_fraction, split_seed)
    val = table[table["subset"] == "val"].reset_index(drop=True)
    if val.empty:
        raise EvaluationError(f"the validation subset of {data_root} is empty (val_fraction={val_fraction})")
    return val, info


# ---------------------------------------------------------------- steps of evaluate


def _check_threshold_spec(spec: str) -> str:
    spec = str(spec).strip().lower()
    if spec in ("checkpoint", *THRESHOLD_METHODS):
        return spec
    try:
        value = float(spec)
    except ValueError:
        value = float("nan")
    if not 0.0 < value < 1.0:
        raise EvaluationError(f"threshold {spec!r}: use checkpoint, youden, kappa or a number in (0, 1) such as 0.5")
    return spec


def _finding_kinds(boxes: str | Path | None, data_root: str | Path, index: Any) -> FindingKinds | None:
    """The explicit box table (which must exist), else the dataset's own boxes, else ``boxes.csv``, else None."""
    if boxes is None and index.boxes is not None:
        kinds = kinds_from_boxes(index.boxes, index.table, index.root)
        log.info("finding kinds from the dataset's boxes: %s", ", ".join(sorted(set().union(*kinds.by_study.values())))
                 or "none")
        return kinds
    path = Path(boxes) if boxes is not None else find_box_table(data_root, index.root)
    if path is None:
        return None
    if index.format != "mura":
        from xraylens.data.boxes import read_box_table

        return kinds_from_boxes(read_box_table(path), index.table, path)
    kinds = read_finding_kinds(path)
    log.info("finding kinds from %s: %s", path, ", ".join(sorted(set().union(*kinds.by_study.values()))) or "none")
    return kinds


def _with_probabilities(table: pd.DataFrame, probs: np.ndarray) -> tuple[pd.DataFrame, list[str]]:
    """Attach probabilities; drop (and return the paths of) unreadable images."""
    frame = table.reset_index(drop=True).copy()
    frame["probability"] = probs
    bad = frame["probability"].isna()
    unreadable = frame.loc[bad, "path"].astype(str).tolist()
    if unreadable:
        log.warning("%d unreadable image(s) skipped, e.g. %s", len(unreadable), unreadable[0])
    return frame.loc[~bad].reset_index(drop=True), unreadable


def _fit_calibration(val_images: pd.DataFrame) -> dict[str, Any]:
    z = logit(val_images["probability"].to_numpy())
    y = val_images["label"].to_numpy()
    try:
        temperature = fit_temperature(z, y)
    except ValueError as exc:
        raise EvaluationError(f"cannot calibrate: {exc}") from exc
    return {"fitted": True, "temperature": temperature, "fitted_on": "validation images",
            "nll_before": binary_nll(z, y), "nll_after": binary_nll(z, y, temperature)}


def _decide(
    spec: str, calibrate: bool, models: list[LoadedModel], images: pd.DataFrame, val_images: pd.DataFrame | None
) -> tuple[dict[str, Any], float, str]:
    """Fit the temperature (rescaling ``images`` and ``val_images`` in place), then pick the threshold."""
    calibration: dict[str, Any] = {"fitted": False, "temperature": 1.0}
    if calibrate:
        assert val_images is not None
        calibration = _fit_calibration(val_images)
        for frame in (images, val_images):
            frame["probability"] = apply_temperature(frame["probability"].to_numpy(), calibration["temperature"])
    value, method = _resolve_threshold(spec, models, val_images)
    if calibrate and method == "checkpoint":  # keep the checkpoint's decisions: move its cut with the logits
        value = float(apply_temperature(np.array([value]), calibration["temperature"])[0])
    return calibration, value, method


def _resolve_threshold(spec: str, models: list[LoadedModel], val_images: pd.DataFrame | None) -> tuple[float, str]:
    if spec == "checkpoint":
        stored = sorted({float(m.meta.threshold) for m in models})
        if len(stored) == 1:
            return stored[0], "checkpoint"
        log.warning("checkpoints disagree on the threshold %s; using 0.5 (or pass --threshold youden)", stored)
        return 0.5, "fixed"
    if spec in THRESHOLD_METHODS:
        assert val_images is not None
        studies = study_table(val_images, 0.5)
        try:
            return choose_threshold(studies["label"].to_numpy(), studies["probability"].to_numpy(), spec), spec
        except ValueError as exc:
            raise EvaluationError(f"cannot choose a threshold on validation studies: {exc}") from exc
    return float(spec), "fixed"


def _ece(images: pd.DataFrame, raw: np.ndarray, studies: pd.DataFrame, raw_studies: pd.DataFrame,
         calibrated: bool) -> dict[str, Any]:
    """ECE of the split, as delivered by the checkpoints ("before") and after fitted temperature."""
    y = images["label"].to_numpy()
    before = {"image": expected_calibration_error(y, raw, ECE_BINS),
              "study": expected_calibration_error(raw_studies["label"], raw_studies["probability"], ECE_BINS)}
    after = {"image": expected_calibration_error(y, images["probability"].to_numpy(), ECE_BINS),
             "study": expected_calibration_error(studies["label"], studies["probability"], ECE_BINS)}
    return {"before": before["study"], "after": after["study"] if calibrated else None, "level": "study",
            "n_bins": ECE_BINS, "image": {"before": before["image"], "after": after["image"] if calibrated else None}}


def _describe(m: LoadedModel) -> dict[str, Any]:
    return {"path": str(m.path), "model": m.meta.model.name, "temperature": m.meta.temperature,
            "threshold": m.meta.threshold, "preprocessing": m.meta.preprocessing.to_dict(),
            "xraylens_version": m.meta.xraylens_version}


__all__ = [
    "IMAGE_COLUMNS",
    "METRIC_NAMES",
    "STUDY_COLUMNS",
    "THRESHOLD_CHOICES",
    "EvaluationError",
    "EvaluationReport",
    "evaluate",
    "per_body_part_table",
    "per_kind_table",
    "predict_table",
    "study_table",
    "summary_text",
    "validation_table",
]
