"""The evaluation report folder: what ``xraylens evaluate`` writes, and how its numbers read as text.

Kept apart from :mod:`xraylens.evaluation` so that measuring never depends on
how results are shown: this module receives finished tables and the
``metrics.json`` content and only formats, plots and writes them. It imports
nothing from the evaluation module, so either side can change without the
other. Every file is written atomically; figures go through
:mod:`xraylens.plots`.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from xraylens.calibration import reliability_curve
from xraylens.data.preprocess import Preprocessing

log = logging.getLogger(__name__)

SAMPLES_PER_OUTCOME = 4
# Columns of predictions_images.csv / predictions_studies.csv (the in-memory tables may hold more).
IMAGE_COLUMNS = ("path", "study_id", "body_part", "label", "probability", "prediction")
STUDY_COLUMNS = ("study_path", "body_part", "n_views", "label", "probability", "prediction")
PER_KIND_FILES = ("per_kind.csv", "per_kind.md")
# Everything write_report may put in ``out``: what ``--overwrite`` clears before a new evaluation.
REPORT_FILES = ("metrics.json", "per_body_part.csv", "per_body_part.md", "predictions_images.csv",
                "predictions_studies.csv", "submission.csv", *PER_KIND_FILES, "sample_predictions.png", "roc.png",
                "confusion.png", "reliability.png")


# ---------------------------------------------------------------- files


def write_report(
    out: Path,
    metrics: dict[str, Any],
    images: pd.DataFrame,
    studies: pd.DataFrame,
    *,
    raw_studies: pd.DataFrame,
    preprocessing: Preprocessing,
    seed: int,
) -> dict[str, Path]:
    """Write every report file into ``out``; returns output name -> file.

    ``raw_studies`` are the study probabilities as the checkpoints delivered
    them (before any fitted temperature), for the "before" reliability curve;
    ``preprocessing`` is the first model's, used to show the sample images as
    that model saw them. ``per_kind.{csv,md}`` are written only when
    ``metrics["per_kind"]`` holds kinds; a stale pair from an earlier run in
    ``out`` is then removed (with a log line), so the folder never shows
    per-kind numbers that its ``metrics.json`` does not hold.
    """
    from xraylens.atomic import atomic_write_json, atomic_write_text

    table = per_body_part_table(metrics)
    paths = {
        "metrics": atomic_write_json(out / "metrics.json", metrics),
        "per_body_part_csv": atomic_write_text(out / "per_body_part.csv", table.to_csv(index=False)),
        "per_body_part_md": atomic_write_text(out / "per_body_part.md", _markdown(table, metrics)),
        "predictions_images": atomic_write_text(out / "predictions_images.csv",
                                                images[list(IMAGE_COLUMNS)].to_csv(index=False)),
        "predictions_studies": atomic_write_text(out / "predictions_studies.csv",
                                                 studies[list(STUDY_COLUMNS)].to_csv(index=False)),
        "submission": atomic_write_text(out / "submission.csv", "".join(
            f"{p},{int(d)}\n" for p, d in zip(studies["study_path"], studies["prediction"], strict=True))),
    }
    paths.update(_write_per_kind(out, metrics))
    fitted = metrics["calibration"]["temperature"] if metrics["calibration"]["fitted"] else None
    paths.update(_write_figures(out, images, studies, raw_studies, preprocessing, metrics["threshold"], fitted,
                                int(metrics["ece"]["n_bins"]), seed))
    return paths


def _write_per_kind(out: Path, metrics: dict[str, Any]) -> dict[str, Path]:
    from xraylens.atomic import atomic_write_text

    if not metrics.get("per_kind"):
        for name in PER_KIND_FILES:
            if (out / name).is_file():
                log.warning("removing %s from an earlier evaluation: this one has no per-kind metrics", out / name)
                (out / name).unlink()
        return {}
    table = per_kind_table(metrics)
    return {"per_kind_csv": atomic_write_text(out / "per_kind.csv", table.to_csv(index=False)),
            "per_kind_md": atomic_write_text(out / "per_kind.md", _per_kind_markdown(table, metrics))}


def _write_figures(
    out: Path, images: pd.DataFrame, studies: pd.DataFrame, raw_studies: pd.DataFrame, prep: Preprocessing,
    threshold: float, temperature: float | None, n_bins: int, seed: int,
) -> dict[str, Path]:
    """``temperature`` is the fitted one (reliability before/after), or None when not calibrated."""
    from xraylens.plots import evaluation as plots

    y, p = studies["label"].to_numpy(), studies["probability"].to_numpy()
    curves = {}
    if temperature is not None:
        curves["before"] = reliability_curve(raw_studies["label"].to_numpy(), raw_studies["probability"].to_numpy(),
                                             n_bins)
    curves["model" if temperature is None else f"after (T = {temperature:.2f})"] = reliability_curve(y, p, n_bins)
    return {
        "sample_predictions": _sample_figure(out / "sample_predictions.png", images, prep, threshold, seed),
        "roc": plots.plot_roc(y, p, studies["body_part"].to_numpy(), out / "roc.png"),
        "confusion": plots.plot_confusion(y, studies["prediction"].to_numpy(), out / "confusion.png",
                                          title=f"Study-level confusion matrix, threshold {threshold:.2f}"),
        "reliability": plots.plot_reliability(curves, out / "reliability.png"),
    }


def _sample_figure(path: Path, images: pd.DataFrame, prep: Preprocessing, threshold: float, seed: int) -> Path:
    """Up to SAMPLES_PER_OUTCOME random images of each outcome, shown as the first model's input."""
    from xraylens.data.dataset import RadiographDataset
    from xraylens.data.preprocess import denormalize
    from xraylens.plots.evaluation import outcome, plot_sample_predictions

    rng = np.random.default_rng(seed)
    kinds = np.array([outcome(int(t), int(d)) for t, d in zip(images["label"], images["prediction"], strict=True)])
    chosen = []
    for kind in ("TP", "FN", "TN", "FP"):
        rows = np.flatnonzero(kinds == kind)
        chosen += sorted(rng.choice(rows, size=min(SAMPLES_PER_OUTCOME, len(rows)), replace=False).tolist())
    picked = images.iloc[chosen].reset_index(drop=True)
    dataset = RadiographDataset(picked, prep)
    pictures = [denormalize(dataset[i]["image"], prep) for i in range(len(picked))]
    # MURA ids end in patient/study; FracAtlas ids are the image's, GRAZPEDWRI-DX ids patient/study
    captions = [f"{part.removeprefix('XR_').lower()} · {'/'.join(str(sid).split('/')[-2:])}"
                for part, sid in zip(picked["body_part"], picked["study_id"], strict=True)]
    return plot_sample_predictions(pictures, picked["label"].tolist(), picked["probability"].tolist(),
                                   picked["prediction"].tolist(), captions, path, threshold=threshold,
                                   per_outcome=SAMPLES_PER_OUTCOME, title="Image-level predictions")


