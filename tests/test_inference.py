"""Predictor: one path from file to result; studies, bad files, calibration, threads, and `xraylens predict`."""

from __future__ import annotations

import csv
import json
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from model_helpers import lively_model
from xraylens.cli import main
from xraylens.config import ModelConfig
from xraylens.data.preprocess import Preprocessing, prepare
from xraylens.inference import Predictor, collect_inputs, write_predictions
from xraylens.models import CheckpointMeta, create_model, save_checkpoint


def make_checkpoint(path: Path, *, temperature: float = 1.0, threshold: float = 0.5) -> Path:
    model = lively_model()
    meta = CheckpointMeta(model=ModelConfig(), preprocessing=Preprocessing.for_channels(64, 1),
                          temperature=temperature, threshold=threshold, summary={"best_val_loss": 0.5})
    return save_checkpoint(path, model, meta)


def write_png(path: Path, seed: int, shape: tuple[int, int] = (90, 70)) -> Path:
    rng = np.random.default_rng(seed)
    ys, xs = np.mgrid[0 : shape[0], 0 : shape[1]]
    img = 0.3 + 0.4 * (((xs - shape[1] / 2) / (shape[1] / 4)) ** 2 + ((ys - shape[0] / 2) / (shape[0] / 3)) ** 2 < 1)
    img = np.clip(img + rng.normal(0, 0.1, shape), 0, 1)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray((img * 255).astype(np.uint8)).save(path)
    return path


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_checkpoint(tmp_path_factory.mktemp("ckpt") / "m.ckpt", temperature=1.7, threshold=0.4)


@pytest.fixture(scope="module")
def predictor(ckpt: Path) -> Predictor:
    return Predictor.from_checkpoint(ckpt)


@pytest.fixture
def study_tree(tmp_path: Path) -> Path:
    """MURA-like: two studies (2 views and 1 view) and one bad file."""
    root = tmp_path / "XR_WRIST" / "patient00001"
    write_png(root / "study1_positive" / "image1.png", 1)
    write_png(root / "study1_positive" / "image2.png", 2, (70, 100))
    write_png(root / "study2_negative" / "image1.png", 3)
    (root / "study2_negative" / "image2.png").write_text("<html>404 not found</html>")
    (root / "study2_negative" / "._image1.png").write_bytes(b"\0\5\26\7")  # macOS junk: skipped silently
    return tmp_path


def test_probability_uses_checkpoint_temperature_and_threshold(tmp_path: Path, ckpt: Path, predictor) -> None:
    from xraylens.models import load_checkpoint

    path = write_png(tmp_path / "a.png", 0)
    result = predictor.predict_image(path)
    loaded = load_checkpoint(ckpt)
    from xraylens.data.images import read_image

    x, _ = prepare(read_image(path), loaded.meta.preprocessing)
    with torch.no_grad():
        logit = loaded.model(x[None]).item()
    assert result.probability == pytest.approx(1 / (1 + np.exp(-logit / 1.7)), abs=1e-6)
    assert result.threshold == 0.4
    assert result.verdict == ("abnormal" if result.probability >= 0.4 else "normal")
    assert (result.width, result.height) == (70, 90)
    assert result.heatmap is None and result.boxes == () and result.explanation is None


def test_array_and_file_give_the_same_probability(tmp_path: Path, predictor) -> None:
    from xraylens.data.images import read_image

    path = write_png(tmp_path / "a.png", 4)
    assert predictor.predict_image(read_image(path)).probability == pytest.approx(
        predictor.predict_image(path).probability, abs=1e-9)


def test_explain_gives_heatmap_at_original_size_and_boxes_inside(tmp_path: Path, predictor) -> None:
    path = write_png(tmp_path / "XR_HAND" / "a.png", 5, (120, 50))
    result = predictor.predict_image(path, explain=True)
    assert result.heatmap.shape == (120, 50) and result.heatmap.dtype == np.float32
    assert result.heatmap.min() >= 0.0 and result.heatmap.max() <= 1.0
    assert result.boxes, "a non-flat Grad-CAM map has at least one region"
    for box in result.boxes:
        assert 0 <= box.x0 < box.x1 <= 50 and 0 <= box.y0 < box.y1 <= 120
    assert "hand radiograph" in result.explanation and f"{result.probability:.2f}" in result.explanation


