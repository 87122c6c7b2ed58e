"""FracAtlas and GRAZPEDWRI-DX read as released: counts, labels, splits, quirks, and boxes on the findings."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image, ImageOps

from box_datasets import (
    IN_BOTH_FOLDERS,
    LISTED_TWICE,
    OFFICIAL,
    TRUNCATED,
    WRIST_BAD_LINE,
    WRIST_IMAGES,
    WRIST_LISTED_TWICE,
    WRIST_STORED_TWICE,
    write_fracatlas,
    write_grazpedwri,
)
from xraylens.cli import main
from xraylens.data.formats import ReaderOptions, detect_format, open_dataset
from xraylens.data.images import image_size, jpeg_orientation, read_image
from xraylens.data.orientation import upright_box
from xraylens.data.problems import DataError, problem_counts


def _assert_box_on_finding(file: Path, box) -> None:
    """The reported box covers the bright rectangle drawn for it, in the image as read."""
    image = read_image(file)
    x0, y0, x1, y1 = (int(round(v)) for v in box.xyxy())
    inside = image[y0:y1, x0:x1]
    assert inside.size and inside.mean() > 0.85, (file.name, box)
    ring = np.zeros(image.shape, bool)
    ring[max(y0 - 4, 0) : y1 + 4, max(x0 - 4, 0) : x1 + 4] = True
    ring[max(y0 - 1, 0) : y1 + 1, max(x0 - 1, 0) : x1 + 1] = False  # just outside the box is dark again
    assert image[ring].mean() < 0.6, (file.name, box)


def _assert_same_boxes(found, expected) -> None:
    np.testing.assert_allclose(np.reshape([b.xyxy() for b in found], (-1, 4)), np.reshape(expected, (-1, 4)),
                               atol=0.01)


# ---------------------------------------------------------------- FracAtlas


@pytest.mark.parametrize("route", ["coco", "yolo"])
def test_fracatlas_index_counts_quirks_and_boxes_on_the_findings(tmp_path: Path, route: str) -> None:
    fixture = write_fracatlas(tmp_path, coco=route == "coco")
    index = open_dataset(tmp_path, progress=False)  # the parent: FracAtlas/ is found one level down
    assert index.format == "fracatlas" and index.root == fixture.root
    assert index.source == f"dataset.csv + {'COCO JSON' if route == 'coco' else 'YOLO'} boxes"
    table = index.table
    assert len(table) == 12 and table["path"].is_unique  # the id listed twice and the double copy count once
    assert (table["patient_id"] == table["study_id"]).all() and table["patient_id"].nunique() == 12
    assert set(table["split"]) == {"train", "valid"} and (table["split"] == "valid").sum() == 2
    rows = table.set_index("patient_id")
    assert rows.loc[IN_BOTH_FOLDERS, "path"] == f"images/Fractured/{IN_BOTH_FOLDERS}.jpg"
    assert rows.loc["IMG0000003", ["body_part", "label"]].tolist() == ["XR_HIP", 1]
    assert rows.loc["IMG0000005", "body_part"] == "XR_MIXED" and rows.loc["IMG0000004", "view"] == "frontal+lateral"
    assert int(table["label"].sum()) == 5
    assert problem_counts(index.problems) == {"duplicate_id": 2}  # the truncated JPEG is found by verify
    assert {p.path for p in index.problems} == {"dataset.csv", f"images/Non_fractured/{IN_BOTH_FOLDERS}.jpg"}
    assert any(LISTED_TWICE in p.detail for p in index.problems)
    assert index.notes and "EXIF rotation" in index.notes[0]

    assert sorted(index.boxes) == sorted(fixture.path_of(i.stem) for i in fixture.images if i.boxes)
    for stem, expected in fixture.upright_boxes.items():
        found = index.boxes.get(fixture.path_of(stem), [])
        assert [b.kind for b in found] == ["fracture"] * len(expected)
        _assert_same_boxes(found, expected)
        for box in found:
            _assert_box_on_finding(fixture.root / fixture.path_of(stem), box)
    turned = fixture.root / fixture.path_of("IMG0000003")
    assert jpeg_orientation(turned) == 6 and image_size(turned) == (96, 64)  # stored 96 wide, 64 high


def test_fracatlas_verify_reports_the_truncated_jpeg_and_official_split_decides_the_test_set(tmp_path: Path) -> None:
    write_fracatlas(tmp_path)
    index = open_dataset(tmp_path / "FracAtlas", verify=True, progress=False,
                         options=ReaderOptions(official_split="test"))
    assert len(index.table) == 11 and TRUNCATED not in set(index.table["patient_id"])
    assert [p.kind for p in index.problems if TRUNCATED in p.path] == ["unreadable"]
    split = index.table.set_index("patient_id")["split"]
    assert all(split[s] == "valid" for s in OFFICIAL["test"])
    assert all(split[s] == "train" for s in (*OFFICIAL["train"], *OFFICIAL["valid"]))
    with pytest.raises(DataError, match="official_split"):
        ReaderOptions(official_split="dev")


def test_fracatlas_coco_size_decides_the_frame_of_a_rotated_image(tmp_path: Path) -> None:
    fixture = write_fracatlas(tmp_path, yolo=False)
    coco_path = fixture.root / "Annotations" / "COCO JSON" / "COCO_fracture_masks.json"
    coco = json.loads(coco_path.read_text())
    turned = next(im for im in coco["images"] if im["file_name"] == "IMG0000003.jpg")
    upright = fixture.upright_boxes["IMG0000003"][0]
    turned["width"], turned["height"] = 64, 96  # the annotator saw it upright: boxes need no turning
    for ann in coco["annotations"]:
        if ann["image_id"] == turned["id"]:
            ann["bbox"] = [upright[0], upright[1], upright[2] - upright[0], upright[3] - upright[1]]
    other = next(im for im in coco["images"] if im["file_name"] == "IMG0000001.jpg")
    other["width"] = 500  # recorded on some other copy: its boxes cannot be placed
    coco_path.write_text(json.dumps(coco))
    index = open_dataset(fixture.root, format="fracatlas", progress=False)
    np.testing.assert_allclose(index.boxes[fixture.path_of("IMG0000003")][0].xyxy(), upright)
    assert fixture.path_of("IMG0000001") not in index.boxes
    assert [p.kind for p in index.problems if "IMG0000001" in p.path] == ["bad_box"]
    assert fixture.path_of("IMG0000001") in set(index.table["path"])  # the image itself stays


@pytest.mark.parametrize("orientation", range(1, 9))
def test_boxes_turn_exactly_as_pillow_turns_the_pixels(orientation: int) -> None:
    width, height, box = 7, 5, (1, 1, 4, 3)
    stored = np.zeros((height, width), np.uint8)
    stored[box[1] : box[3], box[0] : box[2]] = 255
    image = Image.fromarray(stored)
    exif = image.getexif()
    exif[0x0112] = orientation
    image.info["exif"] = exif.tobytes()
    upright = np.asarray(ImageOps.exif_transpose(image))
    ys, xs = np.nonzero(upright)
    assert upright_box(box, orientation, width, height) == (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1)


# ---------------------------------------------------------------- GRAZPEDWRI-DX


def test_grazpedwri_index_studies_labels_kinds_and_16bit_pixels(tmp_path: Path) -> None:
    fixture = write_grazpedwri(tmp_path)
    index = open_dataset(fixture.root, progress=False)
    assert index.format == "grazpedwri" and index.source == "dataset.csv + YOLO boxes"
    table = index.table.set_index("path")
    assert len(table) == len(WRIST_IMAGES) and set(table["body_part"]) == {"XR_WRIST"}
    assert table["patient_id"].nunique() == 8 and index.table["study_id"].nunique() == 9
    first, lateral, metal, text_only = (fixture.path_of(WRIST_IMAGES[i].stem) for i in (0, 1, 2, 5))
    assert table.loc[first, "study_id"] == table.loc[lateral, "study_id"] == "0001/1"
    assert table.loc[lateral, "label"] == 1  # the study is abnormal, so is each of its views
    assert table.loc[first, "view"] == "projection1" and table.loc[lateral, "view"] == "projection2"
    assert table.loc[metal, "label"] == 0 and table.loc[text_only, "label"] == 0
    copies = {p.path: p.kind for p in index.problems}
    assert problem_counts(index.problems) == {"duplicate_id": 2, "bad_box": 1}
    assert copies[fixture.path_of(WRIST_BAD_LINE)] == "bad_box"
    assert any(WRIST_LISTED_TWICE in p.detail for p in index.problems)
    assert copies[f"images_part3/{WRIST_STORED_TWICE}.png"] == "duplicate_id"  # the later part's copy is skipped

    assert text_only not in index.boxes  # burned-in text is no finding
    kinds = sorted(b.kind for boxes in index.boxes.values() for b in boxes)
    assert kinds == sorted(["fracture"] * 6 + ["hardware", "lesion", "periostealreaction"])
    for image in WRIST_IMAGES:
        expected = [b for cls, b in image.boxes if cls != 8]
        found = index.boxes.get(fixture.path_of(image.stem), [])
        _assert_same_boxes(found, expected)
        for box in found:
            _assert_box_on_finding(fixture.root / fixture.path_of(image.stem), box)
    pixels = read_image(fixture.root / first)  # 12-bit data in a 16-bit PNG keeps its contrast
    assert pixels.max() > 0.9 and pixels.min() < 0.35

    anything = open_dataset(fixture.root, progress=False, options=ReaderOptions(label="any")).table
    labels = anything.set_index("path")["label"]
    assert labels[metal] == 1 and labels[text_only] == 0


# ---------------------------------------------------------------- detection and the CLI


def test_formats_are_detected_and_a_wrong_folder_says_what_was_expected(tmp_path: Path, tiny_mura) -> None:
    fa = write_fracatlas(tmp_path / "a").root
    gz = write_grazpedwri(tmp_path / "b").root
    assert detect_format(fa) == ("fracatlas", fa) and detect_format(tmp_path / "b") == ("grazpedwri", gz)
    assert detect_format(tiny_mura.root)[0] == "mura"
    (tmp_path / "both").mkdir()
    for folder in (fa, gz):
        (tmp_path / "both" / folder.name).symlink_to(folder)
    with pytest.raises(DataError, match="several datasets"):
        detect_format(tmp_path / "both")
    (tmp_path / "empty" / "inside").mkdir(parents=True)
    with pytest.raises(DataError, match="FracAtlas/dataset.csv"):
        detect_format(tmp_path / "empty")
    with pytest.raises(DataError, match="not a GRAZPEDWRI-DX folder"):
        open_dataset(fa, format="grazpedwri", progress=False)


def test_data_summary_shows_format_boxes_and_problems(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write_grazpedwri(tmp_path)
    assert main(["data", "summary", str(tmp_path), "--json", "--quiet"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["format"] == "grazpedwri" and summary["total"]["images"] == len(WRIST_IMAGES)
    assert summary["boxes"] == {"images_with_boxes": 7, "boxes": 9,
                                "by_kind": {"fracture": 6, "hardware": 1, "lesion": 1, "periostealreaction": 1}}
    assert summary["problem_counts"] == {"duplicate_id": 2, "bad_box": 1}
    assert main(["data", "summary", str(tmp_path), "--quiet"]) == 0
    text = capsys.readouterr().out
    assert text.startswith("GRAZPEDWRI-DX at") and "boxes: 9 on 7 images" in text


def test_training_data_and_the_cache_read_a_box_dataset(tmp_path: Path) -> None:
    from xraylens.config import load_config
    from xraylens.data.cache import build_cache, default_cache_dir
    from xraylens.data.dataset import RadiographDataset
    from xraylens.datamodule import TaggedDataset, load_training_data, loss_weights
    from xraylens.models import preprocessing_for

    fixture = write_fracatlas(tmp_path)
    cfg = load_config("scratch_cpu", [f"data.root={tmp_path}", "data.image_size=32", "data.val_fraction=0.25",
                                      "train.box_fraction=1.0", "data.cache=off"])
    data = load_training_data(cfg, progress=False)
    assert data.root == fixture.root and len(data.train) + len(data.val) == 10  # the 2 test images left out
    boxed = {data.train["path"].iat[i] for i, boxes in data.train_boxes.items() if len(boxes)}
    assert boxed and boxed <= set(open_dataset(fixture.root, progress=False).boxes)  # the release's own boxes
    weights = loss_weights(data.train)
    assert set(data.train["body_part"]) <= set(weights)  # XR_LEG, XR_HIP, XR_MIXED weigh their classes too
    parts = TaggedDataset(RadiographDataset(data.train, preprocessing_for(cfg.model, 32))).parts
    assert len(set(parts)) == data.train["body_part"].nunique()
    folder = build_cache(tmp_path, 32, workers=1, progress=False)
    assert folder == default_cache_dir(fixture.root, 32) == fixture.root / ".xraylens_cache" / "size32"
    cached = pd.read_csv(folder / "index.csv")
    assert len(cached) == 12 and cached.set_index("path")["ok"].sum() == 11  # the truncated JPEG: ok=0
