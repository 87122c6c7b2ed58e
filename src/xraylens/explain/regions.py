"""From a heatmap to boxes, region words and one truthful sentence.

A heatmap is a (H, W) array in [0, 1]. It is thresholded, split into connected
components, and each component becomes a :class:`Box` scored by its peak heat
times its mean heat (a sharp, solid blob beats a faint wide one). Boxes are in
the pixel coordinates of the heatmap given (x1/y1 exclusive), so a heatmap
mapped back to the original image gives boxes in original pixels.

The sentence says what the map is and no more: an abnormal verdict says where
the activation concentrates; a normal verdict says the map shows where the
model looked, not a finding. Region words are image-relative ("upper-left of
the image"), never anatomical: the model knows nothing about anatomy.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from scipy import ndimage

THRESHOLD_MODES: tuple[str, ...] = ("fraction", "percentile", "otsu")


@dataclass(frozen=True)
class Box:
    """One region of high activation; x1/y1 exclusive, in the heatmap's pixel coordinates."""

    x0: float
    y0: float
    x1: float
    y1: float
    score: float  # peak heat x mean heat inside the component, in [0, 1]
    area_fraction: float  # box area / heatmap area
    region: str  # "upper-left" ... "lower-right", "centre"

    @property
    def width(self) -> float:
        return self.x1 - self.x0

    @property
    def height(self) -> float:
        return self.y1 - self.y0

    def xyxy(self) -> tuple[float, float, float, float]:
        return (self.x0, self.y0, self.x1, self.y1)

    def xywh(self) -> list[float]:
        return [self.x0, self.y0, self.width, self.height]

    def to_dict(self) -> dict[str, Any]:
        return {k: (round(v, 4) if isinstance(v, float) else v) for k, v in asdict(self).items()}

    def mapped(self, box: tuple[float, float, float, float], width: float, height: float) -> Box:
        """The same region at other coordinates (e.g. ``Letterbox.box_to_original``) in a width x height image."""
        x0, y0, x1, y1 = box
        area = max(x1 - x0, 0.0) * max(y1 - y0, 0.0) / max(width * height, 1e-12)
        region = region_word((x0 + x1) / 2, (y0 + y1) / 2, width, height)
        return Box(float(x0), float(y0), float(x1), float(y1), self.score, float(area), region)


# ---------------------------------------------------------------- words


def region_word(cx: float, cy: float, w: float, h: float) -> str:
    """Where (cx, cy) lies in a w x h image on a 3x3 grid: "upper-left" ... "lower-right"; "centre" in the middle."""
    if w <= 0 or h <= 0:
        raise ValueError(f"image size must be positive, got {w} x {h}")
    col = min(max(int(3 * cx / w), 0), 2)
    row = min(max(int(3 * cy / h), 0), 2)
    vertical = ("upper", "middle", "lower")[row]
    horizontal = ("left", "centre", "right")[col]
    return "centre" if (row, col) == (1, 1) else f"{vertical}-{horizontal}"


# ---------------------------------------------------------------- thresholds and boxes


def threshold_value(heatmap: np.ndarray, mode: str = "fraction", threshold: float = 0.5) -> float:
    """The heat level a pixel must reach to belong to a region.

    ``fraction``: ``threshold`` x the map's maximum. ``percentile``: the
    ``threshold`` quantile of the map's values (0.9 keeps the hottest 10 %; a
    value above 1 is read as a percent, 90 = 0.9). ``otsu``: Otsu's level on a
    256-bin histogram (``threshold`` unused).
    """
    if mode not in THRESHOLD_MODES:
        raise ValueError(f"unknown threshold mode {mode!r}; available: {', '.join(THRESHOLD_MODES)}")
    values = np.asarray(heatmap, dtype=np.float64)
    if mode == "fraction":
        if not 0 < threshold <= 1:
            raise ValueError(f"fraction threshold must be in (0, 1], got {threshold}")
        return float(threshold * values.max())
    if mode == "percentile":
        q = threshold / 100 if threshold > 1 else threshold
        if not 0 <= q < 1:
            raise ValueError(f"percentile threshold must be in [0, 1) or (1, 100), got {threshold}")
        return float(np.quantile(values, q))
    return otsu_level(values)


