"""Explain many images at once: heatmaps and overlays at the original size, boxes, sentences, one table.

This is what ``xraylens explain`` runs. Inputs are files, folders (searched
recursively) or globs, or the rows of a MURA index. Every image gets a unique
output name derived from its MURA-relative or input-relative path (all MURA
files are called ``image1.png``...), e.g.
``XR_WRIST_patient11185_study1_positive_image1``. An unreadable file is
reported and skipped; the others are still explained.
"""

from __future__ import annotations

import glob
import json
import logging
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from xraylens.config import ExplainConfig
from xraylens.data.images import ImageReadError, read_image, sniff_kind, to_uint8
from xraylens.data.mura_layout import MURA_DIR, parse_image_path
from xraylens.data.preprocess import prepare
from xraylens.explain.cams import compute_cams
from xraylens.explain.regions import Box, describe, find_boxes, to_coco
from xraylens.models import LoadedModel

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".dcm", ".dicom"})
GRID_LIMIT = 16
PREVIEW_SIDE = 256  # side of the downscaled copies kept for grids and study figures
# What explain_images writes into ``out``: what ``--overwrite`` clears before a new run.
OUTPUTS = ("images", "studies", "explanations.csv", "boxes.json", "overlays_grid.png", "skipped.csv")


@dataclass
class ExplainItem:
    """One image to explain: where it is, what to call it, and what is known about it."""

    file: Path
    path: str  # MURA-relative or input-relative path, reported in tables
    label: int | None = None
    body_part: str | None = None
    study_id: str | None = None


@dataclass
class ExplainResult:
    out: Path
    rows: list[dict[str, Any]]
    skipped: list[tuple[str, str]]  # (path, reason)
    figures: list[Path] = field(default_factory=list)


# ---------------------------------------------------------------- inputs


def _mura_ref(file: Path):
    posix = file.as_posix()
    start = posix.rfind(f"{MURA_DIR}/")
    return parse_image_path(posix[start:]) if start >= 0 else None


def item_for(file: Path, rel: str) -> ExplainItem:
    """An item whose label/body part/study come from the MURA path when the file sits in a MURA tree."""
    ref = _mura_ref(file)
    if ref is None:
        return ExplainItem(file=file, path=rel)
    return ExplainItem(file=file, path=ref.path, label=int(ref.sign == "positive"), body_part=ref.body_part,
                       study_id=ref.study_id)


def _is_image(file: Path) -> bool:
    if file.name.startswith("."):
        return False
    if file.suffix.lower() in IMAGE_SUFFIXES:
        return True
    try:
        return sniff_kind(file) is not None
    except ImageReadError:
        return False


def collect_inputs(inputs: Sequence[str | Path]) -> tuple[list[ExplainItem], list[tuple[str, str]]]:
    """Files, folders (recursive; image files by extension or content) and globs -> items, plus what was not found."""
    items: list[ExplainItem] = []
    missing: list[tuple[str, str]] = []
    seen: set[Path] = set()

    def add(file: Path, rel: str) -> None:
        key = file.resolve()
        if key not in seen:
            seen.add(key)
            items.append(item_for(file, rel))

    for raw in inputs:
        given = Path(raw).expanduser()
        if given.is_dir():
            for file in sorted(p for p in given.rglob("*") if p.is_file() and _is_image(p)):
                add(file, file.relative_to(given).as_posix())
        elif given.is_file():
            add(given, given.name)
        elif glob.has_magic(str(raw)):
            matches = sorted(Path(m) for m in glob.glob(str(given), recursive=True))
            files = [m for m in matches if m.is_file() and _is_image(m)]
            if not files:
                missing.append((str(raw), "the pattern matches no image file"))
            for file in files:
                add(file, file.as_posix())
        else:
            missing.append((str(raw), "no such file or folder"))
    return items, missing


def items_from_table(table: pd.DataFrame) -> list[ExplainItem]:
    """Rows of a MURA index (columns path, file, label, body_part, study_id) -> items."""
    return [ExplainItem(file=Path(r.file), path=str(r.path), label=int(r.label), body_part=str(r.body_part),
                        study_id=str(r.study_id)) for r in table.itertuples(index=False)]


