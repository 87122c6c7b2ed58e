"""The global-local model (GMIC-like): its parts do what they say, it learns from image labels, and it goes
everywhere a model goes: checkpoints, predict, explain (its native map), ONNX export, serve."""

from __future__ import annotations

import base64
import io
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from xraylens.models import create_model
from xraylens.models.global_local import PatchRetrieval, crop_patches

pytestmark = pytest.mark.usefixtures("one_torch_thread")
NAME = "gmic_efficientnet_lite0"


def test_retrieval_takes_the_hottest_cells_first_and_spreads_its_crops() -> None:
    cells = torch.zeros(1, 8, 8)
    cells[0, 2, 5] = 5.0  # hottest
    cells[0, 2, 6] = 4.0  # its neighbour: suppressed, the second crop goes elsewhere
    cells[0, 6, 1] = 3.0
    boxes = PatchRetrieval(patches=2, crop_fraction=0.25)(cells, size=128)  # 16 px cells, 32 px crops
    assert boxes.shape == (1, 2, 4)
    first, second = boxes[0].tolist()
    assert first == [72.0, 24.0, 104.0, 56.0]  # centred on cell (2, 5): x 88, y 40
    assert second == [8.0, 88.0, 40.0, 120.0]  # cell (6, 1): x 24, y 104
    edge = torch.zeros(1, 8, 8)
    edge[0, 0, 0] = 1.0
    x0, y0, x1, y1 = PatchRetrieval(patches=1, crop_fraction=0.25)(edge, size=128)[0, 0].tolist()
    assert (x0, y0, x1, y1) == (0.0, 0.0, 32.0, 32.0)  # clamped inside the image, still full size


def test_crops_hold_the_region_they_were_cut_from_enlarged() -> None:
    images = torch.zeros(2, 1, 64, 64)
    images[1, 0, 40:48, 8:16] = 1.0  # a bright square in the second image only
    boxes = torch.tensor([[[8.0, 40.0, 16.0, 48.0]], [[8.0, 40.0, 16.0, 48.0]]])
    crops = crop_patches(images, boxes, side=16)  # (2, 1, 16, 16): 2x enlarged
    assert crops.shape == (2, 1, 16, 16)
    assert float(crops[0].max()) == 0.0
    assert float(crops[1, 0, 2:-2, 2:-2].min()) == pytest.approx(1.0)


def test_every_logit_and_the_crops_come_from_one_pass() -> None:
    torch.manual_seed(0)
    model = create_model(NAME, pooling="topk").eval()
    x = torch.randn(3, 1, 128, 128)
    with torch.no_grad():
        parts = model.forward_parts(x)
        torch.testing.assert_close(model(x), parts.logit)
        torch.testing.assert_close(model.saliency(x), parts.cells)
        torch.testing.assert_close(parts.logit, 0.5 * (parts.global_logit + parts.local_logit))  # fusion's start
    assert parts.cells.shape == (3, 8, 8) and parts.boxes.shape == (3, 4, 4)
    torch.testing.assert_close(parts.attention.sum(1), torch.ones(3))
    side = parts.boxes[..., 2] - parts.boxes[..., 0]
    assert torch.all(side == 24)  # 3/16 of the input side


def test_cached_features_are_refused_with_the_reason() -> None:
    from test_transfer import _cfg
    from xraylens.config import ConfigError
    from xraylens.training import check_train_settings

    with pytest.raises(ConfigError, match="crops follow the global map"):
        check_train_settings(_cfg(Path("nowhere"), f"model.name={NAME}", "train.backbone=cached"))


