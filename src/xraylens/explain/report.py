"""``xraylens explain-eval``: measure every CAM method against ground-truth boxes and write a report.

On abnormal images that have true boxes (the synthetic dataset's
``boxes.csv``, or the boxes FracAtlas and GRAZPEDWRI-DX ship), per method
and per finding kind: pointing game, IoU of the predicted boxes, heat inside
the true boxes, each next to its chance level, and COCO AP50 / AP50:95 of
the boxes cut from the maps (:mod:`xraylens.explain.detection`); then
deletion/insertion faithfulness on a subsample and the model-randomisation
sanity check. Writes ``localization.json``, ``report.md``,
``methods_grid.png``, ``pointing_game.png``, ``sanity.png`` and, under
``coco/``, the true boxes and each method's boxes as COCO files.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from xraylens.data.boxes import TrueBox, find_box_table, read_box_table
from xraylens.data.images import ImageReadError, read_image
from xraylens.data.mura_layout import parse_image_path
from xraylens.data.preprocess import Letterbox, prepare
from xraylens.data.problems import DataError, format_problems
from xraylens.explain.cams import METHODS, check_method, compute_cams, methods_for, resolve_layer
from xraylens.explain.detection import SEVERAL_KINDS, ap_by_kind, kind_of_image, write_coco_files
from xraylens.explain.regions import Box, find_boxes
from xraylens.explain.scores import (
    box_accuracy_curve,
    cascading_randomisation,
    deletion_insertion,
    localization_scores,
    summarize_localization,
    top_box_hits,
)
from xraylens.models import LoadedModel, architecture, target_layer

log = logging.getLogger(__name__)

# Score-CAM needs one forward pass per feature channel per image (1,280 for MobileNetV2): opt in.
DEFAULT_EVAL_METHODS: tuple[str, ...] = tuple(m for m in METHODS if m != "scorecam")
# What _write puts in ``out``: what ``--overwrite`` clears before a new report.
REPORT_FILES = ("localization.json", "report.md", "methods_grid.png", "pointing_game.png", "box_accuracy.png",
                "sanity.png", "coco")


class ExplainEvalError(ValueError):
    """Inputs that cannot be evaluated; the message says what is missing and how to get it."""


@dataclass(frozen=True)
class EvalSettings:
    methods: tuple[str, ...] = DEFAULT_EVAL_METHODS
    limit: int = 200  # abnormal images with boxes, sampled by study-independent seed
    seed: int = 0
    batch_size: int = 16
    threshold_mode: str = "fraction"
    threshold: float = 0.5
    faithfulness_images: int = 16
    faithfulness_steps: int = 10
    sanity_images: int = 6
    sanity_steps: int = 4
    grid_images: int = 4
    layer: str | None = None  # CAM layer (dotted name); None = the architecture's default (last feature map)


@dataclass
class _Images:
    rows: pd.DataFrame
    x: torch.Tensor  # (N, C, S, S) network inputs
    geometry: list[Letterbox]
    truth: list[list[TrueBox]]
    previews: list[np.ndarray] = field(default_factory=list)  # originals of the first grid images
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (path, reason) of unreadable images


def read_true_boxes(path: str | Path) -> dict[str, list[TrueBox]]:
    """``boxes.csv`` (path,x0,y0,x1,y1,kind; MURA-relative paths, original pixels) -> boxes per image path."""
    try:
        return read_box_table(path)
    except DataError as exc:
        raise ExplainEvalError(str(exc)) from exc


def _load(table: pd.DataFrame, truth: dict[str, list[TrueBox]], loaded: LoadedModel, grid: int,
          progress: bool) -> _Images:
    from tqdm.auto import tqdm

    keep, tensors, geometry, boxes, previews, skipped = [], [], [], [], [], []
    for i, row in enumerate(tqdm(table.itertuples(index=False), total=len(table), desc="load", disable=not progress)):
        try:
            image = read_image(row.file)
        except ImageReadError as exc:
            log.warning("skipped %s: %s", row.path, exc)
            skipped.append((row.path, str(exc)))
            continue
        x, lb = prepare(image, loaded.meta.preprocessing)
        keep.append(i)
        tensors.append(x)
        geometry.append(lb)
        boxes.append(truth[row.path])
        if len(previews) < grid:
            previews.append(image)
    if not tensors:
        raise ExplainEvalError("none of the selected images could be read: "
                               + "; ".join(f"{p}: {r}" for p, r in skipped[:3]))
    return _Images(table.iloc[keep].reset_index(drop=True), torch.stack(tensors), geometry, boxes, previews,
                   skipped)


def _probabilities(loaded: LoadedModel, x: torch.Tensor, batch_size: int) -> np.ndarray:
    with torch.no_grad():
        logits = torch.cat([loaded.model(part).reshape(-1) for part in x.split(batch_size)])
    return torch.sigmoid(logits / loaded.meta.temperature).numpy()


def _truth_and_rows(loaded: LoadedModel, data: str | Path, boxes_csv: str | Path | None, split: str,
                    settings: EvalSettings, progress: bool, format: str | None
                    ) -> tuple[dict[str, list[TrueBox]], pd.DataFrame, str, dict[str, Any]]:
    """True boxes (``boxes_csv``, else the dataset's own, else a ``boxes.csv`` beside it), the images to score,
    where the boxes came from, and the summary of what indexing skipped (reported, never dropped unseen).

    The split is rebuilt with the checkpoint's data settings (format, test
    split of the box datasets), so ``valid`` is the split training left out.
    """
    from xraylens.data.formats import open_for

    index = open_for(data, loaded.meta.experiment.get("data") or {}, format=format, splits=(split,),
                     progress=progress)
    if index.problems:
        log.warning("indexing %s skipped %s\n(the full list: `xraylens data summary %s`)", index.root,
                    format_problems(index.problems), data)
    if boxes_csv is None and index.boxes is not None:
        truth, source = index.boxes, f"the boxes of {index.root}"
    else:
        found = Path(boxes_csv) if boxes_csv is not None else find_box_table(data, index.root)
        if found is None:
            raise ExplainEvalError(f"{data} has no boxes of its own and no boxes.csv: give a box table with --boxes "
                                   "(path,x0,y0,x1,y1,kind; paths as the index names them, original pixels)")
        truth, source = read_true_boxes(found), str(found)
    return truth, _select(index.table, split, truth, source, settings), source, index.problem_summary()


def _select(table: pd.DataFrame, split: str, truth: dict[str, list[TrueBox]], source: str,
            settings: EvalSettings) -> pd.DataFrame:
    """Abnormal images of ``split`` that have true boxes; a seeded sample of ``limit`` of them, sorted by path."""
    table = table[(table["label"] == 1) & table["path"].isin([p for p, b in truth.items() if b])]
    if table.empty:
        raise ExplainEvalError(
            f"no abnormal image of the {split} split has a box in {source}; the box paths must be the index's "
            "(MURA-relative like MURA-v1.1/valid/XR_.../image1.png, or relative to the FracAtlas / GRAZPEDWRI-DX "
            "folder) and come from the same dataset as --data")
    if settings.limit and len(table) > settings.limit:
        table = table.sample(n=settings.limit, random_state=settings.seed)
    return table.sort_values("path")


def image_kinds(truth: Sequence[Sequence[TrueBox]]) -> list[str]:
    """The per-kind keys these images fill: each single kind in name order, then :data:`SEVERAL_KINDS` if any."""
    found = {kind_of_image(boxes) for boxes in truth} - {None}
    return sorted(found - {SEVERAL_KINDS}) + ([SEVERAL_KINDS] if SEVERAL_KINDS in found else [])


def _localise(maps: np.ndarray, images: _Images, called: np.ndarray, kinds: list[str],
              settings: EvalSettings) -> tuple[dict[str, Any], list[list[Box]], list[np.ndarray]]:
    """Per-kind localisation summaries (with AP) of one method's maps, its boxes per image, the grid's maps."""
    per_kind: dict[str, list[dict[str, float]]] = {"all": [], "true_positives": [], **{k: [] for k in kinds}}
    sweep: dict[str, list[np.ndarray]] = {k: [] for k in per_kind}  # top-box hits per threshold
    predicted: list[list[Box]] = []
    grid_maps = []
    for i, (heat, lb, boxes) in enumerate(zip(maps, images.geometry, images.truth, strict=True)):
        heat_orig = np.clip(lb.to_original(heat), 0.0, 1.0)  # scored in original pixels, padding cropped
        predicted.append(find_boxes(heat_orig, mode=settings.threshold_mode, threshold=settings.threshold))
        # per kind: only the images whose findings are all of it (the map has no class; detection.py says why)
        truths = {"all": boxes, **({"true_positives": boxes} if called[i] else {}),
                  **({kind_of_image(boxes): boxes} if boxes else {})}
        for key, kind_boxes in truths.items():
            scores = per_kind["all"][-1] if key == "true_positives" else localization_scores(
                heat_orig, kind_boxes, predicted[-1])
            per_kind[key].append(scores)
        for key, hits in top_box_hits(heat_orig, truths).items():
            sweep[key].append(hits)
        if i < len(images.previews):
            grid_maps.append(heat_orig)
    summaries = {k: {**summarize_localization(v), "box_sweep": box_accuracy_curve(np.array(sweep[k]))}
                 for k, v in per_kind.items()}
    ap = ap_by_kind(predicted, images.truth, kinds)
    tp = np.flatnonzero(called)
    ap["true_positives"] = ap_by_kind([predicted[i] for i in tp], [images.truth[i] for i in tp], [])["all"]
    for key, summary in summaries.items():
        summary.update(ap50=ap[key]["ap50"], ap50_95=ap[key]["ap50_95"])
    return summaries, predicted, grid_maps


def evaluate_explanations(
    loaded: LoadedModel,
    data: str | Path,
    boxes_csv: str | Path | None,
    out: str | Path,
    settings: EvalSettings | None = None,
    *,
    split: str = "valid",
    progress: bool = True,
    format: str | None = None,
    overwrite: bool = False,
) -> dict[str, Any]:
    """Score each method in ``settings.methods``; write the report files under ``out``; return the JSON dict.

    ``boxes_csv=None`` takes the dataset's own boxes (FracAtlas, GRAZPEDWRI-DX) or a ``boxes.csv`` in
    the data folder; ``format`` overrides the checkpoint's ``data.format``. A non-empty ``out`` is
    refused (:class:`~xraylens.output_dir.OutputExistsError`) unless ``overwrite``. Images that cannot
    be read are left out and listed under ``skipped`` in the report, each with its reason.
    """
    from tqdm.auto import tqdm

    from xraylens.output_dir import claim_output_dir

    settings = settings or EvalSettings()
    if settings.methods == DEFAULT_EVAL_METHODS:  # the defaults: every method this model can give
        settings = dataclasses.replace(settings, methods=methods_for(loaded.meta.model.name, DEFAULT_EVAL_METHODS))
    unknown = [m for m in settings.methods if m not in METHODS]
    if unknown:
        raise ExplainEvalError(f"unknown method(s) {', '.join(unknown)}; available: {', '.join(METHODS)}")
    for method in settings.methods:
        try:
            check_method(loaded.meta.model.name, method)
        except ValueError as exc:
            raise ExplainEvalError(str(exc)) from exc
    if settings.layer is not None:  # fail before minutes of image loading, not after
        try:
            layer = resolve_layer(loaded.model, loaded.meta.model.name, settings.layer)
        except ValueError as exc:
            raise ExplainEvalError(str(exc)) from exc
        if "cam" in settings.methods and layer is not target_layer(loaded.model, loaded.meta.model.name):
            raise ExplainEvalError(f"the classic CAM ('cam') only works at the layer that feeds the head; "
                                   f"leave it out of --methods to score layer {settings.layer}")
    out = claim_output_dir(out, overwrite=overwrite, outputs=REPORT_FILES, what="explanation evaluation")
    truth, rows, source, index_problems = _truth_and_rows(loaded, data, boxes_csv, split, settings, progress, format)
    images = _load(rows, truth, loaded, settings.grid_images, progress)
    model, name, meta = loaded.model.eval(), loaded.meta.model.name, loaded.meta
    probs = _probabilities(loaded, images.x, settings.batch_size)
    called = probs >= meta.threshold
    kinds = image_kinds(images.truth)
    # Faithfulness tracks P(abnormal): measure it where the model says abnormal (all images if it never does).
    faith_idx = (np.flatnonzero(called) if called.any() else np.arange(len(called)))[: settings.faithfulness_images]
    # The sanity check needs maps with something in them: images called abnormal first.
    sanity_idx = np.concatenate([np.flatnonzero(called), np.flatnonzero(~called)])[: settings.sanity_images]
    results: dict[str, Any] = {
        "checkpoint": str(loaded.path), "model": name, "split": split, "boxes": source, "n_images": len(images.rows),
        "images": images.rows["path"].tolist(),
        "kinds": kinds, "settings": asdict(settings),
        "layer": settings.layer or architecture(name).target_layer,  # what gradient CAMs read
        "classifier": {"mean_probability": float(probs.mean()), "called_abnormal": float(called.mean()),
                       "threshold": meta.threshold},
        "localization": {}, "faithfulness": {}, "sanity": {}, "seconds_per_image": {},
        "skipped": [{"path": path, "reason": reason} for path, reason in images.skipped],
        "index_problems": index_problems,
    }
    grid_maps: dict[str, list[np.ndarray]] = {}
    predicted: dict[str, list[list[Box]]] = {}
    for method in settings.methods:
        started = time.perf_counter()
        maps = np.concatenate([
            compute_cams(model, name, part, method=method, layer=settings.layer, batch_size=settings.batch_size)
            for part in tqdm(images.x.split(settings.batch_size), desc=f"cams {method}", disable=not progress)])
        results["seconds_per_image"][method] = (time.perf_counter() - started) / len(maps)
        results["localization"][method], predicted[method], grid_maps[method] = _localise(
            maps, images, called, kinds, settings)
        if len(faith_idx):
            results["faithfulness"][method] = _faith_summary(deletion_insertion(
                model, images.x[faith_idx], maps[faith_idx], steps=settings.faithfulness_steps,
                temperature=meta.temperature))
        if settings.sanity_images:
            results["sanity"][method] = cascading_randomisation(
                model, name, images.x[sanity_idx],
                lambda m, x, method=method: compute_cams(m, name, x, method=method, layer=settings.layer,
                                                         batch_size=settings.batch_size),
                max_steps=settings.sanity_steps, seed=settings.seed)
    if len(faith_idx):
        results["faithfulness"]["random order"] = _faith_summary(deletion_insertion(
            model, images.x[faith_idx], None, steps=settings.faithfulness_steps, temperature=meta.temperature,
            seed=settings.seed))
    results["coco_files"] = _write(out, results, images, grid_maps, predicted)
    return results


def _faith_summary(curves: dict[str, np.ndarray]) -> dict[str, Any]:
    return {"n": len(curves["deletion_auc"]), "deletion_auc": float(curves["deletion_auc"].mean()),
            "insertion_auc": float(curves["insertion_auc"].mean()),
            "deletion_curve": curves["deletion_curve"].mean(0).round(4).tolist(),
            "insertion_curve": curves["insertion_curve"].mean(0).round(4).tolist()}


def _write(out: Path, results: dict[str, Any], images: _Images, grid_maps: dict[str, list[np.ndarray]],
           predicted: dict[str, list[list[Box]]]) -> dict[str, str]:
    """Every report file; returns the COCO files written (name -> path relative to ``out``)."""
    from xraylens.atomic import atomic_write_json, atomic_write_text
    from xraylens.plots.heatmaps import plot_box_accuracy, plot_methods_grid, plot_pointing_game, plot_sanity

    out.mkdir(parents=True, exist_ok=True)
    coco = write_coco_files(out, list(images.rows["path"]), [(lb.orig_h, lb.orig_w) for lb in images.geometry],
                            images.truth, predicted)
    atomic_write_json(out / "localization.json", {**results, "coco_files": coco})
    atomic_write_text(out / "report.md", render_report(results))
    if images.previews and grid_maps:
        shown = len(images.previews)
        captions = [_caption(p) for p in images.rows["path"][:shown]]
        plot_methods_grid(images.previews, grid_maps, images.truth[:shown], out / "methods_grid.png",
                          predicted={m: boxes[:shown] for m, boxes in predicted.items()}, captions=captions)
    plot_pointing_game({m: s["all"] for m, s in results["localization"].items()}, out / "pointing_game.png")
    plot_box_accuracy({m: s["all"]["box_sweep"] for m, s in results["localization"].items()},
                      out / "box_accuracy.png")
    if results["sanity"]:
        plot_sanity(results["sanity"], out / "sanity.png")
    return coco


def _caption(path: str) -> str:
    """``XR_WRIST/study1_positive`` for MURA paths, the file's stem for the others."""
    ref = parse_image_path(path)
    return f"{ref.body_part}/{ref.study}_{ref.sign}" if ref else Path(path).stem


