"""Heatmap -> boxes, region words, the sentence and COCO output, on hand-made maps with known answers."""

from __future__ import annotations

import json

import numpy as np
import pytest

from xraylens.explain.regions import (
    Box,
    box_iou,
    describe,
    find_boxes,
    merge_overlapping,
    otsu_level,
    region_word,
    threshold_value,
    to_coco,
)


def two_rectangles() -> np.ndarray:
    heat = np.zeros((100, 120), np.float32)
    heat[10:30, 20:50] = 1.0  # rows 10..29, cols 20..49
    heat[60:90, 80:110] = 0.8
    return heat


def test_two_rectangles_give_two_exact_boxes_best_first() -> None:
    boxes = find_boxes(two_rectangles(), mode="fraction", threshold=0.5)
    assert [b.xyxy() for b in boxes] == [(20.0, 10.0, 50.0, 30.0), (80.0, 60.0, 110.0, 90.0)]
    assert boxes[0].score == pytest.approx(1.0)
    assert boxes[1].score == pytest.approx(0.64)
    assert boxes[0].area_fraction == pytest.approx(30 * 20 / (100 * 120))
    assert boxes[0].region == "upper-left"
    assert boxes[1].region == "lower-right"


def test_fraction_threshold_drops_the_weaker_rectangle() -> None:
    boxes = find_boxes(two_rectangles(), mode="fraction", threshold=0.9)
    assert [b.xyxy() for b in boxes] == [(20.0, 10.0, 50.0, 30.0)]


def test_percentile_and_otsu_find_the_same_rectangles() -> None:
    heat = two_rectangles()
    hot_share = (heat > 0).mean()  # 1,500 of 12,000 pixels
    for mode, threshold in (("percentile", 1 - hot_share - 0.01), ("percentile", 100 * (1 - hot_share - 0.01)),
                            ("otsu", 0.0)):
        boxes = find_boxes(heat, mode=mode, threshold=threshold)
        assert sorted(b.xyxy() for b in boxes) == [(20.0, 10.0, 50.0, 30.0), (80.0, 60.0, 110.0, 90.0)], mode


def test_otsu_level_splits_a_bimodal_map_between_its_modes() -> None:
    values = np.concatenate([np.full(900, 0.1), np.full(100, 0.9)])
    assert 0.1 < otsu_level(values) < 0.9
    assert threshold_value(values.reshape(10, 100), "otsu") == otsu_level(values)


def test_small_components_are_dropped_and_max_boxes_caps() -> None:
    heat = two_rectangles()
    heat[95, 5] = 1.0  # a single hot pixel: 1 / 12,000 of the map
    assert len(find_boxes(heat, min_area_fraction=0.002)) == 2
    assert len(find_boxes(heat, min_area_fraction=0.0)) == 3
    assert len(find_boxes(heat, max_boxes=1)) == 1


def test_the_peak_survives_the_size_filter_that_drops_small_secondary_blobs() -> None:
    """A hairline finding is a small sharp peak: the filter meant for specks must not erase it."""
    heat = np.zeros((100, 120), np.float32)
    heat[60:90, 80:110] = 0.7  # a broad warm region
    heat[20:23, 30:34] = 1.0  # the peak: 12 px, 0.1 % of the map
    heat[5:7, 100:102] = 0.6  # a speck that is not the peak
    boxes = find_boxes(heat, min_area_fraction=0.002)
    assert [b.xyxy() for b in boxes] == [(30.0, 20.0, 34.0, 23.0), (80.0, 60.0, 110.0, 90.0)]
    assert [b.xyxy() for b in find_boxes(heat, keep_peak=False)] == [(80.0, 60.0, 110.0, 90.0)]

def test_overlapping_boxes_are_merged_into_their_union() -> None:
    heat = np.zeros((60, 60), np.float32)
    heat[10:30, 10:12] = 1.0  # an L whose arms do not touch the third blob...
    heat[28:30, 10:30] = 1.0
    heat[14:26, 16:26] = 0.9  # ...which sits inside the L's box: separate component, overlapping box
    boxes = find_boxes(heat, threshold=0.5, nms_iou=0.3)
    assert [b.xyxy() for b in boxes] == [(10.0, 10.0, 30.0, 30.0)]
    # plain merge: IoU 0.6 > 0.3 merges; IoU below the limit keeps both
    merged = merge_overlapping([(0.9, [0, 0, 10, 10]), (0.5, [2, 0, 12, 10])], iou=0.3)
    assert merged == [(0.9, [0, 0, 12, 10])]
    assert len(merge_overlapping([(0.9, [0, 0, 10, 10]), (0.5, [8, 0, 18, 10])], iou=0.3)) == 2