def unique_names(paths: Sequence[str]) -> list[str]:
    """File-system-safe, unique output stems from relative paths.

    MURA paths drop ``MURA-v1.1/<split>/`` and keep the rest
    (``XR_WRIST_patient11185_study1_positive_image1``); other paths keep their
    folders; remaining clashes get ``_2``, ``_3``...
    """
    stems = []
    for path in paths:
        ref = parse_image_path(path)
        parts = Path(ref.path).with_suffix("").parts[2:] if ref else Path(path).with_suffix("").parts
        parts = [p for p in parts if p not in ("", ".", "..", "/")]
        stem = re.sub(r"[^A-Za-z0-9._-]+", "_", "_".join(parts)).strip("._") or "image"
        stems.append(stem)
    taken: set[str] = set()
    names = []
    for stem in stems:
        name, k = stem, 2
        while name in taken:
            name, k = f"{stem}_{k}", k + 1
        taken.add(name)
        names.append(name)
    return names


# ---------------------------------------------------------------- the run


def _preview(image: np.ndarray, heatmap: np.ndarray, boxes: Sequence[Box]) -> tuple[np.ndarray, np.ndarray, list[Box]]:
    """Downscaled image/map and boxes for figures (full-size copies of hundreds of images would not fit)."""
    import cv2

    h, w = image.shape
    scale = min(1.0, PREVIEW_SIDE / max(h, w))
    if scale == 1.0:
        return image, heatmap, list(boxes)
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    small = [cv2.resize(a.astype(np.float32), size, interpolation=cv2.INTER_AREA) for a in (image, heatmap)]
    scaled = [b.mapped((b.x0 * scale, b.y0 * scale, b.x1 * scale, b.y1 * scale), size[0], size[1]) for b in boxes]
    return small[0], small[1], scaled


def _read_batch(items: Sequence[ExplainItem], names: Sequence[str], prep: Any,
                skipped: list[tuple[str, str]]) -> list[tuple[ExplainItem, str, np.ndarray, torch.Tensor, Any]]:
    """(item, name, original image, network input, letterbox) for every readable item; the rest go to ``skipped``."""
    readable = []
    for item, name in zip(items, names, strict=True):
        try:
            image = read_image(item.file)
        except ImageReadError as exc:
            log.warning("skipped %s: %s", item.path, exc)
            skipped.append((item.path, str(exc)))
            continue
        x, geometry = prepare(image, prep)
        readable.append((item, name, image, x, geometry))
    return readable


def _explain_one(out: Path, item: ExplainItem, name: str, image: np.ndarray, heat_orig: np.ndarray, p: float,
                 threshold: float, cfg: ExplainConfig) -> tuple[dict[str, Any], list[Box]]:
    """Boxes, sentence and the two PNGs of one image; returns its table row and boxes (original pixels)."""
    from xraylens.plots.heatmaps import overlay_with_boxes, save_rgb

    boxes = find_boxes(heat_orig, mode=cfg.threshold_mode, threshold=cfg.threshold,
                       min_area_fraction=cfg.min_box_area_fraction, nms_iou=cfg.nms_iou, max_boxes=cfg.max_boxes,
                       join_fraction=cfg.box_join_fraction)
    sentence = describe(p, threshold, boxes, heat_orig, body_part=item.body_part, method=cfg.method,
                        target=cfg.target)
    heat_path = save_rgb(out / "images" / f"{name}_heatmap.png", to_uint8(heat_orig))
    over_path = save_rgb(out / "images" / f"{name}_overlay.png", overlay_with_boxes(image, heat_orig, boxes))
    row = {
        "path": item.path, "label": item.label, "body_part": item.body_part, "probability": round(p, 6),
        "verdict": "abnormal" if p >= threshold else "normal", "method": cfg.method, "target": cfg.target,
        "heatmap_path": heat_path.relative_to(out).as_posix(), "overlay_path": over_path.relative_to(out).as_posix(),
        "boxes": json.dumps([b.to_dict() for b in boxes]), "explanation": sentence,
    }
    return row, boxes


