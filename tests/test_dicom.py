"""DICOM reading: display transforms give the same image (and probability) as the equivalent PNG."""

from __future__ import annotations

import tracemalloc
from pathlib import Path

import numpy as np
import pytest

pydicom = pytest.importorskip("pydicom")

from pydicom.dataset import Dataset, FileDataset, FileMetaDataset  # noqa: E402
from pydicom.uid import ExplicitVRLittleEndian, JPEGLSLossless, RLELossless, generate_uid  # noqa: E402

from xraylens.data.dicom import dicom_size, read_dicom  # noqa: E402
from xraylens.data.images import ImageReadError, read_image, sniff_kind  # noqa: E402

DX_STORAGE = "1.2.840.10008.5.1.4.1.1.1.1"  # Digital X-Ray Image Storage - For Presentation


def write_dicom(path: Path, stored: np.ndarray, *, photometric: str = "MONOCHROME2", bits: int | None = None,
                slope: float | None = None, intercept: float | None = None, window: tuple | None = None,
                voi_lut: tuple[int, int, list[int]] | None = None, pixels: bool = True) -> Path:
    """A minimal DX file; ``window`` = (centre, width[, function]); ``voi_lut`` = (first_map, bits, data)."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = DX_STORAGE
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID, ds.SOPInstanceUID = DX_STORAGE, meta.MediaStorageSOPInstanceUID
    ds.Modality, ds.PatientID = "DX", "TEST"
    if pixels:
        ds.set_pixel_data(stored, photometric, bits or stored.dtype.itemsize * 8)
    else:
        ds.Rows, ds.Columns, ds.PhotometricInterpretation = stored.shape[-2], stored.shape[-1], photometric
    if slope is not None:
        ds.RescaleSlope, ds.RescaleIntercept = slope, intercept or 0
    if window is not None:
        ds.WindowCenter, ds.WindowWidth = window[0], window[1]
        if len(window) > 2:
            ds.VOILUTFunction = window[2]
    if voi_lut is not None:
        first, nbits, data = voi_lut
        item = Dataset()
        item.add_new(0x00283002, "US", [len(data), first, nbits])
        item.add_new(0x00283006, "US", data)
        ds.VOILUTSequence = [item]
    ds.save_as(path, enforce_file_format=True)
    return path


def base_image() -> np.ndarray:
    """(60, 45) uint8 with structure, covering 0..255."""
    ys, xs = np.mgrid[0:60, 0:45]
    img = (128 + 90 * np.sin(xs / 5.0) * np.cos(ys / 7.0) + (ys * 2 - 60)).clip(0, 255).astype(np.uint8)
    img[0, 0], img[-1, -1] = 0, 255
    return img


U8 = base_image().astype(np.int64)
EXACT = U8 / 255.0
LUT = [min(round(v * 65535 / 4080), 65535) for v in range(4096)]  # 12-bit stored -> 16-bit display

CASES = {
    # name: (stored, kwargs, expected float image)
    "mono2-8bit": (U8.astype(np.uint8), {}, EXACT),
    "mono2-12bit": ((U8 * 16).astype(np.uint16), {"bits": 12}, EXACT),
    "mono2-16bit": ((U8 * 257).astype(np.uint16), {"bits": 16}, EXACT),
    "mono1-12bit": ((4080 - U8 * 16).astype(np.uint16), {"bits": 12, "photometric": "MONOCHROME1"}, EXACT),
    "mono1-16bit": ((65535 - U8 * 257).astype(np.uint16), {"photometric": "MONOCHROME1"}, EXACT),
    "rescale": ((U8 * 16).astype(np.uint16), {"bits": 12, "slope": 0.5, "intercept": -1024}, EXACT),
    "signed-12bit": ((U8 * 16 - 2048).astype(np.int16), {"bits": 12}, EXACT),  # sign extension from bit 11
    "signed-rescale": ((U8 * 100 - 12000).astype(np.int16), {"slope": 2.0, "intercept": 5}, EXACT),
    "window-linear": ((U8 * 16).astype(np.uint16), {"bits": 12, "window": (2040.5, 4081)}, EXACT),
    "window-rescale": ((U8 * 16).astype(np.uint16),
                       {"bits": 12, "slope": 2.0, "intercept": -1000, "window": (3080, 8160, "LINEAR_EXACT")},
                       EXACT),
    "window-clips": ((U8 * 16).astype(np.uint16), {"bits": 12, "window": (2040, 2040, "LINEAR_EXACT")},
                     np.clip(U8 * 16 / 2040 - 0.5, 0, 1)),
    "mono1-window": ((4080 - U8 * 16).astype(np.uint16),
                     {"bits": 12, "photometric": "MONOCHROME1", "window": (2040, 4080, "LINEAR_EXACT")}, EXACT),
    "voi-lut": ((U8 * 16).astype(np.uint16), {"bits": 12, "voi_lut": (0, 16, LUT)}, EXACT),
    "voi-lut-beats-window": ((U8 * 16).astype(np.uint16),
                             {"bits": 12, "voi_lut": (0, 16, LUT), "window": (100, 50)}, EXACT),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_display_transforms_match_expected_image(tmp_path: Path, case: str) -> None:
    stored, kwargs, expected = CASES[case]
    path = write_dicom(tmp_path / "x.dcm", stored, **kwargs)
    image = read_dicom(path)
    assert image.dtype == np.float32 and image.shape == stored.shape
    assert np.abs(image - expected).max() < 1e-5, case


@pytest.fixture(scope="module")
def predictor(tmp_path_factory: pytest.TempPathFactory):
    import torch

    from xraylens.config import ModelConfig
    from xraylens.data.preprocess import Preprocessing
    from xraylens.inference import Predictor
    from xraylens.models import CheckpointMeta, create_model, head_layer, save_checkpoint

    torch.manual_seed(0)
    model = create_model("mobilenet_v2").train()
    for module in model.modules():  # random BN statistics flatten the output: calibrate them
        if isinstance(module, torch.nn.BatchNorm2d):
            module.reset_running_stats()
            module.momentum = None
    with torch.no_grad():
        model((torch.rand(8, 1, 64, 64) - 0.449) / 0.226)
    model.eval()
    torch.nn.init.normal_(head_layer(model, "mobilenet_v2").weight, std=0.05)
    path = save_checkpoint(tmp_path_factory.mktemp("ckpt") / "m.ckpt", model,
                           CheckpointMeta(model=ModelConfig(), preprocessing=Preprocessing.for_channels(64, 1)))
    return Predictor.from_checkpoint(path)


@pytest.mark.parametrize("case", ["mono2-8bit", "mono1-12bit", "mono2-16bit", "signed-rescale", "window-clips",
                                  "voi-lut"])
def test_dicom_and_equivalent_png_get_the_same_probability(tmp_path: Path, predictor, case: str) -> None:
    from PIL import Image

    stored, kwargs, expected = CASES[case]
    dcm = write_dicom(tmp_path / "x.dcm", stored, **kwargs)
    png = tmp_path / "x.png"
    Image.fromarray(np.rint(expected * 65535).astype(np.uint16)).save(png)  # 16-bit: no rounding to 8 bits
    p_dcm = predictor.predict_image(dcm).probability
    p_png = predictor.predict_image(png).probability
    assert abs(p_dcm - p_png) < 1e-4
    assert 0.0 < p_png < 1.0 and abs(p_png - 0.5) > 1e-3  # a model whose output depends on the image


@pytest.mark.parametrize("function", ["LINEAR", "LINEAR_EXACT", "SIGMOID"])
def test_float32_windowing_agrees_with_pydicom(tmp_path: Path, function: str) -> None:
    from pydicom.pixels import apply_windowing

    stored = np.arange(0, 4096, dtype=np.uint16).reshape(64, 64)
    path = write_dicom(tmp_path / "w.dcm", stored, bits=12, window=(1500.0, 1200.0, function))
    ds = pydicom.dcmread(path)
    reference = apply_windowing(ds.pixel_array, ds) / 4095.0  # pydicom scales to the 12-bit range
    assert np.abs(read_dicom(path) - reference).max() < 1e-5


def test_read_image_dispatches_dicom_and_sizes_from_header(tmp_path: Path) -> None:
    path = write_dicom(tmp_path / "scan", (U8 * 16).astype(np.uint16), bits=12)  # no extension: magic decides
    assert sniff_kind(path) == "dicom"
    assert np.abs(read_image(path) - EXACT).max() < 1e-5
    assert dicom_size(path) == U8.shape


def test_garbage_above_bits_stored_is_ignored(tmp_path: Path) -> None:
    path = write_dicom(tmp_path / "x.dcm", ((U8 * 16) | 0xF000).astype(np.uint16), bits=16)
    ds = pydicom.dcmread(path)
    ds.BitsStored, ds.HighBit = 12, 11  # the top 4 bits are overlay/garbage, as some modalities write
    ds.save_as(path)
    assert np.abs(read_dicom(path) - EXACT).max() < 1e-5


def test_folder_walk_takes_extensionless_dicom(tmp_path: Path) -> None:
    from xraylens.inference import collect_inputs

    write_dicom(tmp_path / "IM0001", (U8 * 16).astype(np.uint16), bits=12)
    (tmp_path / "README").write_text("not an image")
    (tmp_path / "notes.txt").write_text("not an image")
    assert collect_inputs([tmp_path])[0] == [str(tmp_path / "IM0001")]


def test_multi_frame_is_refused_clearly(tmp_path: Path) -> None:
    path = write_dicom(tmp_path / "cine.dcm", np.zeros((3, 16, 16), np.uint16), bits=12)
    with pytest.raises(ImageReadError, match=r"cine\.dcm: multi-frame DICOM \(3 frames\)"):
        read_dicom(path)


def test_missing_pixel_data_is_refused_clearly(tmp_path: Path) -> None:
    path = write_dicom(tmp_path / "header.dcm", np.zeros((16, 16), np.uint16), pixels=False)
    with pytest.raises(ImageReadError, match=r"header\.dcm: DICOM file has no \(7FE0,0010\) Pixel Data"):
        read_dicom(path)


def test_pixel_limit_is_checked_before_decoding(tmp_path: Path) -> None:
    path = write_dicom(tmp_path / "big.dcm", np.zeros((16, 16), np.uint16), bits=12)
    ds = pydicom.dcmread(path)
    ds.Rows, ds.Columns = 60000, 60000  # the header lies; decoding would fail, the limit must answer first
    ds.save_as(path)
    with pytest.raises(ImageReadError, match="over the limit of 50,000,000"):
        read_dicom(path)
    with pytest.raises(ImageReadError, match="over the limit of 100"):
        read_dicom(write_dicom(tmp_path / "small.dcm", np.zeros((16, 16), np.uint16), bits=12), max_pixels=100)


def test_rle_compressed_is_decoded(tmp_path: Path) -> None:
    path = write_dicom(tmp_path / "rle.dcm", (U8 * 16).astype(np.uint16), bits=12)
    ds = pydicom.dcmread(path)
    ds.compress(RLELossless)  # pydicom's own encoder and decoder: always available
    ds.save_as(path)
    assert np.abs(read_dicom(path) - EXACT).max() < 1e-5


def test_compressed_without_decoder_names_syntax_and_package(tmp_path: Path) -> None:
    from pydicom.encaps import encapsulate
    from pydicom.pixels import get_decoder

    if get_decoder(JPEGLSLossless).is_available:
        pytest.skip("a JPEG-LS decoder is installed here")
    path = write_dicom(tmp_path / "jls.dcm", np.zeros((16, 16), np.uint16), bits=12)
    ds = pydicom.dcmread(path)
    ds.file_meta.TransferSyntaxUID = JPEGLSLossless
    ds.PixelData = encapsulate([b"\xff\xd8\xff\xf7" + b"\0" * 32])
    ds["PixelData"].VR = "OB"
    ds.save_as(path)
    with pytest.raises(ImageReadError, match=r"jls\.dcm: pixel data is compressed as JPEG-LS.*pip install pyjpegls"):
        read_dicom(path)


def test_not_dicom_named_dcm_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "fake.dcm"
    path.write_text("this is not a DICOM file\n" * 20)
    with pytest.raises(ImageReadError, match=r"fake\.dcm"):
        read_image(path)


def test_large_radiograph_memory_stays_float32(tmp_path: Path) -> None:
    """3000 x 2500 16-bit with a window: no float64 copy of the image (60 MB) on top of float32."""
    rng = np.random.default_rng(0)
    stored = rng.integers(0, 4096, size=(3000, 2500), dtype=np.uint16)
    path = write_dicom(tmp_path / "big.dcm", stored, bits=12, slope=1.5, intercept=-100, window=(2000, 3000))
    del stored
    tracemalloc.start()
    try:
        image = read_dicom(path)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    n = 3000 * 2500
    assert image.dtype == np.float32 and image.shape == (3000, 2500)
    # stored bytes (2 B/px) + decoded uint16 (2 B/px) + float32 result (4 B/px) = 8 B/px; one float64 copy adds 8
    assert peak < 10 * n, f"peak {peak / 2**20:.0f} MB for a {n * 4 / 2**20:.0f} MB float32 image"