# ---------------------------------------------------------------- tables and text


def per_body_part_table(metrics: dict[str, Any]) -> pd.DataFrame:
    """One row per body part plus ``all``: study metrics with CIs, and image AUROC."""
    rows = []
    study, image = metrics["study"], metrics["image"]
    for part in [*sorted(study["by_body_part"]), "all"]:
        s = study if part == "all" else study["by_body_part"][part]
        i = image if part == "all" else image["by_body_part"][part]
        rows.append({
            "body_part": part, "n_studies": s["n"], "n_images": i["n"],
            "study_auroc": s["auroc"], "study_auroc_lo": s["ci95"]["auroc"][0], "study_auroc_hi": s["ci95"]["auroc"][1],
            "kappa": s["kappa"], "kappa_lo": s["ci95"]["kappa"][0], "kappa_hi": s["ci95"]["kappa"][1],
            **{name: s[name] for name in ("accuracy", "sensitivity", "specificity", "f1")},
            "image_auroc": i["auroc"],
        })
    return pd.DataFrame(rows)


def per_kind_table(metrics: dict[str, Any]) -> pd.DataFrame:
    """One row per finding kind: cohort sizes, study and image AUROC and kappa with CIs, study sensitivity."""
    rows = []
    for kind, entry in (metrics.get("per_kind") or {}).items():
        row: dict[str, Any] = {"kind": kind, **{k: entry[k] for k in ("n_positive_studies", "n_negative_studies",
                                                                     "n_positive_images", "n_negative_images")}}
        for level in ("study", "image"):
            section = entry[level]
            for name in ("auroc", "kappa"):
                lo, hi = section["ci95"][name]
                row.update({f"{level}_{name}": section[name], f"{level}_{name}_lo": lo, f"{level}_{name}_hi": hi})
        row["study_sensitivity"] = entry["study"]["sensitivity"]
        rows.append(row)
    return pd.DataFrame(rows)


