"""`xraylens explain` and `xraylens explain-eval` end to end on tiny inputs with a random-weight checkpoint."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from xraylens.cli import main
from xraylens.config import ModelConfig
from xraylens.data.preprocess import Preprocessing
from xraylens.explain.explanations import collect_inputs, unique_names
from xraylens.models import CheckpointMeta, create_model, save_checkpoint


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("ckpt") / "random.ckpt"
    meta = CheckpointMeta(ModelConfig(name="mobilenet_v2"), Preprocessing.for_channels(64, 1), threshold=0.4)
    return save_checkpoint(path, create_model("mobilenet_v2"), meta)


def _png(path: Path, height: int, width: int, seed: int = 0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.random.default_rng(seed).integers(0, 256, (height, width), dtype=np.uint8)
    Image.fromarray(pixels).save(path, format="PNG")
    return path


def test_unique_names_from_mura_and_folder_paths() -> None:
    names = unique_names([
        "MURA-v1.1/valid/XR_WRIST/patient11185/study1_positive/image1.png",
        "MURA-v1.1/valid/XR_WRIST/patient11185/study1_positive/image2.png",
        "left/image1.png", "right/image1.png", "left/image1.png", "weird name (1).PNG",
    ])
    assert names == ["XR_WRIST_patient11185_study1_positive_image1", "XR_WRIST_patient11185_study1_positive_image2",
                     "left_image1", "right_image1", "left_image1_2", "weird_name_1"]


def test_explain_a_folder_writes_every_output_with_unique_names(tmp_path: Path, checkpoint: Path,
                                                                capsys: pytest.CaptureFixture[str]) -> None:
    scans = tmp_path / "scans"
    _png(scans / "a" / "image1.png", 40, 30, seed=1)
    _png(scans / "b" / "image1.png", 50, 70, seed=2)
    _png(scans / "b" / "deeper" / "scan", 33, 33, seed=3)  # no extension: found by content
    (scans / "broken.png").write_text("<html>not an image</html>")
    (scans / "notes.txt").write_text("ignored")
    out = tmp_path / "heatmaps"
    assert main(["explain", str(checkpoint), str(scans), "--out", str(out), "--quiet"]) == 0
    table = pd.read_csv(out / "explanations.csv")
    assert sorted(table["path"]) == ["a/image1.png", "b/deeper/scan", "b/image1.png"]
    assert table["heatmap_path"].is_unique and table["overlay_path"].is_unique
    assert set(table["method"]) == {"gradcam"} and table["label"].isna().all()
    assert set(table["verdict"]) <= {"normal", "abnormal"}
    row = table.set_index("path").loc["b/image1.png"]
    assert row["heatmap_path"] == "images/b_image1_heatmap.png"
    heat = Image.open(out / row["heatmap_path"])
    overlay = Image.open(out / row["overlay_path"])
    assert heat.mode == "L" and heat.size == (70, 50)  # the original image's size, not the 64 px input
    assert overlay.mode == "RGB" and overlay.size == (70, 50)
    assert np.asarray(heat).max() == 255 or np.asarray(heat).max() == 0
    for boxes in table["boxes"]:
        for box in json.loads(boxes):
            assert 0 <= box["x0"] < box["x1"] <= 70 and 0 <= box["y0"] < box["y1"] <= 50
    assert all("P(abnormal)" in text for text in table["explanation"])
    coco = json.loads((out / "boxes.json").read_text())
    assert {im["file_name"] for im in coco["images"]} == set(table["path"])
    assert (out / "overlays_grid.png").stat().st_size > 0
    skipped = pd.read_csv(out / "skipped.csv")
    assert list(skipped["path"]) == ["broken.png"]
    assert "3 images" in capsys.readouterr().out


def test_explain_a_mura_split_names_by_mura_path_and_draws_studies(tiny_mura, tmp_path: Path, checkpoint: Path) -> None:
    out = tmp_path / "valid"
    assert main(["explain", str(checkpoint), "--data", str(tiny_mura.root), "--split", "valid", "--out", str(out),
                 "--quiet", "--method", "cam", "--threshold-mode", "otsu"]) == 0
    table = pd.read_csv(out / "explanations.csv")
    assert len(table) == tiny_mura.count("valid", "images")
    assert "images/XR_WRIST_patient11185_study1_positive_image1_overlay.png" in set(table["overlay_path"])
    assert set(table["label"]) == {0, 1} and set(table["body_part"]) == {"XR_WRIST", "XR_HUMERUS"}
    studies = sorted(p.name for p in (out / "studies").iterdir())
    assert studies == ["valid_XR_HUMERUS_patient11186_study1.png", "valid_XR_WRIST_patient11185_study1.png"]


def test_explain_input_errors(tmp_path: Path, checkpoint: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["explain", str(checkpoint), str(tmp_path / "nothing*.png"), "--out", str(tmp_path / "o")]) == 2
    assert "no image to explain" in capsys.readouterr().err
    assert main(["explain", str(checkpoint), "--out", str(tmp_path / "o")]) == 2
    items, missing = collect_inputs([tmp_path / "absent.png"])
    assert items == [] and missing == [(str(tmp_path / "absent.png"), "no such file or folder")]


def test_explain_eval_writes_report_and_figures(tiny_mura, tmp_path: Path, checkpoint: Path) -> None:
    boxes = tmp_path / "boxes.csv"
    pd.DataFrame([
        ("MURA-v1.1/valid/XR_WRIST/patient11185/study1_positive/image1.png", 2, 2, 10, 8, "hardware"),
        ("MURA-v1.1/valid/XR_WRIST/patient11185/study1_positive/image2.png", 0, 0, 6, 5, "lesion"),
        ("MURA-v1.1/valid/XR_WRIST/patient11185/study1_positive/image2.png", 12, 6, 20, 12, "fracture"),
    ], columns=["path", "x0", "y0", "x1", "y1", "kind"]).to_csv(boxes, index=False)
    out = tmp_path / "eval"
    assert main(["explain-eval", str(checkpoint), "--data", str(tiny_mura.root), "--boxes", str(boxes),
                 "--out", str(out), "--methods", "gradcam,eigencam", "--faithfulness-images", "1",
                 "--sanity-images", "1", "--sanity-steps", "2", "--quiet"]) == 0
    result = json.loads((out / "localization.json").read_text())
    # per kind: images whose findings are all of it; image2 (lesion + fracture) is scored with several kinds
    assert result["n_images"] == 2 and result["kinds"] == ["hardware", "several kinds"]
    gradcam = result["localization"]["gradcam"]
    assert gradcam["all"]["n"] == 2 and gradcam["hardware"]["n"] == 1 and gradcam["several kinds"]["n"] == 1
    assert "fracture" not in gradcam and "lesion" not in gradcam
    assert 0 < gradcam["all"]["pointing_chance"] < 1
    assert set(result["faithfulness"]) == {"gradcam", "eigencam", "random order"}
    assert result["sanity"]["eigencam"]["head_insensitive"]
    for method in ("gradcam", "eigencam"):  # the sweep at the boxes' own cut (fraction 0.5) is the top-box score
        sweep = result["localization"][method]["all"]["box_sweep"]
        assert sweep["thresholds"] == [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9]
        assert sweep["accuracy"][4] == result["localization"][method]["all"]["hit_iou_0.3_top_box"]
        assert sweep["max_accuracy"] == max(sweep["accuracy"])
    report = (out / "report.md").read_text()
    assert "| gradcam |" in report and "| eigencam |" in report and "chance" in report and "## Sanity" in report
    assert "## Localisation: hardware (images whose findings are all hardware)" in report
    assert "## Localisation: images with findings of several kinds (against all their boxes)" in report
    assert "## Where to cut the boxes" in report and "MaxBoxAcc" in report
    for figure in ("methods_grid.png", "pointing_game.png", "box_accuracy.png", "sanity.png"):
        assert (out / figure).stat().st_size > 0


def test_a_peak_on_the_other_finding_of_a_two_kind_film_is_no_missed_lesion() -> None:
    """The map has no class: a film with a plate and a lesion whose map peaks on the plate pointed right."""
    from xraylens.data.boxes import TrueBox
    from xraylens.data.preprocess import letterbox_geometry
    from xraylens.explain.report import EvalSettings, _Images, _localise, image_kinds

    plate, lesion = TrueBox(4, 4, 12, 12, "hardware"), TrueBox(40, 40, 50, 50, "lesion")
    truth = [[plate, lesion], [TrueBox(40, 40, 50, 50, "lesion")], [TrueBox(40, 40, 50, 50, "lesion")]]
    maps = np.zeros((3, 64, 64), np.float32)
    maps[0, 8, 8] = 1.0  # peak on the plate of the two-kind film
    maps[1, 45, 45] = 1.0  # in the lesion
    maps[2, 8, 8] = 1.0  # a lesion-only film pointed elsewhere: a miss
    images = _Images(pd.DataFrame({"path": list("abc")}), torch.zeros(3, 1, 64, 64),
                     [letterbox_geometry(64, 64, 64)] * 3, truth)
    kinds = image_kinds(truth)
    assert kinds == ["lesion", "several kinds"]
    summary, _, _ = _localise(maps, images, np.ones(3, bool), kinds, EvalSettings())
    assert summary["all"]["n"] == 3 and summary["all"]["pointing_game"] == pytest.approx(2 / 3)
    assert summary["lesion"]["n"] == 2 and summary["lesion"]["pointing_game"] == pytest.approx(0.5)
    assert summary["several kinds"]["n"] == 1 and summary["several kinds"]["pointing_game"] == 1.0
    assert "hardware" not in summary


def test_explain_eval_says_when_no_box_matches(tiny_mura, tmp_path: Path, checkpoint: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    boxes = tmp_path / "boxes.csv"
    boxes.write_text("path,x0,y0,x1,y1,kind\nMURA-v1.1/valid/XR_HAND/patient1/study1_positive/image1.png,0,0,1,1,lesion\n")
    assert main(["explain-eval", str(checkpoint), "--data", str(tiny_mura.root), "--boxes", str(boxes),
                 "--out", str(tmp_path / "e"), "--quiet"]) == 2
    assert "MURA-relative" in capsys.readouterr().err


def test_explain_eval_and_explain_at_a_finer_layer(tiny_mura, tmp_path: Path, checkpoint: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    """--layer features.6 (stride 8): finer maps; the classic CAM, which needs the head's layer, is left out."""
    boxes = tmp_path / "boxes.csv"
    boxes.write_text("path,x0,y0,x1,y1,kind\n"
                     "MURA-v1.1/valid/XR_WRIST/patient11185/study1_positive/image1.png,2,2,10,8,hardware\n")
    base = ["explain-eval", str(checkpoint), "--data", str(tiny_mura.root), "--boxes", str(boxes),
            "--faithfulness-images", "0", "--sanity-images", "0", "--quiet"]
    assert main([*base, "--out", str(tmp_path / "e6"), "--layer", "features.6"]) == 0
    result = json.loads((tmp_path / "e6" / "localization.json").read_text())
    assert result["settings"]["layer"] == "features.6"
    assert "cam" not in result["localization"] and "gradcam" in result["localization"]
    assert "CAM layer: `features.6`" in (tmp_path / "e6" / "report.md").read_text()
    capsys.readouterr()
    assert main([*base, "--out", str(tmp_path / "bad"), "--layer", "features.6", "--methods", "cam"]) == 2
    assert "only works at the layer that feeds the head" in capsys.readouterr().err
    assert main([*base, "--out", str(tmp_path / "bad"), "--layer", "features.99"]) == 2
    assert "no layer 'features.99'" in capsys.readouterr().err

    image = _png(tmp_path / "in" / "x.png", 40, 30)
    assert main(["explain", str(checkpoint), str(image), "--out", str(tmp_path / "h"), "--layer", "features.6",
                 "--quiet"]) == 0
    heatmap = np.asarray(Image.open(tmp_path / "h" / "images" / "x_heatmap.png"))
    assert heatmap.shape == (40, 30)