def test_pieces_of_one_finding_are_one_box_and_far_regions_stay_apart() -> None:
    """A plate's screw heads light up one by one: near pieces are one region, a distant one is not."""
    heat = np.zeros((512, 512), np.float32)
    for top in (100, 130, 160):  # three screw heads 14 px apart down a plate
        heat[top : top + 16, 200:216] = 1.0
    heat[400:424, 400:424] = 0.9  # another finding, far away (above the size filter)
    joined = find_boxes(heat)
    assert [b.xyxy() for b in joined] == [(200.0, 100.0, 216.0, 176.0), (400.0, 400.0, 424.0, 424.0)]
    # apart, each head is a speck under the size filter: only the peak's survives, a box a third of the plate's
    apart = [b.xyxy() for b in find_boxes(heat, join_fraction=0.0)]
    assert apart == [(200.0, 100.0, 216.0, 116.0), (400.0, 400.0, 424.0, 424.0)]
    assert [b.xyxy() for b in find_boxes(heat, join_fraction=0.02)] == apart  # 10 px: the 14 px gaps stay open


def test_flat_or_empty_maps_have_no_boxes() -> None:
    assert find_boxes(np.zeros((20, 20))) == []
    assert find_boxes(np.full((20, 20), 0.7)) == []


def test_bad_arguments_are_rejected_with_the_allowed_values() -> None:
    with pytest.raises(ValueError, match="fraction, percentile, otsu"):
        find_boxes(two_rectangles(), mode="mean")
    with pytest.raises(ValueError, match="2-D"):
        find_boxes(np.zeros((2, 3, 4)))


@pytest.mark.parametrize(
    ("cx", "cy", "word"),
    [(5, 5, "upper-left"), (50, 5, "upper-centre"), (95, 5, "upper-right"), (5, 50, "middle-left"),
     (50, 50, "centre"), (95, 50, "middle-right"), (5, 95, "lower-left"), (50, 95, "lower-centre"),
     (95, 95, "lower-right"), (100, 100, "lower-right"), (-1, 33.4, "middle-left")],
)
def test_region_words_on_a_3x3_grid(cx: float, cy: float, word: str) -> None:
    assert region_word(cx, cy, 100, 100) == word


def test_box_iou_by_hand() -> None:
    assert box_iou((0, 0, 10, 10), (0, 0, 10, 10)) == 1.0
    assert box_iou((0, 0, 10, 10), (5, 0, 15, 10)) == pytest.approx(50 / 150)
    assert box_iou((0, 0, 10, 10), (10, 0, 20, 10)) == 0.0


def test_sentence_for_an_abnormal_verdict_says_where_and_how_large() -> None:
    heat = two_rectangles()
    boxes = find_boxes(heat)
    text = describe(0.87, 0.5, boxes, heat, body_part="XR_WRIST", method="gradcam")
    assert text.startswith("Abnormal wrist radiograph (P(abnormal) = 0.87")
    assert "Grad-CAM" in text and "upper-left" in text
    assert "2 separate regions" in text and "not a confirmed finding" in text


def test_sentence_for_a_normal_verdict_says_the_map_is_not_a_finding() -> None:
    heat = two_rectangles()
    text = describe(0.12, 0.5, find_boxes(heat), heat)
    assert text.startswith("Normal (P(abnormal) = 0.12")
    assert "not a finding" in text and "means little" in text
    flat = describe(0.9, 0.5, [], np.zeros((10, 10)))
    assert "is flat" in flat and "does not point anywhere" in flat and "separate regions" not in flat
    assert "It marks where" not in flat


def test_sentence_is_honest_about_target_agnostic_methods_and_the_normal_target() -> None:
    heat = two_rectangles()
    assert "does not depend on the class" in describe(0.9, 0.5, [], heat, method="eigencam")
    assert "evidence against abnormality" in describe(0.9, 0.5, [], heat, target="normal")


def test_coco_export() -> None:
    boxes = find_boxes(two_rectangles())
    coco = to_coco([{"file_name": "a.png", "width": 120, "height": 100, "boxes": boxes, "probability": 0.9},
                    {"path": "b.png", "width": 50, "height": 40, "boxes": []}])
    assert to_coco([{"path": "a.png", "width": 120, "height": 100, "boxes": [b.to_dict() for b in boxes]}])[
        "annotations"] == coco["annotations"]
    json.dumps(coco)  # serialisable as is
    assert [im["file_name"] for im in coco["images"]] == ["a.png", "b.png"]
    assert coco["images"][0]["probability"] == 0.9
    assert coco["categories"] == [{"id": 1, "name": "abnormal", "supercategory": "activation"}]
    assert [a["bbox"] for a in coco["annotations"]] == [[20.0, 10.0, 30.0, 20.0], [80.0, 60.0, 30.0, 30.0]]
    assert all(a["image_id"] == 1 and 0 < a["score"] <= 1 for a in coco["annotations"])


def test_box_mapped_to_other_coordinates_recomputes_area_and_region() -> None:
    box = Box(0, 0, 10, 10, 0.5, 0.01, "upper-left")
    moved = box.mapped((80, 80, 100, 100), 100, 100)
    assert moved.region == "lower-right" and moved.area_fraction == pytest.approx(0.04) and moved.score == 0.5