# ---------------------------------------------------------------- report.md


def _pct(value: float | None) -> str:
    return "–" if value is None or value != value else f"{100 * value:.0f}%"


def _num(value: float | None) -> str:
    return "–" if value is None or value != value else f"{value:.3f}"


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(r) + " |" for r in rows])


def localization_row(method: str, s: dict[str, Any]) -> list[str]:
    """One method's localisation summary as the cells of ``LOC_HEADER`` (shared with the demo report)."""
    if not s.get("n"):
        return [method, "0"] + ["–"] * (len(LOC_HEADER) - 2)
    lo, hi = s["pointing_game_ci95"]
    return [method, str(s["n"]), f"{_pct(s['pointing_game'])} [{_pct(lo)}, {_pct(hi)}]", _pct(s["pointing_chance"]),
            _pct(s["energy_inside"]), _pct(s["energy_chance"]), _num(s["mean_iou"]), _pct(s["hit_iou_0.3"]),
            _pct(s["hit_iou_0.5"]), _pct(s.get("hit_iou_0.3_top_box")), _pct(s.get("box_precision_0.3")),
            _num(s.get("boxes_per_image")), _num(s["iou_whole_image_baseline"]), _num(s.get("ap50")),
            _num(s.get("ap50_95"))]


LOC_HEADER = ("method", "n", "pointing game [95% CI]", "chance", "energy in boxes", "chance", "mean IoU",
              "IoU≥0.3", "IoU≥0.5", "top box IoU≥0.3", "found boxes IoU≥0.3", "boxes / image",
              "IoU whole-image box", "AP50", "AP50:95")


