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
