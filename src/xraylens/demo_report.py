"""The demo's top-level report: one page that says what was run, how well it did, and where it looked.

``xraylens demo`` leaves a dozen files in five folders; a person wants one
page. ``write_demo_report(DIR)`` reads the files of a finished demo folder and
writes ``DIR/report.md`` and a self-contained ``DIR/report.html``: the run
(data, recipe, stage timings), the metric tables (overall, per body part, per
finding kind), every figure, the localisation table and one study's heatmaps,
each with a sentence or two on how to read it.

It reads files only, never the objects that made them, so it can be rerun on
any finished folder and describes exactly what is on disk. Every piece is
optional: a file that is absent (an evaluation without a box table has no
per-kind metrics; a figure that was not drawn) becomes a short note in its
place, so a partial folder still gives a report. The content is built once
(:mod:`xraylens.report_document`) and rendered as markdown and as HTML.
"""

from __future__ import annotations

import csv
import json
import logging
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from xraylens.atomic import atomic_write_text
from xraylens.report_document import (
    Block,
    Bullets,
    Document,
    Note,
    Paragraph,
    Section,
    figure,
    table,
    to_html,
    to_markdown,
)

log = logging.getLogger(__name__)

REPORT_MD = "report.md"
REPORT_HTML = "report.html"
STUDY_FIGURES = "heatmaps/studies"  # one PNG per explained study (explain_images(..., study_views=True))


@dataclass(frozen=True)
class ReportPaths:
    markdown: Path
    html: Path


def report_paths(out: str | Path) -> ReportPaths:
    return ReportPaths(Path(out) / REPORT_MD, Path(out) / REPORT_HTML)


def write_demo_report(out: str | Path) -> ReportPaths:
    """Write ``report.md`` and ``report.html`` into the demo folder ``out`` (atomically) from its files."""
    out = Path(out)
    doc = build_report(out)
    paths = report_paths(out)
    atomic_write_text(paths.markdown, to_markdown(doc, out))
    atomic_write_text(paths.html, to_html(doc))
    return paths


def build_report(out: Path) -> Document:
    """The report's content, read from the files under ``out``."""
    files = _Files(out)
    metrics = files.json("eval/metrics.json")
    localization = files.json("explain_eval/localization.json")
    glance: list[Block] = [Bullets(tuple(key_numbers(metrics, localization)))] if metrics or localization else []
    return Document(
        title="xraylens demo report",
        intro=(Paragraph(f"What xraylens demo ran in {out}: synthetic data, a training run, a MURA-style evaluation "
                         "on the test split, and a measure of how well the heatmaps find the true findings. The "
                         "headline numbers first; the detailed reports are listed at the end."),
               *glance),
        sections=(
            _run_section(files),
            _training_section(files),
            _classification_section(files, metrics),
            _localisation_section(files, localization),
            _study_section(files),
            _files_section(files),
        ),
        footer="Research software, not a medical device: never use it for clinical decisions.",
    )


# ---------------------------------------------------------------- key numbers


def key_numbers(metrics: dict[str, Any] | None, localization: dict[str, Any] | None) -> list[str]:
    """The headline as short lines: study and image AUROC (with CIs), kappa, per-kind AUROC, best pointing game."""
    lines = []
    if metrics:
        study, image = metrics.get("study") or {}, metrics.get("image") or {}
        lines.append(f"study-level AUROC {_num(study.get('auroc'))}{_ci(study, 'auroc')}, "
                     f"Cohen's kappa {_num(study.get('kappa'))}{_ci(study, 'kappa')}")
        lines.append(f"image-level AUROC {_num(image.get('auroc'))}{_ci(image, 'auroc')}")
        kinds = metrics.get("per_kind") or {}
        if kinds:
            lines.append("study AUROC per finding kind: " + ", ".join(
                f"{kind} {_num((entry.get('study') or {}).get('auroc'))}" for kind, entry in kinds.items()))
    best = best_method(localization)
    if best:
        method, s = best
        lo, hi = s.get("pointing_game_ci95") or (None, None)
        lines.append(f"pointing game (best of {len(localization['localization'])} methods: {method}) "
                     f"{_pct(s.get('pointing_game'))} [95% CI {_pct(lo)}-{_pct(hi)}] vs chance "
                     f"{_pct(s.get('pointing_chance'))}, on {s['n']} abnormal images")
    return lines