def test_batches_match_single_images(study_tree: Path, predictor) -> None:
    paths, _ = collect_inputs([study_tree])
    batched = predictor.predict_many(paths, batch_size=2, progress=False)
    single = {p: predictor.predict_image(p).probability for p in map(str, paths) if p.endswith("1.png")}
    for p in batched.images:
        if p.source in single:
            assert p.probability == pytest.approx(single[p.source], abs=1e-5)  # float32 kernels differ by batch size


def test_predict_many_groups_studies_and_reports_bad_files(study_tree: Path, predictor) -> None:
    paths, missing = collect_inputs([study_tree, study_tree / "nope.png"])
    assert len(paths) == 4 and not any("._" in p for p in paths)
    assert [f.path for f in missing] == [str(study_tree / "nope.png")]
    result = predictor.predict_many(paths, batch_size=3, progress=False)
    assert len(result.images) == 3
    assert len(result.failures) == 1 and "not a PNG, JPEG or DICOM" in result.failures[0].reason
    studies = {Path(s.study).name: s for s in result.studies}
    views = [p.probability for p in result.images if "study1" in p.source]
    assert studies["study1_positive"].n_images == 2
    assert studies["study1_positive"].probability == pytest.approx(np.mean(views))
    assert studies["study1_positive"].body_part == "XR_WRIST"
    assert studies["study2_negative"].n_images == 1


def test_a_large_cpu_job_runs_the_logits_in_onnx_runtime_with_torch_s_answers(study_tree: Path, ckpt: Path,
                                                                                 monkeypatch) -> None:
    from xraylens import onnx_cpu

    if not onnx_cpu.onnx_available():
        pytest.skip("the onnx extra is not installed")
    paths, _ = collect_inputs([study_tree])
    reference = Predictor.from_checkpoint(ckpt, engine="torch").predict_many(paths, progress=False)
    monkeypatch.setattr(onnx_cpu, "AUTO_MIN_IMAGES", len(paths))  # this job counts as large
    fast = Predictor.from_checkpoint(ckpt)  # the default for a .ckpt: auto
    result = fast.predict_many(paths, batch_size=2, progress=False, explain=True)
    assert fast.engine.prepare(len(paths), (1, 64, 64)) == "onnxruntime"
    got = {p.source: p.probability for p in result.images}
    want = {p.source: p.probability for p in reference.images}
    assert got.keys() == want.keys() and len(got) == 3
    assert got == pytest.approx(want, abs=1e-5)
    assert got != want  # ONNX Runtime's kernels really ran (PyTorch's would repeat to the bit)
    assert all(p.explanation for p in result.images)  # heatmaps still come from the torch model
    assert [f.path for f in result.failures] == [f.path for f in reference.failures]
    small = Predictor.from_checkpoint(ckpt)
    monkeypatch.setattr(onnx_cpu, "AUTO_MIN_IMAGES", len(paths) + 1)
    assert small.engine.prepare(len(paths), (1, 64, 64)) == "torch"
    assert Predictor.from_checkpoint(ckpt, engine="torch").engine.prepare(10**6, (1, 64, 64)) == "torch"


def test_concurrent_requests_give_the_sequential_answers(tmp_path: Path, predictor) -> None:
    paths = [write_png(tmp_path / f"{i}.png", i, (60 + 5 * i, 64)) for i in range(4)]
    expected = [predictor.predict_image(p, explain=True) for p in paths]
    with ThreadPoolExecutor(max_workers=4) as pool:
        got = list(pool.map(lambda p: predictor.predict_image(p, explain=i_explain(p)), paths))
    for e, g in zip(expected, got, strict=True):
        assert g.probability == pytest.approx(e.probability, abs=1e-6)
        if g.heatmap is not None:
            assert np.abs(g.heatmap - e.heatmap).max() < 1e-4  # hooks of one request never leak into another


def i_explain(path: Path) -> bool:
    return int(path.stem) % 2 == 0  # mix plain and explained requests


def test_write_predictions_csv_and_json(study_tree: Path, predictor, tmp_path: Path) -> None:
    paths, _ = collect_inputs([study_tree])
    result = predictor.predict_many(paths, progress=False)
    rows = list(csv.DictReader(write_predictions(result, tmp_path / "p.csv").open()))
    assert [r["level"] for r in rows] == ["image"] * 3 + ["study"] * 2 + ["failed"]
    data = json.loads(write_predictions(result, tmp_path / "p.json").read_text())
    assert set(data) == {"images", "studies", "failures"}
    with pytest.raises(ValueError, match=r"\.csv or \.json"):
        write_predictions(result, tmp_path / "p.txt")