def _sweep_section(loc: dict[str, Any], settings: dict[str, Any]) -> list[str]:
    """Top-box accuracy (IoU >= 0.3) per fraction threshold, per method: where the boxes are cut matters."""
    curves = {m: by_kind["all"].get("box_sweep") for m, by_kind in loc.items()}
    curves = {m: c for m, c in curves.items() if c and c["accuracy"]}
    if not curves:
        return []
    thresholds = next(iter(curves.values()))["thresholds"]
    rows = [[m, *[_pct(a) for a in c["accuracy"]], f"{_pct(c['max_accuracy'])} at {c['best_threshold']:g}"]
            for m, c in curves.items()]
    used = (f"{settings.get('threshold_mode', 'fraction')} {settings.get('threshold', 0.5):g}")
    return ["## Where to cut the boxes: top-box accuracy by threshold", "",
            "Share of images whose highest-scoring box reaches IoU ≥ 0.3 with a true box, when the map is cut at "
            "each fraction of its peak (boxes above were cut at " + used + "). The best column is MaxBoxAcc "
            "(Choe et al., CVPR 2020): chosen on these same images, it is an upper bound. To use a threshold, "
            "pick it on another split (`explain-eval --split train`) and pass it to "
            "`xraylens explain --threshold`.", "",
            _table(["method", *[f"{t:g}" for t in thresholds], "best"], rows), ""]


