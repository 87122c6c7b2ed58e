"""COCO-style AP of the boxes cut from heatmaps, against the true boxes; and the COCO files to check it with.

Why AP beside the pointing game: the published detectors on FracAtlas and
GRAZPEDWRI-DX (README, "Real datasets with boxes") report COCO AP50 and
AP50:95, so the CAM boxes are scored the same way, by torchmetrics'
``MeanAveragePrecision`` on the pycocotools backend (not by hand): 101-point
interpolated precision, IoU thresholds 0.50 (AP50) and 0.50:0.05:0.95
(AP50:95), up to 100 boxes per image, all object sizes.

The protocol, so the numbers are read for what they are:

* the CAM boxes have no class (a classifier's map says "abnormal here"), so
  **overall** AP pools every true box into one class;
* **per kind** K, the images whose every finding is of kind K, their boxes
  as the truth and their CAM boxes as the predictions. Why only those: the
  map has no class, so on an image with a lesion and a plate a box on the
  plate is right, not a false positive for lesions (on easy data of
  1000 patients, 13 of the 16 lesion images that missed the pointing game
  had their peak on the image's other finding). Images with several kinds are scored
  together, against all their boxes (:data:`SEVERAL_KINDS`);
* a box's score is the region's own (peak x mean heat, see
  :func:`~xraylens.explain.regions.find_boxes`);
* only images that have true boxes are scored (explain-eval's selection),
  so normal films add no false positives.

:func:`coco_ground_truth` and :func:`coco_detections` write the same boxes as
COCO files (class-agnostic: one category ``finding``; each true box keeps its
``kind`` as an extra field), so ``pycocotools.COCOeval`` or any other COCO
tool reproduces the overall numbers.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from xraylens.data.boxes import TrueBox
from xraylens.explain.regions import Box

CATEGORY = {"id": 1, "name": "finding", "supercategory": "abnormality"}


def average_precision(predicted: Sequence[Sequence[Box]], truth: Sequence[Sequence[TrueBox]]) -> dict[str, Any]:
    """``{"ap50", "ap50_95", "n_images", "n_true", "n_predicted"}`` of class-agnostic boxes, one entry per image.

    AP is None where there is no true box at all (COCO's -1).
    """
    import torch
    from torchmetrics.detection import MeanAveragePrecision

    if len(predicted) != len(truth):
        raise ValueError(f"predicted boxes for {len(predicted)} images but true boxes for {len(truth)}")
    metric = MeanAveragePrecision(box_format="xyxy", iou_type="bbox", backend="pycocotools")
    preds, targets = [], []
    for mine, true in zip(predicted, truth, strict=True):
        preds.append({"boxes": torch.tensor([b.xyxy() for b in mine], dtype=torch.float32).reshape(-1, 4),
                      "scores": torch.tensor([float(b.score) for b in mine], dtype=torch.float32),
                      "labels": torch.zeros(len(mine), dtype=torch.int64)})
        targets.append({"boxes": torch.tensor([b.xyxy() for b in true], dtype=torch.float32).reshape(-1, 4),
                        "labels": torch.zeros(len(true), dtype=torch.int64)})
    n_true = sum(len(t) for t in truth)
    if preds:
        metric.update(preds, targets)
    result = metric.compute() if preds and n_true else {}
    return {"ap50": _value(result.get("map_50")), "ap50_95": _value(result.get("map")), "n_images": len(truth),
            "n_true": n_true, "n_predicted": sum(len(p) for p in predicted)}


SEVERAL_KINDS = "several kinds"  # the per-kind key of images whose findings are of more than one kind


def kind_of_image(boxes: Sequence[TrueBox]) -> str | None:
    """The one kind of an image's findings, :data:`SEVERAL_KINDS` when they differ, None without boxes."""
    kinds = {b.kind for b in boxes}
    return None if not kinds else kinds.pop() if len(kinds) == 1 else SEVERAL_KINDS


def ap_by_kind(predicted: Sequence[Sequence[Box]], truth: Sequence[Sequence[TrueBox]],
               kinds: Sequence[str]) -> dict[str, dict[str, Any]]:
    """Overall (``"all"``) and per-kind AP (``kinds`` may include :data:`SEVERAL_KINDS`), by the protocol of
    the module docstring."""
    out = {"all": average_precision(predicted, truth)}
    of_image = [kind_of_image(boxes) for boxes in truth]
    for kind in kinds:
        chosen = [i for i, k in enumerate(of_image) if k == kind]
        out[kind] = average_precision([predicted[i] for i in chosen], [truth[i] for i in chosen])
    return out


def coco_ground_truth(paths: Sequence[str], sizes: Sequence[tuple[int, int]],
                      truth: Sequence[Sequence[TrueBox]]) -> dict[str, Any]:
    """COCO ground truth: image ``i + 1`` is ``paths[i]`` of ``sizes[i]`` = (height, width); one category."""
    images = [{"id": i + 1, "file_name": str(p), "height": int(h), "width": int(w)}
              for i, (p, (h, w)) in enumerate(zip(paths, sizes, strict=True))]
    annotations = []
    for i, boxes in enumerate(truth):
        for b in boxes:
            w, h = b.x1 - b.x0, b.y1 - b.y0
            annotations.append({"id": len(annotations) + 1, "image_id": i + 1, "category_id": CATEGORY["id"],
                                "bbox": [round(b.x0, 2), round(b.y0, 2), round(w, 2), round(h, 2)],
                                "area": round(w * h, 2), "iscrowd": 0, "kind": b.kind})
    return {"info": {"description": "xraylens explain-eval ground truth (class-agnostic; 'kind' per box)"},
            "images": images, "annotations": annotations, "categories": [CATEGORY]}


def coco_detections(predicted: Sequence[Sequence[Box]]) -> list[dict[str, Any]]:
    """COCO detection results ``[{image_id, category_id, bbox: [x, y, w, h], score}]``, images numbered as above."""
    return [{"image_id": i + 1, "category_id": CATEGORY["id"], "bbox": [round(v, 2) for v in b.xywh()],
             "score": round(float(b.score), 6)}
            for i, boxes in enumerate(predicted) for b in boxes]


def write_coco_files(out: Path, paths: Sequence[str], sizes: Sequence[tuple[int, int]],
                     truth: Sequence[Sequence[TrueBox]], predicted: dict[str, Sequence[Sequence[Box]]]) -> dict[str, str]:
    """``out/coco/ground_truth.json`` and ``detections_<method>.json`` per method, atomically; name -> relative path."""
    from xraylens.atomic import atomic_write_json

    files = {"ground_truth": "coco/ground_truth.json"}
    atomic_write_json(out / files["ground_truth"], coco_ground_truth(paths, sizes, truth))
    for method, boxes in predicted.items():
        files[method] = f"coco/detections_{method.replace('+', 'plus')}.json"
        atomic_write_json(out / files[method], coco_detections(boxes))
    return files


def _value(tensor: Any) -> float | None:
    if tensor is None:
        return None
    value = float(tensor)
    return None if value < 0 else value


__all__ = ["SEVERAL_KINDS", "ap_by_kind", "average_precision", "coco_detections", "coco_ground_truth", "kind_of_image",
           "write_coco_files"]