def otsu_level(values: np.ndarray, bins: int = 256) -> float:
    """Otsu's threshold: the level that maximises the between-class variance of the histogram."""
    lo, hi = float(values.min()), float(values.max())
    if hi - lo < 1e-12:
        return hi
    hist, edges = np.histogram(values, bins=bins, range=(lo, hi))
    centres = (edges[:-1] + edges[1:]) / 2
    weight0 = np.cumsum(hist)
    weight1 = weight0[-1] - weight0
    sum0 = np.cumsum(hist * centres)
    mean0 = sum0 / np.maximum(weight0, 1)
    mean1 = (sum0[-1] - sum0) / np.maximum(weight1, 1)
    between = weight0 * weight1 * (mean0 - mean1) ** 2
    return float(edges[int(np.argmax(between[:-1])) + 1])


JOIN_FRACTION = 0.06  # 31 px at 512 px: a stride-16 map's cells two apart are one region


def find_boxes(
    heatmap: np.ndarray,
    *,
    mode: str = "fraction",
    threshold: float = 0.5,
    min_area_fraction: float = 0.002,
    nms_iou: float = 0.3,
    max_boxes: int = 5,
    keep_peak: bool = True,
    join_fraction: float = JOIN_FRACTION,
) -> list[Box]:
    """Boxes around the connected regions above the threshold, best score first.

    Components (8-connected) smaller than ``min_area_fraction`` of the map are
    dropped, except the one that holds the map's maximum: a sharp peak over a
    hairline fracture is the finding, not noise (a 25 x 24 px fracture box is
    0.3 % of a 512 px film, and the size filter alone left HiResCAM with 0.4
    boxes per image on realistic synthetic films; ``keep_peak=False`` filters
    it like the rest, as before 2026-12-03). Overlapping boxes (IoU above ``nms_iou``, or one inside another)
    are merged into their union with the higher score: two blobs whose boxes
    overlap that much are one region to a reader. A flat or all-zero map has
    no boxes.

    Components that come within ``join_fraction`` of the map's long side of
    each other (city-block distance) are one region, boxed together: a plate's
    screw heads light up one by one, and each was a box too small for the
    plate's (on the demo's films 44 % of the hardware boxes were right; with
    the join 59 %, no kind worse, top box right 66 % -> 73 %; README,
    "Per kind, and a finer native map"). 0 boxes every component on its own.
    """
    heat = np.asarray(heatmap, dtype=np.float32)
    if heat.ndim != 2:
        raise ValueError(f"heatmap must be 2-D (H, W), got shape {heat.shape}")
    h, w = heat.shape
    if heat.size == 0 or float(heat.max()) <= 0 or float(heat.max() - heat.min()) < 1e-6:
        return []
    level = threshold_value(heat, mode, threshold)
    mask = heat >= level if mode == "fraction" else heat > level
    if not mask.any():  # percentile/otsu at the maximum: keep the peak itself
        mask = heat >= heat.max()
    if join_fraction > 0:  # label the grown mask, keep the labels on the mask's own pixels
        grown = ndimage.binary_dilation(mask, iterations=max(1, math.ceil(join_fraction * max(h, w) / 2)))
        labels, count = ndimage.label(grown, structure=np.ones((3, 3), bool))
        labels = labels * mask
    else:
        labels, count = ndimage.label(mask, structure=np.ones((3, 3), bool))
    peak_label = int(labels.flat[int(np.argmax(np.where(mask, heat, -np.inf)))])
    candidates: list[tuple[float, list[float]]] = []
    for index, slices in enumerate(ndimage.find_objects(labels), start=1):
        if slices is None:
            continue
        component = labels[slices] == index
        if (index != peak_label or not keep_peak) and component.sum() < min_area_fraction * h * w:
            continue
        values = heat[slices][component]
        score = float(values.max() * values.mean())
        ys, xs = slices
        candidates.append((score, [float(xs.start), float(ys.start), float(xs.stop), float(ys.stop)]))
    merged = merge_overlapping(candidates, nms_iou)[:max_boxes]
    return [_box(coords, score, w, h) for score, coords in merged]


