"""The spatial MIL models go everywhere a model goes: predict, explain (their native map), ONNX export, serve.

Every MIL model runs every test: the stride-8 model's dilated blocks and the multi-scale model's stacked
maps must survive export and serving too.
"""

from __future__ import annotations

import base64
import io
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from xraylens.config import ExplainConfig, ModelConfig, to_dict
from xraylens.inference import Predictor
from xraylens.models import CheckpointMeta, create_model, preprocessing_for, save_checkpoint

pytestmark = pytest.mark.usefixtures("one_torch_thread")
STRIDES = {"mil_efficientnet_lite0": 16, "mil_efficientnet_lite0_stride8": 8, "mil_efficientnet_lite0_multiscale": 16}
SIZE = 96
SPOT = (30, 60)  # (y, x) of the bright square in the 120 x 90 test image


def bright_spot_png(path: Path, spot: tuple[int, int] | None, shape: tuple[int, int] = (120, 90)) -> Path:
    rng = np.random.default_rng(0)
    img = np.clip(0.3 + rng.normal(0, 0.03, shape), 0, 1)
    if spot is not None:
        y, x = spot
        img[y - 6 : y + 6, x - 6 : x + 6] = 1.0
    Image.fromarray((img * 255).astype(np.uint8)).save(path)
    return path


@pytest.fixture(scope="module", params=list(STRIDES))
def ckpt(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A MIL model whose instance classifier fires where the spot is, so its map has a known answer."""
    from xraylens.data.images import read_image
    from xraylens.data.preprocess import prepare

    name, stride = request.param, STRIDES[request.param]
    folder = tmp_path_factory.mktemp("mil")
    torch.manual_seed(0)
    model = create_model(name, pooling="topk").eval()
    cfg = ModelConfig(name=name, pooling="topk")
    prep = preprocessing_for(cfg, SIZE)
    spot = prepare(read_image(bright_spot_png(folder / "spot.png", SPOT)), prep)[0]
    plain = prepare(read_image(bright_spot_png(folder / "plain.png", None)), prep)[0]
    with torch.no_grad():
        f_spot, f_plain = model.features(torch.stack([spot, plain]))  # (K, 96 / stride, 96 / stride) each
        assert f_spot.shape[-1] == SIZE // stride
        cy, cx = int(SPOT[0] * 0.8) // stride, (int(SPOT[1] * 0.8) + 12) // stride  # letterbox: x0.8, 12 px pad
        direction = f_spot[:, cy, cx] - f_plain[:, cy, cx]
        direction /= direction.norm()
        on = float(direction @ f_spot[:, cy, cx])
        off = float(torch.einsum("k,khw->hw", direction, f_plain).max())
        first, last = model.head[0], model.head[3]
        first.weight.zero_()
        first.weight[0, :, 0, 0] = direction  # hidden unit 0: "looks like the spot"
        first.bias.zero_()
        first.bias[0] = -(off + on) / 2
        last.weight.zero_()
        last.weight[0, 0] = 6.0 / ((on - off) / 2)  # logit +3 on the spot, -3 or less elsewhere
        last.bias.fill_(-3.0)
    meta = CheckpointMeta(model=cfg, preprocessing=prep,
                          experiment={"explain": to_dict(ExplainConfig(method="saliency"))})
    return save_checkpoint(folder / "mil.ckpt", model, meta)


def test_predict_and_explain_with_the_native_map(ckpt: Path, tmp_path: Path) -> None:
    predictor = Predictor.from_checkpoint(ckpt)
    assert predictor.method == "saliency"  # the checkpoint's explain.method
    spot = bright_spot_png(tmp_path / "spot.png", SPOT)
    plain = bright_spot_png(tmp_path / "plain.png", None)
    with_spot = predictor.predict_image(spot, explain=True)
    without = predictor.predict_image(plain)
    assert with_spot.probability > without.probability
    heat = with_spot.heatmap  # at the original size
    assert heat.shape == (120, 90)
    y, x = np.unravel_index(heat.argmax(), heat.shape)
    reach = STRIDES[predictor.card.architecture]  # one cell of the map, in the image's pixels (before letterbox)
    assert abs(y - 30) <= reach and abs(x - 60) <= reach


def test_explain_cli_uses_the_method_the_checkpoint_was_trained_with(ckpt: Path, tmp_path: Path) -> None:
    """`xraylens explain CKPT IMG` without --method draws the checkpoint's explain.method (here the native map)."""
    import pandas as pd

    from xraylens.cli import main

    spot = bright_spot_png(tmp_path / "spot.png", SPOT)
    assert main(["explain", str(ckpt), str(spot), "--out", str(tmp_path / "native"), "--quiet"]) == 0
    assert pd.read_csv(tmp_path / "native" / "explanations.csv")["method"].tolist() == ["saliency"]
    assert main(["explain", str(ckpt), str(spot), "--out", str(tmp_path / "grad"), "--quiet",
                 "--method", "gradcam"]) == 0  # an explicit method still wins
    assert pd.read_csv(tmp_path / "grad" / "explanations.csv")["method"].tolist() == ["gradcam"]


def test_onnx_export_matches_torch_and_serves(ckpt: Path, tmp_path: Path) -> None:
    pytest.importorskip("onnxruntime")
    pytest.importorskip("fastapi")
    from fastapi.testclient import TestClient

    from xraylens.export import export_onnx
    from xraylens.server.app import create_app

    result = export_onnx(ckpt, tmp_path / "mil.onnx", tolerance=1e-4)
    assert result.max_abs_diff <= 1e-4
    onnx_predictor = Predictor.from_checkpoint(result.path)
    torch_predictor = Predictor.from_checkpoint(ckpt)
    spot = bright_spot_png(tmp_path / "spot.png", SPOT)
    assert onnx_predictor.predict_image(spot).probability == pytest.approx(
        torch_predictor.predict_image(spot).probability, abs=1e-4)
    with TestClient(create_app(torch_predictor)) as client:
        response = client.post("/api/predict", files={"file": ("x.png", spot.read_bytes(), "image/png")})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["model"]["architecture"] == torch_predictor.card.architecture and body["explanation"]
    heat = np.asarray(Image.open(io.BytesIO(base64.b64decode(body["heatmap_png_base64"]))))
    assert heat.shape[:2] == (120, 90)