def render_report(results: dict[str, Any]) -> str:
    """The markdown report: one comparison table, per-kind tables, faithfulness, sanity, and how to read them."""
    loc, faith, sanity = results["localization"], results["faithfulness"], results["sanity"]
    clf = results["classifier"]
    parts = [
        f"# Explanation quality: {results['model']} on {results['split']}",
        "",
        f"{results['n_images']} abnormal images with ground-truth boxes (from {results.get('boxes', 'the box table')});"
        " the classifier calls "
        f"{_pct(clf['called_abnormal'])} of them abnormal (threshold {clf['threshold']:.2f}, mean P = "
        f"{clf['mean_probability']:.2f}). Checkpoint: `{results['checkpoint']}`. CAM layer: "
        f"`{results.get('layer') or results['settings'].get('layer') or 'the default'}`"
        f"{'' if results['settings'].get('layer') else ' (the architecture default)'}.",
        "",
        "## Methods compared",
        "",
    ]
    header = ["method", "pointing game", "chance", "energy in boxes", "mean IoU", "IoU≥0.3", "AP50", "AP50:95",
              "deletion AUC ↓", "insertion AUC ↑", "sanity check", "s / image"]
    rows = []
    for method, by_kind in loc.items():
        s, f = by_kind["all"], faith.get(method, {})
        verdict = sanity.get(method, {}).get("verdict", "–")
        if sanity.get(method, {}).get("head_insensitive") and verdict == "PASS":
            verdict = "PASS (head-insensitive)"
        rows.append([method, _pct(s.get("pointing_game")), _pct(s.get("pointing_chance")),
                     _pct(s.get("energy_inside")), _num(s.get("mean_iou")), _pct(s.get("hit_iou_0.3")),
                     _num(s.get("ap50")), _num(s.get("ap50_95")), _num(f.get("deletion_auc")), _num(f.get("insertion_auc")), verdict,
                     f"{results['seconds_per_image'][method]:.3f}"])
    parts += [_table(header, rows), ""]
    parts += _sweep_section(loc, results["settings"])
    if "random order" in faith:
        r = faith["random order"]
        parts += [f"Random pixel order (faithfulness baseline): deletion AUC {_num(r['deletion_auc'])}, insertion AUC "
                  f"{_num(r['insertion_auc'])} on {r['n']} images (those the classifier calls abnormal, if any). "
                  "A faithful map deletes below and inserts above these.", ""]
    for kind in ["all", "true_positives", *results["kinds"]]:
        title = {"all": "All findings", "true_positives": "Images the classifier calls abnormal",
                 SEVERAL_KINDS: "images with findings of several kinds (against all their boxes)"}.get(
                     kind, f"{kind} (images whose findings are all {kind})")
        parts += [f"## Localisation: {title}", "",
                  _table(LOC_HEADER, [localization_row(m, by_kind.get(kind, {})) for m, by_kind in loc.items()]), ""]
    steps = max((len(r["steps"]) for r in sanity.values()), default=0)
    if sanity and steps:
        names = next(r["steps"] for r in sanity.values() if len(r["steps"]) == steps)
        header = ["method", *[f"…{s['randomised'][-1]}" for s in names], "verdict", "images"]
        rows = [[m, *[f"{s['spearman']:.2f} / {s['ssim']:.2f}" for s in r["steps"]],
                 *(["–"] * (steps - len(r["steps"]))), r["verdict"], str(r["n_images"])]
                for m, r in sanity.items()]
        parts += ["## Sanity: cascading model randomisation", "",
                  "Spearman rank correlation / SSIM between the original maps and the maps after randomising "
                  "the network from the head down (cumulative). A method FAILS when its maps still correlate "
                  f"(Spearman ≥ {next(iter(sanity.values()))['max_correlation']}) with the top of the network destroyed.",
                  "", _table(header, rows), ""]
        parts += [f"- **{m}**: {r['note']}" for m, r in sanity.items()] + [""]
    parts += [_HOW_TO_READ]
    return "\n".join(parts)