def explain_images(
    loaded: LoadedModel,
    items: Sequence[ExplainItem],
    out: str | Path,
    cfg: ExplainConfig | None = None,
    *,
    batch_size: int = 8,
    max_studies: int = 20,
    study_views: bool = False,
    progress: bool = True,
    skipped: Iterable[tuple[str, str]] = (),
    overwrite: bool = False,
) -> ExplainResult:
    """Explain every item; write heatmaps, overlays, ``explanations.csv``, ``boxes.json`` and figures under ``out``.

    Heatmaps are mapped back to each original image (padding cropped, resized),
    so files, boxes and COCO coordinates are all in original pixels. A
    non-empty ``out`` is refused (:class:`~xraylens.output_dir.OutputExistsError`)
    unless ``overwrite``, which first removes the earlier run's outputs.
    """
    from tqdm.auto import tqdm

    from xraylens.output_dir import claim_output_dir
    from xraylens.plots.heatmaps import OverlayItem, wrap_name

    cfg = cfg or ExplainConfig()
    out = claim_output_dir(out, overwrite=overwrite, outputs=OUTPUTS, what="set of explanations")
    (out / "images").mkdir(parents=True, exist_ok=True)
    model, meta = loaded.model.eval(), loaded.meta
    names = unique_names([item.path for item in items])
    rows: list[dict[str, Any]] = []
    coco_records: list[dict[str, Any]] = []
    skipped = list(skipped)
    grid: list[OverlayItem] = []
    studies: dict[str, list[dict[str, Any]]] = {}
    bar = tqdm(total=len(items), desc=f"explain ({cfg.method})", unit="img", disable=not progress)
    for start in range(0, len(items), batch_size):
        batch = _read_batch(items[start : start + batch_size], names[start : start + batch_size],
                            meta.preprocessing, skipped)
        bar.update(min(batch_size, len(items) - start))
        if not batch:
            continue
        x = torch.stack([entry[3] for entry in batch])
        with torch.no_grad():
            probs = torch.sigmoid(model(x).reshape(-1) / meta.temperature).numpy()
        maps = compute_cams(model, meta.model.name, x, method=cfg.method, target=cfg.target, layer=cfg.layer,
                            batch_size=batch_size)
        for (item, name, image, _, geometry), heat, p in zip(batch, maps, probs, strict=True):
            heat_orig = np.clip(geometry.to_original(heat), 0.0, 1.0)  # (H, W) at the original image size
            row, boxes = _explain_one(out, item, name, image, heat_orig, float(p), meta.threshold, cfg)
            rows.append(row)
            coco_records.append({"file_name": item.path, "width": image.shape[1], "height": image.shape[0],
                                 "boxes": boxes, "probability": row["probability"], "category": cfg.target})
            wants_study = study_views and item.study_id and (item.study_id in studies or len(studies) < max_studies)
            if len(grid) < GRID_LIMIT or wants_study:
                small = _preview(image, heat_orig, boxes)
                if len(grid) < GRID_LIMIT:
                    grid.append(OverlayItem(*small, caption=f"{wrap_name(name)}\nP={p:.2f} {row['verdict']}"))
                if wants_study:
                    studies.setdefault(item.study_id, []).append(
                        {"name": name.rsplit("_", 1)[-1], "image": small[0], "heatmap": small[1], "boxes": small[2],
                         "probability": float(p)})
    bar.close()
    return _write_outputs(out, rows, coco_records, skipped, grid, studies, meta, cfg)


def _write_outputs(out: Path, rows: list[dict[str, Any]], coco_records: list[dict[str, Any]],
                   skipped: list[tuple[str, str]], grid: list, studies: dict[str, list[dict[str, Any]]],
                   meta: Any, cfg: ExplainConfig) -> ExplainResult:
    from xraylens.atomic import atomic_write_json, atomic_write_text
    from xraylens.plots.heatmaps import StudyView, plot_overlay_grid, plot_study

    columns = ["path", "label", "body_part", "probability", "verdict", "method", "target", "heatmap_path",
               "overlay_path", "boxes", "explanation"]
    table = pd.DataFrame(rows, columns=columns)
    table["label"] = table["label"].astype("Int64")
    atomic_write_text(out / "explanations.csv", table.to_csv(index=False))
    coco = to_coco(coco_records)
    coco["info"].update({"method": cfg.method, "target": cfg.target, "coordinates": "original image pixels"})
    atomic_write_json(out / "boxes.json", coco)
    if skipped:
        atomic_write_text(out / "skipped.csv", pd.DataFrame(skipped, columns=["path", "reason"]).to_csv(index=False))
    figures: list[Path] = []
    if grid:
        figures.append(plot_overlay_grid(grid, out / "overlays_grid.png",
                                         title=f"{cfg.method} maps ({cfg.target}); boxes: regions above threshold"))
    for study_id, views in studies.items():
        peak = max(v["probability"] for v in views) or 1.0
        # One colour scale for the study: each view's map weighted by its probability relative to the
        # study's most abnormal view, so a doubtful view is drawn fainter instead of renormalised.
        shown = [StudyView(v["name"], v["image"], v["heatmap"] * (v["probability"] / peak), v["probability"],
                           v["boxes"]) for v in views]
        name = re.sub(r"[^A-Za-z0-9._-]+", "_", study_id)
        figures.append(plot_study(shown, out / "studies" / f"{name}.png", title=study_id, threshold=meta.threshold))
    return ExplainResult(out=out, rows=rows, skipped=skipped, figures=figures)
