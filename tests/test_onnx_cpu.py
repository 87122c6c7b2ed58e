"""The cached recipe's frozen trunk run by ONNX Runtime: the same features as PyTorch, faster on CPUs
without native bf16 (benchmarks/bench_features.py), and PyTorch whenever the export or a check fails."""

from __future__ import annotations

import logging

import pytest
import torch

from xraylens import onnx_cpu
from xraylens.features import compute_features
from xraylens.models import create_model
from xraylens.onnx_cpu import Trunk, resolve_engine, runner

pytestmark = pytest.mark.usefixtures("one_torch_thread")
needs_onnx = pytest.mark.skipif(not onnx_cpu.onnx_available(), reason="the onnx extra is not installed")


class ImageSet(torch.utils.data.Dataset):
    """``count`` random 64 px squares, as the feature loader yields them."""

    def __init__(self, count: int, seed: int = 0) -> None:
        self.x = torch.rand(count, 1, 64, 64, generator=torch.Generator().manual_seed(seed)) * 2 - 1

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int) -> dict:
        return {"image": self.x[i], "ok": True}


def test_auto_picks_onnxruntime_only_for_float32_features_on_a_cpu(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(onnx_cpu, "onnx_available", lambda: True)
    assert resolve_engine("auto", "32", "cpu") == "onnxruntime"
    assert resolve_engine("auto", "bf16", "cpu") == "torch"  # bf16 autocast is PyTorch's
    # precision auto (demo_cpu's) takes ONNX Runtime's float32 even where the CPU has native bf16
    assert resolve_engine("auto", "auto", "cpu") == "onnxruntime"
    assert resolve_engine("auto", "auto", "cuda:0") == "torch"
    assert resolve_engine("auto", "32", "cuda:0") == "torch"
    assert resolve_engine("torch", "32", "cpu") == "torch"
    assert resolve_engine("auto", "32", "cpu", images=100) == "torch"  # too few to pay for an export
    assert resolve_engine("auto", "32", "cpu", images=1000) == "onnxruntime"
    monkeypatch.setattr(onnx_cpu, "onnx_available", lambda: False)  # extra not installed: no error
    assert resolve_engine("auto", "32", "cpu") == "torch"
    with pytest.raises(ValueError, match="onnxruntime"):
        resolve_engine("tensorrt", "32", "cpu")


def test_features_are_float32_when_onnxruntime_computes_them(monkeypatch: pytest.MonkeyPatch) -> None:
    from xraylens import features

    monkeypatch.setattr(features, "resolve_precision", lambda precision, device="cpu": "bf16")  # a bf16 CPU
    assert features.feature_precision("auto", "onnxruntime") == "32"
    assert features.feature_precision("auto", "torch") == "bf16"
    assert features.feature_precision("32", "onnxruntime") == "32"
    with pytest.raises(ValueError, match="float32"):
        features.feature_precision("bf16", "onnxruntime")


@needs_onnx
@pytest.mark.parametrize(("name", "tail"), [("mil_efficientnet_lite0_multiscale", 0), ("mil_efficientnet_lite0", 1)])
def test_onnxruntime_stores_the_features_pytorch_stores(name: str, tail: int,
                                                        caplog: pytest.LogCaptureFixture) -> None:
    torch.manual_seed(0)
    model = create_model(name).eval()
    images = ImageSet(11)  # batches of 4, 4, 3: ONNX chunks of 8 and a dynamic batch axis
    with caplog.at_level(logging.INFO, logger="xraylens.features"):
        onnx, ok = compute_features(model, images, batch_size=4, progress=False, tail=tail, engine="onnxruntime")
    assert "computed by onnxruntime in float32" in caplog.text
    reference, _ = compute_features(model, images, batch_size=4, progress=False, tail=tail, engine="torch")
    assert onnx.shape == reference.shape and onnx.dtype == torch.float16 and ok.all()
    assert onnx.shape[1] == (232 if tail == 0 else 80)  # stacked blocks 2-4; or stopped before blocks.4
    # float16 storage rounds by one step at most: relative 2^-10 of the largest feature
    assert float((onnx.float() - reference.float()).abs().max()) <= float(reference.abs().max()) * 2**-10
    assert not torch.equal(onnx, torch.zeros_like(onnx))


def test_a_failed_export_falls_back_to_pytorch_and_says_why(monkeypatch: pytest.MonkeyPatch,
                                                            caplog: pytest.LogCaptureFixture) -> None:
    def broken(*args, **kwargs):
        raise RuntimeError("an operator the exporter does not know")

    monkeypatch.setattr(onnx_cpu, "OnnxModule", broken)
    torch.manual_seed(0)
    model = create_model("mil_efficientnet_lite0").eval()
    with caplog.at_level(logging.WARNING):
        features, _ = compute_features(model, ImageSet(3), batch_size=2, progress=False, engine="onnxruntime")
    assert "RuntimeError: an operator the exporter does not know" in caplog.text and "PyTorch" in caplog.text
    with torch.no_grad():
        assert torch.equal(features, model.features(ImageSet(3).x).half())


@needs_onnx
def test_features_that_disagree_with_pytorch_are_not_used(monkeypatch: pytest.MonkeyPatch,
                                                         caplog: pytest.LogCaptureFixture) -> None:
    real_call = onnx_cpu.OnnxModule.__call__
    monkeypatch.setattr(onnx_cpu.OnnxModule, "__call__", lambda self, x: real_call(self, x) * 1.01)
    torch.manual_seed(0)
    model = create_model("mil_efficientnet_lite0").eval()
    with caplog.at_level(logging.WARNING):
        run, engine = runner(Trunk(model), (1, 64, 64), "onnxruntime")
    assert engine == "torch" and "differs from PyTorch's" in caplog.text
    x = ImageSet(2).x
    with torch.no_grad():
        assert torch.equal(run(x), model.features(x))


def test_an_engine_that_cannot_run_the_recipe_is_refused_before_any_data_is_read(tmp_path) -> None:
    from test_transfer import _cfg
    from xraylens.config import ConfigError
    from xraylens.training import fit

    nowhere = tmp_path / "nowhere"
    for overrides, match in ((("train.feature_engine=tensorrt",), "train.feature_engine"),
                             (("train.feature_engine=onnxruntime", "train.feature_precision=bf16"), "float32"),
                             (("train.feature_engine=onnxruntime", "train.accelerator=gpu"), "runs on the CPU")):
        with pytest.raises(ConfigError, match=match):
            fit(_cfg(nowhere, "train.backbone=cached", *overrides), tmp_path / "run", progress=False)
    assert not (tmp_path / "run").exists()


@needs_onnx
def test_the_export_leaves_a_training_model_training() -> None:
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3), torch.nn.BatchNorm2d(4)).train()
    run, engine = runner(model, (1, 16, 16), "onnxruntime")
    assert engine == "onnxruntime" and model.training and model[1].training
    x = torch.rand(3, 1, 16, 16)
    with torch.no_grad():
        expected = model.eval()(x)  # ONNX holds the eval-mode graph: running statistics, not the batch's
    assert torch.allclose(run(x), expected, atol=1e-5)
    onnx_cpu.close(run)


@needs_onnx
def test_export_quiets_the_exporter_s_pass_logs_and_restores_their_levels(caplog: pytest.LogCaptureFixture) -> None:
    loggers = [logging.getLogger(name) for name in ("onnx_ir", "onnxscript")]
    for logger in loggers:
        logger.setLevel(logging.INFO)
    module = torch.nn.Sequential(torch.nn.Conv2d(1, 2, 3), torch.nn.ReLU()).eval()
    with caplog.at_level(logging.INFO):
        program = onnx_cpu.dynamo_export(module, torch.rand(2, 1, 8, 8), input_names=["x"], output_names=["y"])
    assert [i.name for i in program.model.graph.inputs] == ["x"]
    assert not [r for r in caplog.records if r.name.startswith(("onnx_ir", "onnxscript")) and r.levelno < logging.WARNING]
    assert [logger.level for logger in loggers] == [logging.INFO, logging.INFO]
    for logger in loggers:
        logger.setLevel(logging.NOTSET)
