"""End to end: random-init checkpoints on a tiny MURA tree -> every report file, ensembles, the CLI."""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from xraylens.config import ModelConfig
from xraylens.data.preprocess import Preprocessing
from xraylens.evaluation import IMAGE_COLUMNS, STUDY_COLUMNS, evaluate, predict_table
from xraylens.models import CheckpointMeta, create_model, load_checkpoint, save_checkpoint

PARTS = ("XR_WRIST", "XR_HAND")
VAL_FRACTION, SPLIT_SEED = 0.34, 3
TRUNCATED = "MURA-v1.1/valid/XR_WRIST/patient11014/study1_positive/image3.png"
OUTPUT_FILES = ("metrics.json", "per_body_part.md", "per_body_part.csv", "predictions_images.csv",
                "predictions_studies.csv", "submission.csv", "sample_predictions.png", "roc.png",
                "confusion.png", "reliability.png")


def _write_tree(root: Path) -> None:
    """6 train patients and 5 valid patients per part, alternating labels; one truncated valid image."""
    rng = np.random.default_rng(0)
    images: dict[str, list[str]] = {"train": [], "valid": []}
    studies: dict[str, list[str]] = {"train": [], "valid": []}
    patient = 0
    for split, n_patients in (("train", 6), ("valid", 5)):
        for part in PARTS:
            for k in range(n_patients):
                patient += 1
                pid = patient if split == "train" else 11000 + patient
                label = k % 2
                study = f"MURA-v1.1/{split}/{part}/patient{pid:05d}/study1_{'positive' if label else 'negative'}/"
                studies[split].append(f"{study},{label}")
                for view in range(1, 2 + k % 3):
                    pixels = rng.integers(0, 120, (36, 28)).astype(np.uint8)
                    if label:
                        pixels[10:20, 8:18] = 255  # a bright "lesion"
                    target = root / study / f"image{view}.png"
                    target.parent.mkdir(parents=True, exist_ok=True)
                    Image.fromarray(pixels).save(target)
                    images[split].append(f"{study}image{view}.png")
    good = (root / images["valid"][0]).read_bytes()
    (root / TRUNCATED).write_bytes(good[:40])  # PNG magic, then nothing: indexes fine, cannot decode
    images["valid"].append(TRUNCATED)
    assert TRUNCATED.rsplit("/", 1)[0] + "/" in {s.split(",")[0] for s in studies["valid"]}
    for split in ("train", "valid"):
        (root / "MURA-v1.1" / f"{split}_image_paths.csv").write_text("\n".join(images[split]) + "\n")
        (root / "MURA-v1.1" / f"{split}_labeled_studies.csv").write_text("\n".join(studies[split]) + "\n")


def _checkpoint(path: Path, seed: int, size: int = 32, temperature: float = 1.0) -> Path:
    torch.manual_seed(seed)
    model = create_model("mobilenet_v2")
    # A random network in eval mode maps every image to ~the same logit; give its batch norms the
    # statistics of one batch and a wider head so that probabilities differ between images.
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.reset_running_stats()
            module.momentum = None
    model.train()
    with torch.no_grad():
        model(torch.rand(8, 1, size, size))
        model.classifier[1].weight.mul_(100)
    model.eval()
    meta = CheckpointMeta(
        model=ModelConfig(name="mobilenet_v2"),
        preprocessing=Preprocessing.for_channels(size, 1),
        experiment={"data": {"val_fraction": VAL_FRACTION, "split_seed": SPLIT_SEED, "body_parts": []}},
        temperature=temperature,
    )
    return save_checkpoint(path, model, meta)


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("evaluation")
    _write_tree(base / "mura")
    return {
        "root": base / "mura",
        "a": _checkpoint(base / "a.ckpt", seed=0),
        "b": _checkpoint(base / "b.ckpt", seed=1, size=40, temperature=2.0),
        "base": base,
    }


@pytest.fixture(scope="module")
def report(setup):
    return evaluate([setup["a"]], setup["root"], out=setup["base"] / "eval", n_boot=100, progress=False)


