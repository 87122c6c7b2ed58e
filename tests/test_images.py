"""The image contract: every supported file becomes (H, W) float32 in [0, 1]; bad files get clear errors."""

from __future__ import annotations

import sys
import types
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from xraylens.data.images import ImageReadError, image_size, read_image, sniff_kind, to_uint8

GRAY = np.array([[0, 64, 128], [192, 255, 10]], dtype=np.uint8)  # (2, 3)


def _save(image: Image.Image, path: Path, **kwargs) -> Path:
    image.save(path, **kwargs)
    return path


def _check_contract(array: np.ndarray, shape: tuple[int, int]) -> None:
    assert array.dtype == np.float32
    assert array.shape == shape
    assert array.min() >= 0.0 and array.max() <= 1.0


def test_8bit_gray_png(tmp_path: Path) -> None:
    out = read_image(_save(Image.fromarray(GRAY), tmp_path / "g.png"))
    _check_contract(out, (2, 3))
    np.testing.assert_allclose(out, GRAY / 255.0, atol=1e-7)


def test_16bit_png_keeps_precision(tmp_path: Path) -> None:
    values = np.array([[0, 1, 256], [32768, 65534, 65535]], dtype=np.uint16)
    out = read_image(_save(Image.fromarray(values), tmp_path / "g16.png"))
    _check_contract(out, (2, 3))
    np.testing.assert_allclose(out, values / 65535.0, rtol=1e-6)
    assert out[0, 1] != out[0, 0]  # a one-count step survives: not squashed to 8 bits


def test_rgb_becomes_luminance(tmp_path: Path) -> None:
    rgb = np.zeros((2, 3, 3), np.uint8)
    rgb[..., 0] = 255  # pure red -> luma 0.299
    out = read_image(_save(Image.fromarray(rgb), tmp_path / "rgb.png"))
    _check_contract(out, (2, 3))
    np.testing.assert_allclose(out, 76 / 255.0, atol=1 / 255)


def test_gray_rgb_equals_gray(tmp_path: Path) -> None:
    rgb = np.repeat(GRAY[..., None], 3, axis=2)
    out = read_image(_save(Image.fromarray(rgb), tmp_path / "rgb.png"))
    np.testing.assert_allclose(out, GRAY / 255.0, atol=1e-7)


@pytest.mark.parametrize("mode", ["RGBA", "LA"])
def test_alpha_is_ignored(tmp_path: Path, mode: str) -> None:
    channels = [GRAY] * (3 if mode == "RGBA" else 1) + [np.zeros_like(GRAY)]  # fully transparent
    image = (
        Image.fromarray(np.stack(channels, axis=2), mode=mode)
        if mode == "RGBA"
        else Image.merge("LA", [Image.fromarray(c) for c in channels])
    )
    out = read_image(_save(image, tmp_path / f"{mode}.png"))
    _check_contract(out, (2, 3))
    np.testing.assert_allclose(out, GRAY / 255.0, atol=1e-7)


def test_palette_png(tmp_path: Path) -> None:
    palette = Image.new("P", (3, 2))
    palette.putpalette([0, 0, 0, 255, 255, 255, 128, 128, 128] + [0] * (256 * 3 - 9))
    palette.putdata([0, 1, 2, 2, 1, 0])
    out = read_image(_save(palette, tmp_path / "p.png", transparency=0))
    _check_contract(out, (2, 3))
    np.testing.assert_allclose(out, [[0, 1, 128 / 255], [128 / 255, 1, 0]], atol=1e-6)


def test_jpeg(tmp_path: Path) -> None:
    smooth = np.tile(np.linspace(0, 255, 32, dtype=np.uint8), (16, 1))
    out = read_image(_save(Image.fromarray(smooth), tmp_path / "x.jpg", quality=95))
    _check_contract(out, (16, 32))
    assert np.abs(out - smooth / 255.0).mean() < 0.02  # lossy, but close


def test_extension_does_not_matter(tmp_path: Path) -> None:
    path = _save(Image.fromarray(GRAY), tmp_path / "really_png.jpg", format="PNG")
    assert sniff_kind(path) == "png"
    np.testing.assert_allclose(read_image(path), GRAY / 255.0, atol=1e-7)