def _box(coords: list[float], score: float, w: int, h: int) -> Box:
    x0, y0, x1, y1 = coords
    return Box(x0, y0, x1, y1, round(score, 6), (x1 - x0) * (y1 - y0) / (w * h),
               region_word((x0 + x1) / 2, (y0 + y1) / 2, w, h))


def box_iou(a: Iterable[float], b: Iterable[float]) -> float:
    """Intersection over union of two (x0, y0, x1, y1) boxes with exclusive ends."""
    ax0, ay0, ax1, ay1 = a
    bx0, by0, bx1, by1 = b
    inter = max(0.0, min(ax1, bx1) - max(ax0, bx0)) * max(0.0, min(ay1, by1) - max(ay0, by0))
    union = (ax1 - ax0) * (ay1 - ay0) + (bx1 - bx0) * (by1 - by0) - inter
    return float(inter / union) if union > 0 else 0.0


def _contains(outer: list[float], inner: list[float]) -> bool:
    return outer[0] <= inner[0] and outer[1] <= inner[1] and outer[2] >= inner[2] and outer[3] >= inner[3]


def merge_overlapping(candidates: list[tuple[float, list[float]]], iou: float) -> list[tuple[float, list[float]]]:
    """Greedy NMS that merges: highest score first; a box overlapping a kept one is absorbed into it (union).

    Repeats until no two kept boxes overlap, since a union can grow into a
    neighbour that did not overlap before.
    """
    boxes = sorted(candidates, key=lambda item: -item[0])
    changed = True
    while changed:
        changed = False
        kept: list[tuple[float, list[float]]] = []
        for score, coords in boxes:
            for i, (kept_score, kept_coords) in enumerate(kept):
                if (box_iou(coords, kept_coords) > iou or _contains(kept_coords, coords)
                        or _contains(coords, kept_coords)):
                    union = [min(coords[0], kept_coords[0]), min(coords[1], kept_coords[1]),
                             max(coords[2], kept_coords[2]), max(coords[3], kept_coords[3])]
                    kept[i] = (max(score, kept_score), union)
                    changed = True
                    break
            else:
                kept.append((score, coords))
        boxes = sorted(kept, key=lambda item: -item[0])
    return boxes


# ---------------------------------------------------------------- the sentence


def heat_centroid(heatmap: np.ndarray, top_fraction: float = 0.1) -> tuple[float, float] | None:
    """Heat-weighted centre (x, y) of the hottest ``top_fraction`` of pixels; None for a flat map."""
    heat = np.asarray(heatmap, dtype=np.float64)
    if heat.size == 0 or heat.max() - heat.min() < 1e-6:
        return None
    level = np.quantile(heat, 1 - top_fraction)
    weights = np.where(heat >= level, heat, 0.0)
    ys, xs = np.indices(heat.shape)
    total = weights.sum()
    return float((xs * weights).sum() / total) + 0.5, float((ys * weights).sum() / total) + 0.5


def _percent(fraction: float) -> str:
    value = 100 * fraction
    return "<1%" if value < 1 else f"{value:.0f}%"