_HOW_TO_READ = """## How to read this

- **Pointing game**: share of images whose heatmap maximum lies inside a true box of that image.
  Per kind, only the images whose findings are all of that kind: the map has no class, so on a film with a
  lesion and a plate a peak on the plate is a right answer, not a missed lesion. Films with several kinds
  have their own table, scored against all their boxes. **Chance** is what a uniformly random point
  scores: the mean share of the image the boxes cover. A method is only useful well above chance; the 95%
  interval is Wilson's.
- **Energy in boxes**: share of the map's total heat inside the true boxes; a uniform map scores the chance
  column.
- **Mean IoU / IoU≥t**: the best-matching predicted box (thresholded map, connected components) against the
  true boxes. "IoU whole-image box" is the IoU of predicting the entire image: beat it.
- **Top box IoU≥0.3**: the same for the highest-scoring box only, the one a reader looks at first.
  **Found boxes IoU≥0.3**: of all the boxes cut from the maps, the share that overlap a true box at
  IoU ≥ 0.3; with **boxes / image** it says whether a method wins by drawing many boxes.
- **AP50 / AP50:95**: COCO average precision of those boxes, ranked by their score (peak x mean heat), at
  IoU 0.5 and averaged over IoU 0.5-0.95 (torchmetrics on pycocotools). Class-agnostic: overall, every true
  box is one class; per kind, the images whose findings are all of that kind. Only images with true boxes are
  scored, so no normal film adds a false positive. `coco/` holds the true and predicted boxes as COCO files
  (`ground_truth.json`, `detections_<method>.json`) to check these numbers with other tools. Published
  detectors trained on boxes are the yardstick (README, "Real datasets with boxes"); a classifier's maps
  were never trained to draw boxes.
- **Deletion / insertion AUC** (subsample): P(abnormal) as the most salient pixels are replaced by a blurred
  copy (deletion: lower is better) or restored into the blurred image (insertion: higher is better).
- **Sanity check**: maps that survive randomising the weights explain the image, not the model
  (Adebayo et al. 2018). "Head-insensitive": the map did not change when only the classifier head was
  randomised (expected for Eigen-CAM, which ignores the class).
- CAMs live on one feature map, the CAM layer above (stride 32 for the torchvision models: a 4x4 grid at
  128 px input; stride 16 for the mil_* models: 32x32 at 512 px; the stacked model's own map, stride 8),
  and regions within 6% of the long side are boxed together, so small findings cannot be boxed
  tightly on a coarse grid; IoU is the harshest score here. Score-CAM runs one forward pass per
  feature channel per image and is left out by default (add it with --methods and a small --limit).
"""