# ---------------------------------------------------------------- trained on image labels


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Frozen ImageNet backbones, heads trained on the bright-disc set (disc = abnormal) from labels only."""
    from test_training import write_blob_mura
    from test_transfer import PACKAGED, WHY, _cfg
    from xraylens.training import fit

    if PACKAGED is None:
        pytest.skip(f"packaged ImageNet weights unavailable: {WHY}")
    root = write_blob_mura(tmp_path_factory.mktemp("blob") / "mura", side=64)
    cfg = _cfg(root, f"model.name={NAME}", "model.pretrained=true", "train.backbone=frozen", "train.epochs=3",
               "explain.method=saliency")
    return fit(cfg, tmp_path_factory.mktemp("gmic") / "run", progress=False).run_dir


@pytest.mark.slow
def test_it_learns_from_image_labels_with_its_backbones_frozen(trained: Path) -> None:
    from xraylens.models import load_checkpoint

    table = pd.read_csv(trained / "metrics.csv")
    assert table["train_loss"].iloc[-1] < table["train_loss"].iloc[0]
    assert table["val_auroc"].max() > 0.8
    loaded = load_checkpoint(trained / "checkpoints" / "best.ckpt")
    imagenet = create_model(NAME, pretrained=True)
    for part in ("backbone", "local_backbone"):  # batch-norm statistics included
        before, after = getattr(imagenet, part).state_dict(), getattr(loaded.model, part).state_dict()
        assert all(torch.equal(after[k], v) for k, v in before.items()), part
    fusion = loaded.model.head.fusion.weight.detach()
    assert not torch.equal(fusion, torch.full_like(fusion, 0.5))  # the fusion learned


def _disc_png(path: Path) -> Path:
    rng = np.random.default_rng(1)
    img = np.clip(rng.normal(0.3, 0.05, (64, 56)), 0, 1)
    img[:, 18:37] += 0.25
    yy, xx = np.mgrid[:64, :56]
    img[(yy - 20) ** 2 + (xx - 40) ** 2 <= 16] = 1.0
    Image.fromarray((np.clip(img, 0, 1) * 255).astype(np.uint8)).save(path)
    return path


@pytest.mark.slow
def test_predict_explain_export_and_serve(trained: Path, tmp_path: Path) -> None:
    pytest.importorskip("onnxruntime")
    pytest.importorskip("fastapi")
    from fastapi.testclient import TestClient

    from xraylens.data.images import read_image
    from xraylens.data.preprocess import prepare
    from xraylens.explain.cams import compute_cams
    from xraylens.export import export_onnx
    from xraylens.inference import Predictor
    from xraylens.models import load_checkpoint
    from xraylens.server.app import create_app

    ckpt = trained / "checkpoints" / "best.ckpt"
    predictor = Predictor.from_checkpoint(ckpt)
    assert predictor.method == "saliency"
    disc = _disc_png(tmp_path / "disc.png")
    result = predictor.predict_image(disc, explain=True)
    assert result.heatmap.shape == (64, 56) and 0.0 <= result.probability <= 1.0
    loaded = load_checkpoint(ckpt)
    model = loaded.model
    batch = prepare(read_image(disc), loaded.meta.preprocessing)[0][None].expand(2, -1, -1, -1).contiguous()
    for method in ("saliency", "gradcam"):  # the native map and Grad-CAM at the global backbone's last stage
        maps = compute_cams(model, NAME, batch, method=method)
        # Grad-CAM is ReLU'd and may be all zero where the model sees no positive evidence; the native map is
        # shifted to its minimum, so its hottest cell is always 1
        assert maps.shape == (2, 64, 64) and np.isfinite(maps).all() and 0.0 <= maps.min() <= maps.max() <= 1.0
        assert method != "saliency" or maps.max() == pytest.approx(1.0)

    exported = export_onnx(ckpt, tmp_path / "gmic.onnx", tolerance=1e-4)  # RoiAlign and TopK inside
    assert exported.max_abs_diff <= 1e-4
    onnx_predictor = Predictor.from_checkpoint(exported.path)
    assert onnx_predictor.predict_image(disc).probability == pytest.approx(result.probability, abs=1e-4)
    with TestClient(create_app(predictor)) as client:
        response = client.post("/api/predict", files={"file": ("x.png", disc.read_bytes(), "image/png")})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["model"]["architecture"] == NAME
    heat = np.asarray(Image.open(io.BytesIO(base64.b64decode(body["heatmap_png_base64"]))))
    assert heat.shape[:2] == (64, 56)