def test_evaluate_writes_every_output(setup, report):
    out = setup["base"] / "eval"
    for name in OUTPUT_FILES:
        assert (out / name).is_file() and (out / name).stat().st_size > 0, name
    assert not list(out.glob(".*.tmp"))
    metrics = json.loads((out / "metrics.json").read_text())
    for level in ("image", "study"):
        section = metrics[level]
        for key in ("auroc", "kappa", "accuracy", "sensitivity", "specificity", "f1", "ci95", "n", "by_body_part"):
            assert key in section, (level, key)
        assert set(section["by_body_part"]) == set(PARTS)
        assert len(section["by_body_part"]["XR_HAND"]["ci95"]["kappa"]) == 2
    for key in ("threshold", "temperature", "ece", "checkpoints", "split", "xraylens_version", "skipped"):
        assert key in metrics, key
    assert metrics["study"]["n"] == 10 and metrics["split"] == "valid"
    assert metrics["threshold"] == 0.5 and metrics["temperature"] == 1.0 and metrics["ece"]["after"] is None

    images = pd.read_csv(out / "predictions_images.csv")
    studies = pd.read_csv(out / "predictions_studies.csv")
    assert tuple(images.columns) == IMAGE_COLUMNS and tuple(studies.columns) == STUDY_COLUMNS
    assert studies["n_views"].sum() == len(images) == metrics["image"]["n"]
    assert studies["probability"].between(0, 1).all() and set(studies["prediction"]) <= {0, 1}
    rows = list(csv.reader((out / "submission.csv").open()))
    assert len(rows) == 10
    assert all(re.fullmatch(r"MURA-v1\.1/valid/XR_[A-Z]+/patient\d+/study\d+_(positive|negative)/", r[0])
               and r[1] in ("0", "1") for r in rows)
    table = pd.read_csv(out / "per_body_part.csv")
    assert table["body_part"].tolist() == [*sorted(PARTS), "all"]
    assert {"n_studies", "study_auroc", "study_auroc_lo", "kappa", "kappa_hi", "accuracy", "sensitivity",
            "specificity", "image_auroc"} <= set(table.columns)
    assert "| body part | n studies | study AUROC" in (out / "per_body_part.md").read_text()
    assert "AUROC" in report.summary and report.paths["roc"] == out / "roc.png"


def test_unreadable_image_is_skipped_and_counted(report):
    skipped = report.metrics["skipped"]
    assert skipped["count"] == 1 and skipped["unreadable"] == [TRUNCATED]
    assert TRUNCATED not in set(report.images["path"])
    study = TRUNCATED.rsplit("/", 1)[0] + "/"
    assert study in set(report.studies["study_path"])  # its readable view still counts


def test_study_probability_is_mean_of_its_views(report):
    means = report.images.groupby("study_path")["probability"].mean()
    studies = report.studies.set_index("study_path")["probability"]
    np.testing.assert_allclose(studies.loc[means.index], means)


def test_ensemble_is_the_mean_of_its_members(setup):
    from xraylens.data.mura import index_dataset

    table = index_dataset(setup["root"], splits=("valid",), progress=False).table
    a, b = load_checkpoint(setup["a"]), load_checkpoint(setup["b"])  # different sizes and temperatures
    pa = predict_table([a], table, batch_size=8, progress=False)
    pb = predict_table([b], table, batch_size=8, progress=False)
    both = predict_table([a, b], table, batch_size=8, progress=False)
    np.testing.assert_allclose(both, (pa + pb) / 2, rtol=1e-6, equal_nan=True)
    assert np.isnan(both).sum() == 1 and np.nanstd(pa) > 1e-3


def test_onnxruntime_engine_gives_pytorch_s_probabilities(setup, caplog):
    from xraylens.data.mura import index_dataset
    from xraylens.onnx_cpu import onnx_available

    if not onnx_available():
        pytest.skip("the onnx extra is not installed")
    table = index_dataset(setup["root"], splits=("valid",), progress=False).table
    models = [load_checkpoint(setup["a"]), load_checkpoint(setup["b"])]  # an ensemble of two sizes
    reference = predict_table(models, table, batch_size=8, progress=False)
    with caplog.at_level("WARNING"):
        onnx = predict_table(models, table, batch_size=8, progress=False, engine="onnxruntime")
    assert "PyTorch" not in caplog.text  # both exported and passed the parity check: no fallback
    # float32 rounding, amplified by the fixture's 100x head: ~4e-5 at most in a probability
    np.testing.assert_allclose(onnx, reference, atol=2e-4, equal_nan=True)
    assert not np.array_equal(onnx, reference, equal_nan=True)  # ONNX Runtime really ran
    assert np.isnan(onnx).sum() == 1 and np.nanstd(onnx) > 1e-3
    # auto: a job this small (19 images) would not pay for the export, so PyTorch runs it
    assert np.array_equal(predict_table(models, table, batch_size=8, progress=False, engine="auto"), reference,
                          equal_nan=True)