def best_method(localization: dict[str, Any] | None) -> tuple[str, dict[str, Any]] | None:
    """The method with the highest pointing game on all scored images (ties: more heat in the boxes, then order)."""
    scored = [(m, by_kind["all"]) for m, by_kind in ((localization or {}).get("localization") or {}).items()
              if (by_kind.get("all") or {}).get("n")]
    if not scored:
        return None
    return max(scored, key=lambda item: (item[1].get("pointing_game") or 0.0, item[1].get("energy_inside") or 0.0))


# ---------------------------------------------------------------- sections


def _run_section(files: _Files) -> Section:
    manifest = files.json("data/synth_manifest.json")
    config = files.yaml("run/config.yaml")
    summary = files.json("demo_summary.json")
    blocks: list[Block] = [Paragraph(
        "The data are synthetic radiographs in the MURA v1.1 layout, drawn with their ground truth: every "
        "abnormal study carries boxes around what was drawn, which is what makes the localisation scores "
        "below measurable. The model trains on the train split (minus a validation subset carved out by "
        "patient) and is scored on the valid split, MURA's test set.")]
    blocks += [table(("data", ""), _data_rows(manifest))] if manifest else files.notes_for("data/synth_manifest.json")
    blocks += [table(("model and recipe", ""), _recipe_rows(config, summary))] if config else files.notes_for(
        "run/config.yaml")
    seconds = (summary or {}).get("seconds") or {}
    if seconds:
        rows = [(stage, f"{value:.1f}") for stage, value in seconds.items()]
        blocks.append(table(("stage", "seconds"), [*rows, ("total", f"{sum(seconds.values()):.1f}")]))
    else:
        blocks += files.notes_for("demo_summary.json") or [Note("demo_summary.json holds no stage timings.")]
    return Section("What was run", tuple(blocks))


def _data_rows(m: dict[str, Any]) -> list[tuple[str, str]]:
    splits = m.get("splits") or {}
    rows = [
        ("patients", str(m.get("patients", "?"))),
        ("studies (abnormal)", f"{m.get('studies', '?')} ({m.get('abnormal_studies', '?')})"),
        ("images", str(m.get("images", "?"))),
        ("train / test studies", " / ".join(str((splits.get(s) or {}).get("studies", "?")) for s in ("train", "valid"))),
        ("finding kinds", ", ".join(m.get("findings") or []) or "?"),
        ("difficulty", str(m.get("difficulty", "?"))),
        ("image size", f"{m.get('max_side', '?')} px long side"),
        ("seed", str(m.get("seed", "?"))),
    ]
    if m.get("boxes_by_kind"):
        rows.append(("true boxes", f"{m.get('boxes')} (" + ", ".join(
            f"{k} {v}" for k, v in m["boxes_by_kind"].items()) + ")"))
    return rows


def _recipe_rows(cfg: dict[str, Any], summary: dict[str, Any] | None) -> list[tuple[str, str]]:
    model, data, train = cfg.get("model") or {}, cfg.get("data") or {}, cfg.get("train") or {}
    wanted = [
        ("model", model.get("name")), ("ImageNet weights", model.get("pretrained")),
        ("pooling", model.get("pooling")), ("input size", data.get("image_size") and f"{data['image_size']} px"),
        ("backbone", train.get("backbone")), ("epochs", train.get("epochs")), ("batch size", train.get("batch_size")),
        ("learning rate", train.get("lr")), ("optimiser", train.get("optimizer")), ("schedule", train.get("schedule")),
        ("explanation method", (cfg.get("explain") or {}).get("method")),
        ("checkpoint", (summary or {}).get("checkpoint")),
    ]
    return [(name, _setting(value)) for name, value in wanted if value is not None]


