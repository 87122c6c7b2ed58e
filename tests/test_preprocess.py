import numpy as np
import pytest
import torch

from xraylens.data.preprocess import Preprocessing, denormalize, letterbox, normalize, prepare, to_tensor


@pytest.mark.parametrize("shape", [(100, 50), (50, 100), (64, 64), (300, 17)])
def test_letterbox_keeps_aspect_and_centres(shape):
    image = np.ones(shape, np.float32)
    square, geo = letterbox(image, 64)
    assert square.shape == (64, 64)
    assert max(geo.new_h, geo.new_w) == 64
    assert abs(geo.new_h - shape[0] * geo.scale) <= 0.5 and abs(geo.new_w - shape[1] * geo.scale) <= 0.5
    # the image sits in the middle, the rest is black padding
    assert square[geo.top : geo.top + geo.new_h, geo.left : geo.left + geo.new_w].min() == pytest.approx(1.0)
    assert square.sum() == pytest.approx(geo.new_h * geo.new_w)


def test_heatmap_maps_back_to_original_geometry():
    image = np.zeros((200, 100), np.float32)
    square, geo = letterbox(image, 64)
    heat = np.zeros((64, 64), np.float32)
    # mark the input pixel under original (x=25..50, y=100..150)
    x0, y0, x1, y1 = (round(v) for v in geo.box_to_input((25, 100, 50, 150)))
    heat[y0:y1, x0:x1] = 1.0
    back = geo.to_original(heat)
    assert back.shape == (200, 100)
    ys, xs = np.nonzero(back > 0.5)
    assert abs(xs.min() - 25) <= 3 and abs(xs.max() - 50) <= 3
    assert abs(ys.min() - 100) <= 3 and abs(ys.max() - 150) <= 3
    bx = geo.box_to_original(geo.box_to_input((25, 100, 50, 150)))
    assert np.allclose(bx, (25, 100, 50, 150), atol=1e-4)


def test_box_to_original_clips_to_image():
    _, geo = letterbox(np.zeros((100, 50), np.float32), 64)
    assert geo.box_to_original((0, 0, 64, 64)) == (0.0, 0.0, 50.0, 100.0)


@pytest.mark.parametrize("channels", [1, 3])
def test_tensor_and_numpy_normalisation_agree_and_invert(channels):
    prep = Preprocessing.for_channels(32, channels)
    rng = np.random.default_rng(0)
    image = rng.random((40, 30), dtype=np.float32)
    tensor, _ = prepare(image, prep)
    square, _ = letterbox(image, 32)
    assert tensor.shape == (channels, 32, 32)
    assert np.allclose(normalize(square, prep), tensor.numpy(), atol=1e-6)
    assert np.allclose(denormalize(tensor, prep), square, atol=1e-5)
    as_uint8 = to_tensor((square * 255).round().astype(np.uint8), prep)
    assert torch.allclose(as_uint8, tensor, atol=0.02)


def test_preprocessing_round_trips_through_dict():
    prep = Preprocessing.for_channels(320, 3)
    assert Preprocessing.from_dict(prep.to_dict()) == prep
    with pytest.raises(ValueError, match="in_channels"):
        Preprocessing.for_channels(64, 2)


def _faint_line_film() -> np.ndarray:
    """A bright 'bone' band with a 1-px line 2 grey levels darker across it: what CLAHE should bring out."""
    rng = np.random.default_rng(0)
    img = np.full((128, 128), 0.1, np.float32)
    img[:, 40:90] = 0.8
    img[64, 40:90] -= 4 / 255
    return np.clip(img + rng.normal(0, 0.01, img.shape), 0, 1).astype(np.float32)  # film grain


def test_local_contrast_brings_out_a_faint_line_and_is_off_by_default():
    from xraylens.data.contrast import local_contrast

    img = _faint_line_film()
    assert local_contrast(img, 0.0) is img
    out = local_contrast(img, 2.0)
    assert out.dtype == img.dtype and out.shape == img.shape and 0.0 <= out.min() <= out.max() <= 1.0
    def step(a: np.ndarray) -> float:  # bone around the line minus the line, along its length
        a = a.astype(np.float32)
        return float(a[60:64, 45:85].mean() - a[64, 45:85].mean())

    assert step(out) > 2 * step(img)  # the step between line and bone is stretched
    assert step(local_contrast(img, 4.0)) > step(out)  # a higher clip limit stretches more
    as_uint8 = local_contrast((img * 255).round().astype(np.uint8), 2.0)
    assert as_uint8.dtype == np.uint8 and step(as_uint8) > 2 * step(img * 255)


def test_the_contrast_setting_travels_and_both_normalisations_apply_it():
    prep = Preprocessing.for_channels(128, 1, clahe_clip=2.0)
    assert Preprocessing.from_dict(prep.to_dict()) == prep
    old = {k: v for k, v in prep.to_dict().items() if k != "clahe_clip"}  # a checkpoint from before the option
    assert Preprocessing.from_dict(old).clahe_clip == 0.0
    img = _faint_line_film()
    with_clahe, plain = to_tensor(img, prep), to_tensor(img, Preprocessing.for_channels(128, 1))
    assert not torch.allclose(with_clahe, plain)
    np.testing.assert_allclose(normalize(img, prep), with_clahe.numpy(), atol=1e-5)  # the ONNX path agrees


def test_a_trained_checkpoint_carries_the_contrast_setting(tmp_path):
    from test_training import tiny_cfg, write_blob_mura
    from xraylens.config import ConfigError
    from xraylens.models import load_checkpoint
    from xraylens.training import check_train_settings, fit

    root = write_blob_mura(tmp_path / "mura", patients=24)
    with pytest.raises(ConfigError, match="clahe_clip"):
        check_train_settings(tiny_cfg(root, "data.clahe_clip=-1"))
    result = fit(tiny_cfg(root, "data.clahe_clip=2.0", "train.epochs=1"), tmp_path / "run", progress=False)
    assert load_checkpoint(result.best_checkpoint).meta.preprocessing.clahe_clip == 2.0