def _per_kind_markdown(table: pd.DataFrame, metrics: dict[str, Any]) -> str:
    lines = [
        f"# Evaluation on {metrics.get('dataset', 'MURA')} `{metrics['split']}`: per finding kind",
        "",
        f"Kinds from `{metrics.get('boxes', 'the box table')}`. For each kind, positives are the abnormal studies "
        "with at least one box of that kind, negatives are all normal studies; abnormal studies without it are "
        "left out. At image level an abnormal image without any box counts for every kind of its study. "
        f"Threshold {metrics['threshold']:.3f} ({metrics['threshold_method']}); 95% CIs from "
        f"{metrics['bootstrap']['n_boot']} bootstrap resamples of studies.",
        "",
        "| kind | abnormal / normal studies | study AUROC [95% CI] | study kappa [95% CI] | sensitivity | "
        "image AUROC [95% CI] | image kappa [95% CI] |",
        "|---|---:|---|---|---:|---|---|",
    ]
    for r in table.to_dict("records"):
        cells = [_fmt(r[f"{level}_{name}"], r[f"{level}_{name}_lo"], r[f"{level}_{name}_hi"], ci=True)
                 for level, name in (("study", "auroc"), ("study", "kappa"))]
        cells.append(_fmt(r["study_sensitivity"]))
        cells += [_fmt(r[f"image_{name}"], r[f"image_{name}_lo"], r[f"image_{name}_hi"], ci=True)
                  for name in ("auroc", "kappa")]
        lines.append(f"| {r['kind']} | {r['n_positive_studies']} / {r['n_negative_studies']} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and np.isnan(value))


def _fmt(value: Any, lo: Any = None, hi: Any = None, ci: bool = False) -> str:
    """``0.812``, or with ``ci`` ``0.812 [0.790, 0.833]``; undefined values read ``n/a``."""
    text = "n/a" if _missing(value) else f"{value:.3f}"
    if ci:
        text += " [n/a]" if _missing(lo) or _missing(hi) else f" [{lo:.3f}, {hi:.3f}]"
    return text


def _markdown(table: pd.DataFrame, metrics: dict[str, Any]) -> str:
    lines = [
        f"# Evaluation on {metrics.get('dataset', 'MURA')} `{metrics['split']}`: per body part",
        "",
        f"Study-level metrics (study probability = mean of its views) at threshold {metrics['threshold']:.3f} "
        f"({metrics['threshold_method']}); 95% CIs from {metrics['bootstrap']['n_boot']} bootstrap resamples "
        "of studies. Image AUROC is per image.",
        "",
        "| body part | n studies | study AUROC [95% CI] | kappa [95% CI] | accuracy | sensitivity | "
        "specificity | image AUROC |",
        "|---|---:|---|---|---:|---:|---:|---:|",
    ]
    for row in table.to_dict("records"):
        name = "**all**" if row["body_part"] == "all" else row["body_part"]
        lines.append(
            f"| {name} | {row['n_studies']} | {_fmt(row['study_auroc'], row['study_auroc_lo'], row['study_auroc_hi'], ci=True)} "
            f"| {_fmt(row['kappa'], row['kappa_lo'], row['kappa_hi'], ci=True)} | {_fmt(row['accuracy'])} "
            f"| {_fmt(row['sensitivity'])} | {_fmt(row['specificity'])} | {_fmt(row['image_auroc'])} |"
        )
    return "\n".join(lines) + "\n"


def summary_text(metrics: dict[str, Any], out: Path | None = None) -> str:
    """One paragraph: what was evaluated, headline study numbers with CIs, image AUROC, calibration."""
    s, i = metrics["study"], metrics["image"]
    n_models = len(metrics["checkpoints"])
    who = "1 checkpoint" if n_models == 1 else f"an ensemble of {n_models} checkpoints"
    parts = {k: v["kappa"] for k, v in s["by_body_part"].items() if v["kappa"] is not None}
    spread = ""
    if len(parts) > 1:
        lo, hi = min(parts, key=parts.get), max(parts, key=parts.get)
        spread = f" Kappa ranges from {parts[lo]:.3f} ({lo}) to {parts[hi]:.3f} ({hi})."
    ece = metrics["ece"]
    calib = f"study ECE {_fmt(ece['before'])}"
    if ece["after"] is not None:
        calib += f" -> {_fmt(ece['after'])} after temperature {metrics['temperature']:.2f}"
    skipped = metrics["skipped"]["count"]
    kinds = "; ".join(f"{kind} {_fmt(k['study']['auroc'], *k['study']['ci95']['auroc'], ci=True)} "
                      f"({k['n_positive_studies']} vs {k['n_negative_studies']} normal)"
                      for kind, k in (metrics.get("per_kind") or {}).items())
    by_kind = f" Study AUROC per finding kind: {kinds}." if kinds else ""
    return (
        f"Evaluated {who} on {metrics.get('dataset', 'MURA')} {metrics['split']}: {i['n']} images in {s['n']} studies"
        f"{f' ({skipped} unreadable skipped)' if skipped else ''}. Study level at threshold "
        f"{metrics['threshold']:.3f} ({metrics['threshold_method']}): AUROC "
        f"{_fmt(s['auroc'], *s['ci95']['auroc'], ci=True)}, Cohen's kappa {_fmt(s['kappa'], *s['ci95']['kappa'], ci=True)}, "
        f"accuracy {_fmt(s['accuracy'])}, sensitivity {_fmt(s['sensitivity'])}, specificity "
        f"{_fmt(s['specificity'])}; image AUROC {_fmt(i['auroc'], *i['ci95']['auroc'], ci=True)}.{spread}{by_kind} "
        f"Calibration: {calib}.{f' Reports in {out}.' if out else ''}"
    )


__all__ = ["IMAGE_COLUMNS", "STUDY_COLUMNS", "per_body_part_table", "per_kind_table", "summary_text", "write_report"]
