"""COCO AP of CAM boxes (torchmetrics on pycocotools) and the COCO files that let other tools check it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from xraylens.data.boxes import TrueBox
from xraylens.explain.detection import (
    SEVERAL_KINDS,
    ap_by_kind,
    average_precision,
    coco_detections,
    coco_ground_truth,
    kind_of_image,
)
from xraylens.explain.regions import Box

TRUTH = [
    [TrueBox(10, 10, 40, 30, "fracture"), TrueBox(50, 5, 70, 25, "hardware")],
    [TrueBox(0, 40, 30, 60, "fracture")],
    [TrueBox(20, 20, 60, 60, "lesion")],
]


def _as_predicted(boxes: list[TrueBox], shift: float = 0.0, score: float = 0.9) -> list[Box]:
    return [Box(b.x0 + shift, b.y0 + shift, b.x1 + shift, b.y1 + shift, score, 0.1, "centre") for b in boxes]


def test_ap_is_one_for_the_true_boxes_and_zero_for_disjoint_ones() -> None:
    perfect = ap_by_kind([_as_predicted(t) for t in TRUTH], TRUTH, ["fracture", "lesion", SEVERAL_KINDS])
    assert perfect["all"]["ap50"] == pytest.approx(1.0) and perfect["all"]["ap50_95"] == pytest.approx(1.0)
    assert perfect["lesion"]["ap50"] == pytest.approx(1.0) and perfect["lesion"]["n_images"] == 1
    # per kind, only the images whose findings are all of it: the map has no class, so a box on the
    # fracture-and-hardware image's plate is no false fracture; that image is scored with several kinds
    assert perfect["fracture"]["n_images"] == 1 and perfect["fracture"]["n_true"] == 1
    assert perfect["fracture"]["ap50"] == pytest.approx(1.0)
    assert perfect[SEVERAL_KINDS]["n_images"] == 1 and perfect[SEVERAL_KINDS]["n_true"] == 2
    assert perfect[SEVERAL_KINDS]["ap50"] == pytest.approx(1.0)
    assert [kind_of_image(t) for t in TRUTH] == [SEVERAL_KINDS, "fracture", "lesion"] and kind_of_image([]) is None
    disjoint = average_precision([_as_predicted(t, shift=200.0) for t in TRUTH], TRUTH)
    assert disjoint["ap50"] == 0.0 and disjoint["ap50_95"] == 0.0
    assert disjoint["n_true"] == 4 and disjoint["n_predicted"] == 4


def test_ap_falls_with_looser_boxes_and_counts_an_image_without_predictions_as_missed() -> None:
    loose = average_precision([_as_predicted(t, shift=4.0) for t in TRUTH], TRUTH)
    assert 0.0 < loose["ap50_95"] < loose["ap50"] <= 1.0
    missing = average_precision([_as_predicted(TRUTH[0]), [], _as_predicted(TRUTH[2])], TRUTH)
    assert missing["ap50"] == pytest.approx(0.75, abs=0.02)  # 3 of 4 boxes found, all ranked first
    assert average_precision([[]], [[]])["ap50"] is None  # no true box: no AP, not zero


def test_coco_files_reproduce_the_overall_ap_with_pycocotools(tmp_path: Path) -> None:
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    predicted = [_as_predicted(TRUTH[0], shift=2.0, score=0.8), _as_predicted(TRUTH[1], shift=9.0, score=0.6),
                 _as_predicted(TRUTH[2], shift=1.0, score=0.7) + _as_predicted(TRUTH[1], score=0.95)]
    truth_file = tmp_path / "gt.json"
    truth_file.write_text(json.dumps(coco_ground_truth(["a.png", "b.png", "c.png"], [(80, 90)] * 3, TRUTH)))
    detections = coco_detections(predicted)
    assert set(detections[0]) == {"image_id", "category_id", "bbox", "score"}
    assert detections[0]["bbox"] == [12.0, 12.0, 30.0, 20.0]  # [x, y, w, h]
    ground_truth = COCO(str(truth_file))
    evaluator = COCOeval(ground_truth, ground_truth.loadRes(detections), "bbox")
    evaluator.evaluate()
    evaluator.accumulate()
    evaluator.summarize()
    ours = average_precision(predicted, TRUTH)
    assert ours["ap50_95"] == pytest.approx(evaluator.stats[0], abs=1e-6)
    assert ours["ap50"] == pytest.approx(evaluator.stats[1], abs=1e-6)
    assert 0.0 < ours["ap50"] < 1.0