def test_calibration_and_threshold_use_the_training_validation_subset(setup):
    from xraylens.data.mura import index_dataset
    from xraylens.data.splits import split_train_val

    result = evaluate([setup["a"], setup["b"]], setup["root"], out=setup["base"] / "eval_cal", calibrate=True,
                      threshold="youden", n_boot=50, progress=False)
    m = result.metrics
    train = split_train_val(index_dataset(setup["root"], splits=("train",), progress=False).table,
                            VAL_FRACTION, SPLIT_SEED)
    assert m["validation"]["n_images"] == int((train["subset"] == "val").sum())
    assert (m["validation"]["val_fraction"], m["validation"]["split_seed"]) == (VAL_FRACTION, SPLIT_SEED)
    assert m["calibration"]["fitted"] and m["temperature"] > 0
    assert m["calibration"]["nll_after"] <= m["calibration"]["nll_before"] + 1e-9
    assert m["ece"]["after"] is not None and m["threshold_method"] == "youden"
    assert 0 < m["threshold"] < 1 and len(m["checkpoints"]) == 2
    preds = (result.studies["probability"] >= m["threshold"]).astype(int)
    assert (preds == result.studies["prediction"]).all()


def test_cli_evaluate(setup, capsys):
    from xraylens.cli import main

    out = setup["base"] / "eval_cli"
    code = main(["evaluate", str(setup["a"]), "--data", str(setup["root"]), "--out", str(out),
                 "--bootstrap", "20", "--body-part", "wrist", "--quiet"])
    assert code == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["body_parts"] == ["XR_WRIST"] and metrics["study"]["n"] == 5
    assert "study AUROC" in capsys.readouterr().out
    missing = main(["evaluate", str(setup["base"] / "nope.ckpt"), "--data", str(setup["root"]), "--out", str(out)])
    assert missing == 2 and "does not exist" in capsys.readouterr().err


def test_roc_curve_area_is_the_auroc():
    from xraylens.metrics import auroc
    from xraylens.plots.evaluation import roc_points

    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 200)
    s = np.round(rng.random(200) + 0.3 * y, 1)  # ties: diagonal steps
    fpr, tpr = roc_points(y, s)
    assert (fpr[0], tpr[0], fpr[-1], tpr[-1]) == (0, 0, 1, 1)
    assert np.trapezoid(tpr, fpr) == pytest.approx(auroc(y, s))


# ---------------------------------------------------------------- per finding kind

WRIST, HAND = "MURA-v1.1/valid/XR_WRIST", "MURA-v1.1/valid/XR_HAND"
# Abnormal valid studies of the tree: wrist 11014 (2 views + the truncated image3), wrist 11016 (1 view),
# hand 11019 (2 views), hand 11021 (1 view, no box: left out of every kind).
KIND_BOXES = (
    (f"{WRIST}/patient11014/study1_positive/image1.png", "fracture"),
    (TRUNCATED, "lesion"),  # unreadable, but still makes 11014 a lesion study
    (f"{WRIST}/patient11016/study1_positive/image1.png", "hardware"),
    (f"{HAND}/patient11019/study1_positive/image1.png", "fracture"),
    (f"{HAND}/patient11019/study1_positive/image2.png", "hardware"),
)
KIND_STUDIES = {"fracture": {"11014", "11019"}, "hardware": {"11016", "11019"}, "lesion": {"11014"}}
KIND_IMAGES = {  # an image without a box counts for every kind of its study
    "fracture": {"11014/image1", "11014/image2", "11019/image1"},
    "hardware": {"11016/image1", "11019/image2"},
    "lesion": {"11014/image2"},
}


