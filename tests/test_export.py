"""ONNX export: one file, metadata, dynamic batch, parity with torch, and a torch-free ONNX predictor."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ort = pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")

import torch  # noqa: E402
from PIL import Image  # noqa: E402

from model_helpers import lively_model  # noqa: E402
from xraylens.cli import main  # noqa: E402
from xraylens.config import ModelConfig  # noqa: E402
from xraylens.data.preprocess import Preprocessing  # noqa: E402
from xraylens.export import ExportResult, OnnxPredictor, read_card  # noqa: E402
from xraylens.inference import Predictor  # noqa: E402
from xraylens.models import CheckpointMeta, save_checkpoint  # noqa: E402


def write_png(path: Path, seed: int, shape: tuple[int, int]) -> Path:
    rng = np.random.default_rng(seed)
    img = np.clip(np.linspace(0, 1, shape[1])[None, :] * 0.6 + rng.normal(0.2, 0.1, shape), 0, 1)
    Image.fromarray((img * 255).astype(np.uint8)).save(path)
    return path


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, str]:
    """One export through the CLI, shared by every test.

    resnet18: the dynamo exporter's time grows with the number of graph nodes; it
    exports ~4x faster than mobilenet_v2 (about 10 s vs 40 s on 2 busy CPU cores).
    """
    folder = tmp_path_factory.mktemp("export")
    model = lively_model("resnet18")
    meta = CheckpointMeta(model=ModelConfig(name="resnet18"), preprocessing=Preprocessing.for_channels(64, 1),
                          temperature=1.5, threshold=0.35, summary={"epochs": 3})
    ckpt = save_checkpoint(folder / "m.ckpt", model, meta)
    real = write_png(folder / "real.png", 0, (80, 60))
    import contextlib
    import io

    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = main(["export", str(ckpt), "--images", str(real)])
    assert code == 0, out.getvalue()
    return ckpt, folder / "m.onnx", out.getvalue()


def test_export_writes_one_file_with_metadata(exported) -> None:
    ckpt, onnx_path, printed = exported
    assert onnx_path.is_file()
    assert [p.name for p in onnx_path.parent.iterdir() if p.name.startswith("m.onnx")] == ["m.onnx"]  # no .data
    assert "max |dP|" in printed and ": OK" in printed
    props = ort.InferenceSession(str(onnx_path)).get_modelmeta().custom_metadata_map
    full = json.loads(props["xraylens"])
    assert full["architecture"] == "resnet18" and json.loads(props["architecture"]) == "resnet18"
    assert full["preprocessing"] == Preprocessing.for_channels(64, 1).to_dict()
    assert full["class_names"] == ["normal", "abnormal"]
    assert full["threshold"] == 0.35 and full["temperature"] == 1.5 and full["summary"] == {"epochs": 3}
    assert "xraylens_version" in full
    assert read_card(onnx_path).threshold == 0.35


def test_dynamic_batch_and_parity_with_torch(exported) -> None:
    from xraylens.models import load_checkpoint

    ckpt, onnx_path, _ = exported
    session = ort.InferenceSession(str(onnx_path))
    model = load_checkpoint(ckpt).model
    rng = np.random.default_rng(1)
    for batch in (1, 5):
        x = rng.standard_normal((batch, 1, 64, 64)).astype(np.float32)
        logit, prob = session.run(["logit", "probability"], {"image": x})
        with torch.no_grad():
            ref = model(torch.from_numpy(x)).numpy()
        assert logit.shape == prob.shape == (batch, 1)
        assert np.abs(logit - ref).max() < 1e-4
        assert np.abs(prob - 1 / (1 + np.exp(-ref / 1.5))).max() < 1e-5  # temperature is in the graph
        assert np.ptp(prob) > 0.01 or batch == 1  # a meaningful comparison, not all 0.5


def test_onnx_predictor_matches_torch_predictor(exported, tmp_path: Path) -> None:
    ckpt, onnx_path, _ = exported
    torch_p = Predictor.from_checkpoint(ckpt)
    onnx_p = Predictor.from_checkpoint(onnx_path)  # engine inferred from .onnx
    assert isinstance(onnx_p, OnnxPredictor) and onnx_p.engine.name == "onnx"
    paths = [write_png(tmp_path / f"{i}.png", i, (50 + 20 * i, 90 - 10 * i)) for i in range(4)]
    a = torch_p.predict_many(paths, batch_size=3, progress=False)
    b = onnx_p.predict_many(paths, batch_size=3, progress=False)
    for x, y in zip(a.images, b.images, strict=True):
        assert abs(x.probability - y.probability) < 1e-5 and x.verdict == y.verdict
    assert abs(a.studies[0].probability - b.studies[0].probability) < 1e-5


def test_onnx_explain_needs_the_checkpoint(exported, tmp_path: Path) -> None:
    ckpt, onnx_path, _ = exported
    img = write_png(tmp_path / "a.png", 3, (64, 64))
    only_onnx = Predictor.from_checkpoint(onnx_path)
    assert not only_onnx.can_explain
    with pytest.raises(ValueError, match="heatmaps need the torch checkpoint"):
        only_onnx.predict_image(img, explain=True)
    with_ckpt = Predictor.from_checkpoint(ckpt, onnx=onnx_path)  # the .onnx is named, never found
    result = with_ckpt.predict_image(img, explain=True)
    assert with_ckpt.engine.name == "onnx" and result.heatmap.shape == (64, 64)
    assert result.probability == pytest.approx(Predictor.from_checkpoint(ckpt).predict_image(img).probability,
                                               abs=1e-5)


def test_onnx_engine_without_export_says_what_to_run(tmp_path: Path, exported) -> None:
    ckpt, _, _ = exported
    lonely = tmp_path / "other.ckpt"
    lonely.write_bytes(ckpt.read_bytes())
    with pytest.raises(FileNotFoundError, match="xraylens export"):
        Predictor.from_checkpoint(lonely, onnx=tmp_path / "other.onnx")


def test_an_onnx_file_beside_a_checkpoint_is_never_loaded_unasked(tmp_path: Path, exported,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """`--engine onnx` with a .ckpt used to open CKPT.onnx by itself: a file planted there would run."""
    from xraylens.cli import main
    from xraylens.inference import onnx_runtime

    ckpt, onnx_path, _ = exported
    run = tmp_path / "run"
    run.mkdir()
    (run / "best.ckpt").write_bytes(ckpt.read_bytes())
    (run / "best.onnx").write_bytes(onnx_path.read_bytes())  # planted, or simply stale
    opened = []
    monkeypatch.setattr(onnx_runtime, "inference_session", lambda path, device: opened.append(path))
    with pytest.raises(ValueError, match=r"--onnx .*best\.onnx.*never opens a \.onnx it was not given"):
        Predictor.from_checkpoint(run / "best.ckpt", engine="onnx")
    img = write_png(tmp_path / "a.png", 3, (64, 64))
    assert main(["predict", str(run / "best.ckpt"), str(img), "--engine", "onnx", "--no-progress"]) == 2
    assert Predictor.from_checkpoint(run / "best.ckpt").engine.name == "torch"  # the default: torch only
    assert opened == []


def test_onnx_predictor_runs_without_torch(exported, tmp_path: Path) -> None:
    _, onnx_path, _ = exported
    img = write_png(tmp_path / "a.png", 5, (70, 40))
    expected = Predictor.from_checkpoint(onnx_path).predict_image(img).probability
    code = (
        "import sys; sys.modules['torch'] = None  # any 'import torch' now fails\n"
        "from xraylens.inference import Predictor\n"
        f"p = Predictor.from_checkpoint({str(onnx_path)!r})\n"
        f"print(p.predict_image({str(img)!r}).probability)\n"
        "assert 'torchvision' not in sys.modules\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert float(out.stdout.strip()) == pytest.approx(expected, abs=1e-9)


def test_cli_export_exits_non_zero_above_tolerance(exported, monkeypatch: pytest.MonkeyPatch,
                                                   capsys: pytest.CaptureFixture) -> None:
    ckpt, onnx_path, _ = exported
    failing = ExportResult(onnx_path, max_abs_diff=3e-3, max_abs_diff_logit=1e-2, n_checked=5, tolerance=1e-4)
    monkeypatch.setattr("xraylens.export.export_onnx", lambda *a, **k: failing)
    assert main(["export", str(ckpt)]) == 1
    assert "FAILED" in capsys.readouterr().out
    assert ExportResult(onnx_path, 5e-5, 1e-4, 5, 1e-4).passed