def test_cli_predict_folder_writes_image_and_study_rows(study_tree: Path, ckpt: Path, tmp_path: Path,
                                                        capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "preds.csv"
    code = main(["predict", str(ckpt), str(study_tree), "--out", str(out), "--no-progress", "--batch-size", "2"])
    captured = capsys.readouterr()
    assert code == 0
    rows = list(csv.DictReader(out.read_text().splitlines()))
    levels = [r["level"] for r in rows]
    assert levels.count("image") == 3 and levels.count("study") == 2
    study1 = next(r for r in rows if r["level"] == "study" and r["path"].endswith("study1_positive"))
    assert study1["n_images"] == "2" and study1["verdict"] in ("normal", "abnormal")
    assert "P(abnormal)" in captured.out and "study1_positive" in captured.out
    assert "1 input(s) could not be predicted" in captured.err and "image2.png" in captured.err


def test_cli_predict_explain_json(tmp_path: Path, ckpt: Path, capsys: pytest.CaptureFixture) -> None:
    img = write_png(tmp_path / "x" / "a.png", 7)
    out = tmp_path / "p.json"
    assert main(["predict", str(ckpt), str(tmp_path / "x" / "*.png"), "--explain", "--out", str(out),
                 "--no-progress"]) == 0
    data = json.loads(out.read_text())
    assert data["images"][0]["path"] == str(img)
    assert data["images"][0]["explanation"].startswith(("Normal", "Abnormal"))
    assert isinstance(data["images"][0]["boxes"], list)


def test_cli_predict_fails_only_when_nothing_predicted(tmp_path: Path, ckpt: Path,
                                                       capsys: pytest.CaptureFixture) -> None:
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"")
    assert main(["predict", str(ckpt), str(bad), "--no-progress"]) == 1
    assert "file is empty" in capsys.readouterr().err
    assert main(["predict", str(tmp_path / "missing.ckpt"), str(bad)]) == 2  # a CLIError, one line
    assert "does not exist" in capsys.readouterr().err


def test_explain_settings_come_from_the_checkpoint(tmp_path: Path) -> None:
    from xraylens.config import ExperimentConfig, ExplainConfig, to_dict
    from xraylens.inference import ModelCard

    experiment = to_dict(ExperimentConfig(explain=ExplainConfig(method="gradcam++", max_boxes=2)))
    meta = CheckpointMeta(model=ModelConfig(), preprocessing=Preprocessing.for_channels(64, 1),
                          experiment=experiment)
    card = ModelCard.from_meta(meta)
    assert card.explain.method == "gradcam++" and card.explain.max_boxes == 2
    assert ModelCard.from_dict(json.loads(json.dumps(card.to_dict()))) == card  # survives ONNX metadata
    path = save_checkpoint(tmp_path / "m.ckpt", create_model("mobilenet_v2"), meta)
    assert Predictor.from_checkpoint(path).method == "gradcam++"
    assert Predictor.from_checkpoint(path, method="cam").method == "cam"  # an explicit choice wins


def test_the_checkpoints_cam_layer_is_used_for_explanations(tmp_path: Path) -> None:
    """`--set explain.layer=features.6` at training time: predict and the server explain at that layer."""
    from xraylens.config import ExperimentConfig, ExplainConfig, to_dict
    from xraylens.explain.cams import compute_cams

    model = lively_model()
    experiment = to_dict(ExperimentConfig(explain=ExplainConfig(layer="features.6")))
    meta = CheckpointMeta(model=ModelConfig(), preprocessing=Preprocessing.for_channels(64, 1), experiment=experiment)
    predictor = Predictor.from_checkpoint(save_checkpoint(tmp_path / "m.ckpt", model, meta))
    assert predictor.card.explain.layer == "features.6"
    image = np.asarray(Image.open(write_png(tmp_path / "x.png", seed=3, shape=(64, 64))), dtype=np.float32) / 255
    x = prepare(image, Preprocessing.for_channels(64, 1))[0][None]
    wanted = compute_cams(model.eval(), "mobilenet_v2", x, layer="features.6")[0]
    default = compute_cams(model.eval(), "mobilenet_v2", x)[0]
    assert not np.allclose(wanted, default, atol=1e-3)  # the two layers really differ on this image
    got = predictor.predict_image(image, explain=True).heatmap
    np.testing.assert_allclose(got, wanted, atol=1e-4)