def _training_section(files: _Files) -> Section:
    return Section("Training", (
        files.figure("run/training_history.png", "Training history",
                     "Loss, accuracy and AUROC per epoch on the training data and the validation subset. "
                     "Validation loss rising while training loss falls means overfitting; best.ckpt is the "
                     "epoch with the lowest validation loss."),
    ))


def _classification_section(files: _Files, metrics: dict[str, Any] | None) -> Section:
    figures = [
        files.figure("eval/sample_predictions.png", "Sample predictions",
                     "Test images by outcome (true/false positives and negatives), as the model saw them, with "
                     "their P(abnormal): the mistakes show what the model confuses."),
        files.figure("eval/roc.png", "ROC curves",
                     "Study-level ROC curves, overall and per body part: the closer to the top-left corner, the "
                     "better; the diagonal is chance."),
        files.figure("eval/confusion.png", "Confusion matrix",
                     "Study-level decisions at the threshold: the off-diagonal cells are missed abnormal studies "
                     "and false alarms."),
        files.figure("eval/reliability.png", "Reliability",
                     "Predicted probability against the observed share of abnormal studies; on the "
                     "diagonal, a probability of 0.8 means abnormal 8 times in 10."),
    ]
    if not metrics:
        return Section("Classification", (*files.notes_for("eval/metrics.json"), *figures))
    boot = metrics.get("bootstrap") or {}
    blocks: list[Block] = [
        Paragraph(f"Scored on the {metrics.get('split', '?')} split. A study's probability is the mean of its "
                  f"views' probabilities (as in the MURA paper); decisions use threshold "
                  f"{_num(metrics.get('threshold'))} ({metrics.get('threshold_method', '?')}). Brackets are 95% "
                  f"intervals from {boot.get('n_boot', '?')} bootstrap resamples of studies. AUROC 0.5 and kappa 0 "
                  "are chance; 1 is perfect for both."),
        table(("level", "n", "AUROC [95% CI]", "Cohen's kappa [95% CI]", "accuracy [95% CI]"),
              [(level, str((metrics.get(level) or {}).get("n", "?")),
                *(_with_ci(metrics.get(level) or {}, k) for k in ("auroc", "kappa", "accuracy")))
               for level in ("study", "image")]),
        Paragraph("Per body part (study level; the last column is image AUROC). Small groups have wide "
                  "intervals: compare parts only where the intervals do not overlap."),
        _body_part_table(metrics),
    ]
    blocks += _kind_blocks(metrics)
    return Section("Classification", (*blocks, *figures))


def _body_part_table(metrics: dict[str, Any]) -> Block:
    from xraylens.evaluation_report import per_body_part_table

    rows = []
    for r in per_body_part_table(metrics).to_dict("records"):
        rows.append((r["body_part"], str(r["n_studies"]), _fmt(r["study_auroc"], r["study_auroc_lo"], r["study_auroc_hi"]),
                     _fmt(r["kappa"], r["kappa_lo"], r["kappa_hi"]),
                     *(_num(r[k]) for k in ("accuracy", "sensitivity", "specificity", "image_auroc"))))
    return table(("body part", "studies", "AUROC [95% CI]", "kappa [95% CI]", "accuracy", "sensitivity",
                  "specificity", "image AUROC"), rows)


def _kind_blocks(metrics: dict[str, Any]) -> list[Block]:
    from xraylens.evaluation_report import per_kind_table

    if not metrics.get("per_kind"):
        return [Note("No metrics per finding kind: the evaluation had no box table (boxes.csv) saying which "
                     "kind of finding each abnormal study shows.")]
    rows = [(r["kind"], f"{r['n_positive_studies']} / {r['n_negative_studies']}",
             _fmt(r["study_auroc"], r["study_auroc_lo"], r["study_auroc_hi"]),
             _fmt(r["study_kappa"], r["study_kappa_lo"], r["study_kappa_hi"]), _num(r["study_sensitivity"]),
             _fmt(r["image_auroc"], r["image_auroc_lo"], r["image_auroc_hi"]))
            for r in per_kind_table(metrics).to_dict("records")]
    return [
        Paragraph("Per finding kind: each kind's abnormal studies against all normal studies (abnormal studies "
                  "of other kinds left out), so a kind the model misses shows here even when the overall AUROC "
                  "looks good."),
        table(("finding kind", "abnormal / normal studies", "study AUROC [95% CI]", "study kappa [95% CI]",
               "sensitivity", "image AUROC [95% CI]"), rows),
    ]