def describe(
    probability: float,
    threshold: float,
    boxes: list[Box],
    heatmap: np.ndarray,
    *,
    body_part: str | None = None,
    method: str = "gradcam",
    target: str = "abnormal",
) -> str:
    """Verdict and probability, then where the map concentrates, how many regions and how large.

    For a normal verdict the sentence says plainly that the map shows what the
    model looked at, not a finding. ``target`` is what the map explains
    ("normal" maps show evidence against abnormality).
    """
    from xraylens.explain.cams import METHOD_LABELS, TARGET_AGNOSTIC

    abnormal = probability >= threshold
    verdict = "Abnormal" if abnormal else "Normal"
    subject = f" {body_part.removeprefix('XR_').lower()} radiograph" if body_part else ""
    head = f"{verdict}{subject} (P(abnormal) = {probability:.2f}, decision threshold {threshold:.2f})."
    label = METHOD_LABELS.get(method, method)
    h, w = np.asarray(heatmap).shape[:2]
    centre = heat_centroid(heatmap)
    if centre is None:
        where = f" The {label} map is flat: no region stands out, so it does not point anywhere."
    else:
        place = region_word(centre[0], centre[1], w, h)
        where = f" The {label} activation concentrates in the {place} of the image"
        if boxes:
            total = sum(b.area_fraction for b in boxes)
            count = "one region" if len(boxes) == 1 else f"{len(boxes)} separate regions"
            where += f"; {count} stand{'s' if len(boxes) == 1 else ''} out, covering about {_percent(total)} of it"
            if len(boxes) > 1:
                where += f" (largest {_percent(max(b.area_fraction for b in boxes))}, {boxes[0].region} scores highest)"
        where += "."
    if method in TARGET_AGNOSTIC:
        what = f" {label} does not depend on the class: it shows the dominant feature pattern, not evidence."
    elif target == "normal":
        what = " The map explains the 'normal' score, i.e. evidence against abnormality."
    else:
        what = ""
    if abnormal and centre is None:
        caveat = " The map cannot say where the evidence for 'abnormal' lies."
    elif abnormal:
        caveat = " It marks where the model's evidence for 'abnormal' lies, not a confirmed finding."
    else:
        caveat = (" For a normal verdict the map only shows what the model looked at; it is not a finding "
                  "and means little.")
    return head + where + what + caveat


# ---------------------------------------------------------------- COCO


def to_coco(records: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    """COCO detection results: images, annotations (bbox [x, y, w, h], score) and categories.

    Each record needs ``file_name`` (or ``path``), ``width``, ``height`` and
    ``boxes`` (:class:`Box` objects or their ``to_dict()`` form, in that image's
    pixel coordinates); optional: ``id``, ``category`` (default "abnormal"), and
    any extra JSON-able keys such as ``probability``, copied onto the image entry.
    """
    reserved = {"id", "file_name", "path", "width", "height", "boxes", "category"}
    images: list[dict[str, Any]] = []
    annotations: list[dict[str, Any]] = []
    categories: dict[str, int] = {}
    for index, record in enumerate(records, start=1):
        image_id = int(record.get("id", index))
        name = record.get("file_name", record.get("path"))
        if name is None:
            raise ValueError(f"COCO record {index} has neither file_name nor path")
        extra = {k: v for k, v in record.items() if k not in reserved}
        images.append({"id": image_id, "file_name": str(name), "width": int(record["width"]),
                       "height": int(record["height"]), **extra})
        category_id = categories.setdefault(str(record.get("category", "abnormal")), len(categories) + 1)
        for box in record["boxes"]:
            b = box if isinstance(box, Box) else Box(**box)
            annotations.append({
                "id": len(annotations) + 1, "image_id": image_id, "category_id": category_id,
                "bbox": [round(v, 2) for v in b.xywh()], "area": round(b.width * b.height, 2),
                "score": round(float(b.score), 6), "iscrowd": 0, "region": b.region,
            })
    return {
        "info": {"description": "xraylens CAM regions (explanations, not detections of findings)"},
        "images": images,
        "annotations": annotations,
        "categories": [{"id": i, "name": name, "supercategory": "activation"} for name, i in categories.items()],
    }