def test_image_size_from_header(tmp_path: Path) -> None:
    path = _save(Image.fromarray(np.zeros((7, 11), np.uint8)), tmp_path / "s.png")
    assert image_size(path) == (7, 11)


def test_too_many_pixels_refused_before_decoding(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = _save(Image.fromarray(np.zeros((100, 100), np.uint8)), tmp_path / "big.png")

    def no_decoding(self, *args, **kwargs):
        raise AssertionError("pixels were decoded")

    monkeypatch.setattr(Image.Image, "load", no_decoding)
    monkeypatch.setattr("PIL.PngImagePlugin.PngImageFile.load", no_decoding, raising=False)
    with pytest.raises(ImageReadError, match=r"big\.png.*10,000 pixels.*limit of 9,999.*max_pixels"):
        read_image(path, max_pixels=9_999)


def test_pillow_bomb_limit_becomes_image_read_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = _save(Image.fromarray(np.zeros((100, 100), np.uint8)), tmp_path / "bomb.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # Pillow errors above 2x this
    with pytest.raises(ImageReadError, match=r"bomb\.png.*decompression-bomb"):
        read_image(path, max_pixels=10**9)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "no such file"),
        (b"", "empty"),
        (b"<html>404 Not Found</html>", "not a PNG, JPEG or DICOM"),
    ],
)
def test_unreadable_files_named_in_error(tmp_path: Path, content: bytes | None, message: str) -> None:
    path = tmp_path / "image1.png"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(ImageReadError, match=message) as info:
        read_image(path)
    assert str(path) in str(info.value)


def test_truncated_png(tmp_path: Path) -> None:
    noise = np.random.default_rng(0).integers(0, 255, (64, 64), dtype=np.uint8)
    full = _save(Image.fromarray(noise), tmp_path / "full.png").read_bytes()
    cut = tmp_path / "cut.png"
    cut.write_bytes(full[: len(full) // 2])
    with pytest.raises(ImageReadError, match=r"cut\.png.*truncated or corrupt.*re-download"):
        read_image(cut)


def test_unsupported_format_even_if_pillow_knows_it(tmp_path: Path) -> None:
    path = _save(Image.fromarray(GRAY), tmp_path / "x.bmp")
    assert sniff_kind(path) is None
    with pytest.raises(ImageReadError, match="not a PNG, JPEG or DICOM"):
        read_image(path)


def test_dicom_dispatch(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "scan.bin"
    path.write_bytes(b"\0" * 128 + b"DICM" + b"\0" * 16)
    assert sniff_kind(path) == "dicom"
    calls = []
    fake = types.ModuleType("xraylens.data.dicom")
    fake.read_dicom = lambda p, max_pixels: calls.append((p, max_pixels)) or np.zeros((2, 2), np.float32)
    monkeypatch.setitem(sys.modules, "xraylens.data.dicom", fake)
    assert read_image(path, max_pixels=123).shape == (2, 2)
    assert calls == [(path, 123)]


def test_dicom_without_extra(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "scan.dcm"
    path.write_bytes(b"not really")
    monkeypatch.setitem(sys.modules, "xraylens.data.dicom", None)  # import now fails
    with pytest.raises(ImageReadError, match=r"scan\.dcm.*xraylens\[dicom\]"):
        read_image(path)


def test_to_uint8() -> None:
    floats = np.array([[0.0, 0.5, 1.0, 1.5, -1.0, np.nan]], np.float32)
    np.testing.assert_array_equal(to_uint8(floats), [[0, 128, 255, 255, 0, 0]])
    np.testing.assert_array_equal(to_uint8(np.array([0, 65535], np.uint16)), [0, 255])
    assert to_uint8(GRAY).dtype == np.uint8


def test_png_named_dcm_is_read_as_png(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "xraylens.data.dicom", None)
    path = _save(Image.fromarray(GRAY), tmp_path / "x.dcm", format="PNG")
    np.testing.assert_allclose(read_image(path), GRAY / 255.0, atol=1e-7)