def _localisation_section(files: _Files, loc: dict[str, Any] | None) -> Section:
    figures = [
        files.figure("explain_eval/methods_grid.png", "Heatmaps of every method",
                     "The heatmap of each method (columns) on the first scored images (rows), true boxes drawn: "
                     "a useful map is hot inside the boxes and cool elsewhere."),
        files.figure("explain_eval/pointing_game.png", "Pointing game",
                     "Pointing game per method with its 95% interval, next to chance: only a method clearly "
                     "above its chance mark finds the findings."),
        files.figure("explain_eval/box_accuracy.png", "Where to cut the boxes",
                     "The share of images whose top box overlaps a true box (IoU at least 0.3), for each "
                     "threshold the map is cut at; the star marks each method's best. It is chosen on these "
                     "images, so it is an upper bound: pick a threshold on another split."),
        files.figure("explain_eval/sanity.png", "Sanity check",
                     "How similar each method's maps stay as the network is randomised from the "
                     "head down. Maps that do not change explain the image, not the model."),
    ]
    if not loc:
        return Section("Localisation", (*files.notes_for("explain_eval/localization.json"), *figures))
    from xraylens.explain.report import LOC_HEADER, localization_row

    sanity = loc.get("sanity") or {}
    rows = [(*localization_row(m, by_kind.get("all") or {}), (sanity.get(m) or {}).get("verdict", "–"))
            for m, by_kind in (loc.get("localization") or {}).items()]
    clf = loc.get("classifier") or {}
    return Section("Localisation", (
        Paragraph(f"Each explanation method scored on {loc.get('n_images', '?')} abnormal test images with true "
                  f"boxes (the classifier calls {_pct(clf.get('called_abnormal'))} of them abnormal). Pointing "
                  "game: the share of images whose hottest pixel lies in a true box; chance is the share of the "
                  "image the boxes cover. IoU compares the thresholded map's boxes with the true ones. Per-kind "
                  "tables, faithfulness and the sanity details are in explain_eval/report.md."),
        table((*LOC_HEADER, "sanity check"), rows),
        *figures,
    ))


def _study_section(files: _Files) -> Section:
    studies = sorted((files.out / STUDY_FIGURES).glob("*.png"))
    blocks: list[Block] = [Paragraph(
        "How the model explains single test studies: every view with its heatmap and P(abnormal); a heatmap "
        "marks where the model's evidence lies, not a confirmed finding.")]
    if studies:
        rel = studies[0].relative_to(files.out).as_posix()
        others = f"the other {len(studies) - 1} are" if len(studies) > 2 else "the other is" if len(studies) == 2 else ""
        blocks.append(files.figure(rel, f"Study {studies[0].stem}",
                                   "The first of the explained studies, by name" + (f"; {others} in {STUDY_FIGURES}/."
                                                                                   if others else ".")))
    else:
        blocks.append(Note(f"No study figure in {STUDY_FIGURES}/: the explain stage did not draw any."))
    explained = files.csv_rows("heatmaps/explanations.csv")
    if explained is not None:
        blocks.append(Paragraph(f"{explained} test images were explained; their overlays are in heatmaps/images/ "
                                "and heatmaps/explanations.csv gives each one's probability, boxes and a "
                                "sentence describing where the heat lies."))
    return Section("Explained studies", tuple(blocks))