def _write_boxes(path: Path) -> Path:
    path.write_text("path,x0,y0,x1,y1,kind\n" + "".join(f"{p},3,4,12,14,{k}\n" for p, k in KIND_BOXES))
    return path


def _patient(path: str) -> str:
    return re.search(r"patient(\d+)", path).group(1)


def test_no_box_table_means_no_per_kind_output(setup, report):
    assert "per_kind" not in report.metrics and "boxes" not in report.metrics
    assert not (setup["base"] / "eval" / "per_kind.md").exists() and "finding kind" not in report.summary


def test_cli_evaluate_reports_every_finding_kind(setup, report, capsys):
    from sklearn.metrics import cohen_kappa_score, roc_auc_score

    from xraylens.cli import main

    out = setup["base"] / "eval_kinds"
    boxes = _write_boxes(setup["base"] / "my_boxes.csv")  # outside the data folder: other tests see no table
    code = main(["evaluate", str(setup["a"]), "--data", str(setup["root"]), "--out", str(out),
                 "--bootstrap", "30", "--boxes", str(boxes), "--quiet"])
    assert code == 0
    printed = capsys.readouterr().out
    metrics = json.loads((out / "metrics.json").read_text())
    per_kind = metrics["per_kind"]
    assert list(per_kind) == ["fracture", "hardware", "lesion"] and metrics["boxes"] == str(boxes)
    studies = pd.read_csv(out / "predictions_studies.csv")
    images = pd.read_csv(out / "predictions_images.csv")
    studies["patient"] = studies["study_path"].map(_patient)
    images["key"] = images["path"].map(lambda p: f"{_patient(p)}/{p.rsplit('/', 1)[1].removesuffix('.png')}")
    for kind, entry in per_kind.items():
        cohort = studies[(studies["label"] == 0) | studies["patient"].isin(KIND_STUDIES[kind])]
        assert entry["n_positive_studies"] == len(KIND_STUDIES[kind]) and entry["n_negative_studies"] == 6
        assert entry["study"]["auroc"] == pytest.approx(roc_auc_score(cohort["label"], cohort["probability"]))
        kappa = cohen_kappa_score(cohort["label"], cohort["prediction"])
        assert entry["study"]["kappa"] == (pytest.approx(kappa) if np.isfinite(kappa) else None)
        pictures = images[(images["label"] == 0) | images["key"].isin(KIND_IMAGES[kind])]
        assert entry["n_positive_images"] == len(KIND_IMAGES[kind]) and entry["n_negative_images"] == 12
        assert entry["image"]["auroc"] == pytest.approx(roc_auc_score(pictures["label"], pictures["probability"]))
        assert len(entry["study"]["ci95"]["auroc"]) == len(entry["image"]["ci95"]["kappa"]) == 2
        assert f"{kind}: study AUROC" in printed
    table = pd.read_csv(out / "per_kind.csv")
    assert table["kind"].tolist() == ["fracture", "hardware", "lesion"]
    assert {"study_auroc_lo", "study_kappa_hi", "image_auroc", "image_kappa"} <= set(table.columns)
    assert "| fracture | 2 / 6 |" in (out / "per_kind.md").read_text()
    assert metrics["study"]["auroc"] == report.metrics["study"]["auroc"]  # the overall numbers do not move


def test_box_table_in_the_data_folder_is_used_by_default(setup, tmp_path):
    import shutil

    root = tmp_path / "mura"
    shutil.copytree(setup["root"], root)
    _write_boxes(root / "boxes.csv")
    out = tmp_path / "eval"
    result = evaluate([setup["a"]], root, out=out, n_boot=20, progress=False)
    assert set(result.metrics["per_kind"]) == {"fracture", "hardware", "lesion"}
    assert result.paths["per_kind_md"] == out / "per_kind.md" and "per finding kind: fracture" in result.summary
    assert result.metrics["skipped"]["unreadable"] == [TRUNCATED]  # still skipped, and lesion still counted
    assert result.metrics["per_kind"]["lesion"]["n_positive_studies"] == 1
    (root / "boxes.csv").unlink()  # rerun without a table: the stale per-kind files go with it
    again = evaluate([setup["a"]], root, out=out, n_boot=20, progress=False, overwrite=True)
    assert "per_kind" not in again.metrics and not (out / "per_kind.md").exists() and not (out / "per_kind.csv").exists()
