"""train -> evaluate -> explain-eval (-> predict) on FracAtlas and GRAZPEDWRI-DX folders, through the CLI.

Once on the hand-written release fixtures, once on the synthetic data that
``xraylens data synth --layout`` writes. Tiny everything (48 px, one epoch
of a random ResNet-18): these check that every command reads the folder,
finds the dataset's own boxes without --boxes and reports AP, not that
anything is learned.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from box_datasets import write_fracatlas, write_grazpedwri
from xraylens.cli import main
from xraylens.data.formats import ReaderOptions, open_dataset
from xraylens.data.images import read_image

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("one_torch_thread")]
TINY = ["--config", "scratch_cpu", "--quiet", "--set", "train.epochs=1", "data.image_size=48", "data.num_workers=0",
        "data.val_fraction=0.25", "model.name=resnet18", "train.batch_size=4", "train.early_stopping_patience=0",
        "train.log_every_n_steps=1"]


def _train_evaluate_explain(data: Path, run: Path, *settings: str) -> tuple[Path, dict, dict]:
    """The three commands as a user types them; returns the checkpoint, metrics.json and localization.json."""
    assert main(["train", "--data", str(data), "--out", str(run), *TINY, *settings]) == 0
    checkpoint = run / "checkpoints" / "best.ckpt"
    assert main(["evaluate", str(checkpoint), "--data", str(data), "--out", str(run / "eval"), "--bootstrap", "0",
                 "--quiet"]) == 0
    assert main(["explain-eval", str(checkpoint), "--data", str(data), "--out", str(run / "explain_eval"),
                 "--methods", "gradcam", "--sanity-images", "0", "--faithfulness-images", "0", "--quiet"]) == 0
    metrics = json.loads((run / "eval" / "metrics.json").read_text())
    localization = json.loads((run / "explain_eval" / "localization.json").read_text())
    return checkpoint, metrics, localization


def _check_scored(run: Path, index, localization: dict, capsys: pytest.CaptureFixture[str]) -> None:
    """explain-eval used the dataset's boxes on the test split and wrote AP and the COCO files."""
    test = index.table
    boxed = test[(test["label"] == 1) & test["path"].isin([p for p, b in index.boxes.items() if b])]
    assert localization["n_images"] == len(boxed) > 0 and "the boxes of" in localization["boxes"]
    scores = localization["localization"]["gradcam"]["all"]
    assert 0.0 <= scores["ap50_95"] <= scores["ap50"] <= 1.0
    truth = json.loads((run / "explain_eval" / localization["coco_files"]["ground_truth"]).read_text())
    assert sorted(im["file_name"] for im in truth["images"]) == sorted(boxed["path"])
    assert len(truth["annotations"]) == sum(len(index.boxes[p]) for p in boxed["path"])
    detections = json.loads((run / "explain_eval" / localization["coco_files"]["gradcam"]).read_text())
    assert all(set(d) == {"image_id", "category_id", "bbox", "score"} for d in detections)
    assert "AP50" in (run / "explain_eval" / "report.md").read_text()
    assert "AP50" in capsys.readouterr().out


@pytest.mark.parametrize("dataset", ["fracatlas", "grazpedwri"])
def test_release_fixtures_train_evaluate_and_score_heatmaps(tmp_path: Path, dataset: str,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    data = tmp_path / "data"
    settings = ["data.official_split=test"] if dataset == "fracatlas" else []  # its test file: fractured images
    (write_fracatlas if dataset == "fracatlas" else write_grazpedwri)(data)
    checkpoint, metrics, localization = _train_evaluate_explain(data, tmp_path / "run", *settings)
    options = ReaderOptions(official_split="test") if settings else ReaderOptions()
    test = open_dataset(data, splits=("valid",), options=options, progress=False)  # what training left out
    assert metrics["dataset"] == {"fracatlas": "FracAtlas", "grazpedwri": "GRAZPEDWRI-DX"}[dataset]
    assert metrics["image"]["n"] == len(test.table) and metrics["per_kind"]  # kinds from the dataset's boxes
    _check_scored(tmp_path / "run", test, localization, capsys)
    if dataset == "fracatlas":  # explain --data names outputs by the release's paths
        assert main(["explain", str(checkpoint), "--data", str(data), "--out", str(tmp_path / "heat"), "--limit", "2",
                     "--quiet"]) == 0
        explained = pd.read_csv(tmp_path / "heat" / "explanations.csv")
        assert set(explained["path"]) <= set(test.table["path"]) and len(explained) == 2
    if dataset == "grazpedwri":  # predict --data groups views by the index's studies, not by folder
        out = tmp_path / "predictions.csv"
        assert main(["predict", str(checkpoint), "--data", str(data), "--out", str(out), "--no-progress"]) == 0
        rows = pd.read_csv(out, dtype=str)
        images, studies = rows[rows["level"] == "image"], rows[rows["level"] == "study"]
        assert sorted(images["path"]) == sorted(test.table["path"])
        assert sorted(studies["study"]) == sorted(test.table["study_id"].unique())
        assert set(images["body_part"]) == {"XR_WRIST"}


@pytest.mark.parametrize("layout", ["fracatlas", "grazpedwri"])
def test_synthetic_data_in_a_release_layout_reads_back_and_runs_end_to_end(
        tmp_path: Path, layout: str, capsys: pytest.CaptureFixture[str]) -> None:
    from xraylens.data.synthetic import generate

    kwargs = {"patients": 8, "max_side": 64, "seed": 2, "findings": ("fracture",), "difficulty": "easy"}
    cli = ["--patients", "8", "--max-side", "64", "--seed", "2", "--findings", "fracture", "--difficulty", "easy",
           "--quiet"]
    data = tmp_path / layout
    assert main(["data", "synth", str(data), "--layout", layout, *cli]) == 0
    assert main(["data", "synth", str(data), "--layout", layout, *cli]) == 0  # a rerun rewrites the same files
    assert main(["data", "synth", str(data), "--layout", layout, *cli[:-1], "--seed", "3", "--quiet"]) == 2
    mura = generate(tmp_path / "mura", progress=False, **kwargs)
    index = open_dataset(data, progress=False)
    assert index.format == layout and not index.problems
    assert len(index.table) == mura.manifest["images"]
    drawn = mura.boxes.sort_values(["path", "x0", "y0"])
    read = sorted(tuple(round(v, 2) for v in b.xyxy()) for boxes in index.boxes.values() for b in boxes)
    assert read == sorted(tuple(float(v) for v in r) for r in drawn[["x0", "y0", "x1", "y1"]].to_numpy())
    if layout == "fracatlas":  # IMG<n> is the n-th synthetic image by MURA path: same pixels, JPEG-compressed
        first = sorted(mura.boxes["path"].unique())[0]
        n = sorted(p for p in (mura.root / "MURA-v1.1").rglob("image*.png") if not p.name.startswith("."))
        stem = f"IMG{[p.relative_to(mura.root).as_posix() for p in n].index(first):07d}"
        mine = index.table.set_index("patient_id").loc[stem]
        assert np.abs(read_image(mine["file"]) - read_image(mura.root / first)).mean() < 0.02
        assert [b.xyxy() for b in index.boxes[mine["path"]]] == [
            tuple(float(v) for v in r) for r in drawn[drawn["path"] == first][["x0", "y0", "x1", "y1"]].to_numpy()]
    _, metrics, localization = _train_evaluate_explain(data, tmp_path / "run")
    assert metrics["per_kind"].keys() == {"fracture"}
    _check_scored(tmp_path / "run", open_dataset(data, splits=("valid",), progress=False), localization, capsys)