def _files_section(files: _Files) -> Section:
    wanted = [
        ("eval/per_body_part.md", "metrics per body part"), ("eval/per_kind.md", "metrics per finding kind"),
        ("eval/metrics.json", "every metric, the threshold, calibration"),
        ("eval/predictions_studies.csv", "each test study's probability and decision"),
        ("explain_eval/report.md", "explanation quality: per kind, faithfulness, sanity"),
        ("heatmaps/explanations.csv", "the explained images"),
        ("run/metrics.csv", "the training history as numbers"),
        ("demo_summary.json", "headline numbers and stage timings"),
    ]
    present = [f"{rel}: {what}" for rel, what in wanted if (files.out / rel).is_file()]
    return Section("Files", (Paragraph(f"Under {files.out}:"), Bullets(tuple(present))) if present else (
        Note("None of the detailed report files are present."),))


# ---------------------------------------------------------------- reading the folder


class _Files:
    """The demo folder's files, each read at most once; an absent or unreadable one gives a note instead."""

    def __init__(self, out: Path) -> None:
        self.out = out
        self._cache: dict[str, Any] = {}
        self._problems: dict[str, str] = {}

    def json(self, rel: str) -> dict[str, Any] | None:
        return self._load(rel, json.loads, (ValueError,))  # JSONDecodeError and UnicodeDecodeError

    def yaml(self, rel: str) -> dict[str, Any] | None:
        import yaml

        return self._load(rel, yaml.safe_load, (ValueError, yaml.YAMLError))

    def _load(self, rel: str, parse: Callable[[str], Any], errors: tuple[type[Exception], ...]) -> dict[str, Any] | None:
        """The parsed mapping, or None with the reason kept for ``notes_for`` (and logged when unreadable)."""
        if rel in self._cache:
            return self._cache[rel]
        self._cache[rel] = None
        path = self.out / rel
        if not path.is_file():
            self._problems[rel] = f"{rel} is absent, so what it would show is left out."
            return None
        try:
            value = parse(path.read_text(encoding="utf-8"))
        except errors as exc:
            log.warning("demo report: cannot read %s: %s", path, exc)
            self._problems[rel] = f"{rel} could not be read ({type(exc).__name__}: {exc}); it is left out."
            return None
        if not isinstance(value, dict):
            self._problems[rel] = f"{rel} does not hold a mapping; it is left out."
            return None
        self._cache[rel] = value
        return value

    def notes_for(self, *rels: str) -> list[Note]:
        return [Note(self._problems[rel]) for rel in rels if rel in self._problems]

    def figure(self, rel: str, title: str, caption: str) -> Block:
        return figure(self.out / rel, title, caption, label=rel)

    def csv_rows(self, rel: str) -> int | None:
        path = self.out / rel
        if not path.is_file():
            return None
        with open(path, newline="", encoding="utf-8") as handle:
            return max(sum(1 for _ in csv.reader(handle)) - 1, 0)


# ---------------------------------------------------------------- numbers


def _setting(value: Any) -> str:
    return {True: "yes", False: "no"}.get(value, str(value)) if isinstance(value, bool) else str(value)


def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def _num(value: Any) -> str:
    return "n/a" if _missing(value) else f"{value:.3f}"


def _pct(value: Any) -> str:
    return "n/a" if _missing(value) else f"{100 * value:.0f}%"


def _fmt(value: Any, lo: Any, hi: Any) -> str:
    return f"{_num(value)} [{_num(lo)}, {_num(hi)}]"


def _with_ci(section: dict[str, Any], key: str) -> str:
    lo, hi = (section.get("ci95") or {}).get(key) or (None, None)
    return _fmt(section.get(key), lo, hi)


def _ci(section: dict[str, Any], key: str) -> str:
    """`` [95% CI 0.790-0.833]`` for the one-line headline, or nothing when the interval is undefined."""
    lo, hi = (section.get("ci95") or {}).get(key) or (None, None)
    return "" if _missing(lo) or _missing(hi) else f" [95% CI {lo:.3f}-{hi:.3f}]"


__all__ = ["REPORT_HTML", "REPORT_MD", "ReportPaths", "best_method", "build_report", "key_numbers", "report_paths",
           "write_demo_report"]
