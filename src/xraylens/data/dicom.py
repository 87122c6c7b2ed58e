"""DICOM radiographs -> the one image contract (2-D float32 in [0, 1]).

Why this is more than ``ds.pixel_array / max``: stored values are not display
values. A DICOM radiograph carries a modality transform (rescale slope and
intercept, or a modality LUT), a display window (VOI LUT or window centre and
width) chosen by the modality or a technologist, and a polarity
(MONOCHROME1 = white is low). Applying them in the standard's order gives the
image a radiologist sees, which is what the network was trained on (MURA PNGs
are exports of exactly that view).

Memory: a 3000 x 2500 16-bit detector image is 15 MB as stored and 30 MB as
float32. pydicom's ``apply_modality_lut``/``apply_windowing`` return float64
(60 MB each, plus boolean masks), so the linear rescale and the windowing are
done here in float32, in place; pydicom's ``apply_voi`` (an integer table
lookup) and ``apply_modality_lut`` (for a modality LUT *sequence*) are used
where a table is present.

Needs the ``dicom`` extra (pydicom); imported only where used.
"""

from __future__ import annotations

import contextlib
import logging
import math
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from xraylens.data.image_errors import DEFAULT_MAX_PIXELS, ImageReadError

if TYPE_CHECKING:
    from pydicom.dataset import Dataset

log = logging.getLogger(__name__)

_DEFER_SIZE = 1 << 20  # pixel bytes stay on disk until the header checks pass
_CODEC_HINTS = {
    # what to install when pydicom has no decoder for a transfer syntax
    "JPEG-LS": "pip install pyjpegls  (or: pip install python-gdcm)",
    "JPEG 2000": "pip install pylibjpeg pylibjpeg-openjpeg  (or: pip install python-gdcm)",
    "JPEG": "pip install pylibjpeg pylibjpeg-libjpeg  (or: pip install python-gdcm)",
    "RLE": "pip install pylibjpeg pylibjpeg-rle",
    "Deflate": "(pydicom decodes it natively; the file may be corrupt)",
}


def _pydicom() -> Any:
    try:
        import pydicom
    except ImportError as exc:
        raise ImportError("DICOM support needs pydicom: pip install 'xraylens[dicom]'") from exc
    return pydicom


def _read_header(path: str | Path, *, stop_before_pixels: bool) -> Dataset:
    pydicom = _pydicom()
    from pydicom.errors import InvalidDicomError

    try:
        try:
            return pydicom.dcmread(path, defer_size=_DEFER_SIZE, stop_before_pixels=stop_before_pixels)
        except InvalidDicomError:
            # No 128-byte preamble + "DICM" (some old exporters): parse anyway, the checks below decide.
            return pydicom.dcmread(path, defer_size=_DEFER_SIZE, stop_before_pixels=stop_before_pixels,
                                   force=True)
    except FileNotFoundError as exc:
        raise ImageReadError(f"{path}: no such file") from exc
    except IsADirectoryError as exc:
        raise ImageReadError(f"{path}: is a folder, not a DICOM file") from exc
    except Exception as exc:  # noqa: BLE001 - pydicom raises many types on malformed files
        raise ImageReadError(
            f"{path}: cannot be parsed as DICOM ({type(exc).__name__}: {exc}); the file is corrupt or "
            "not DICOM: re-export it from the PACS"
        ) from exc


def dicom_size(path: str | Path) -> tuple[int, int]:
    """``(height, width)`` from the header alone (no pixel data read)."""
    ds = _read_header(path, stop_before_pixels=True)
    with _malformed_elements(path):
        return _rows_columns(ds, path)


@contextlib.contextmanager
def _malformed_elements(path: str | Path) -> Iterator[None]:
    """pydicom converts an element's bytes on first access, so a malformed one fails where it is read.

    Found by benchmarks/fuzz_readers.py: an unknown VR, an odd byte count for a
    16-bit value, a list where one number belongs raised NotImplementedError,
    BytesLengthException or TypeError from deep inside the header checks.
    """
    try:
        yield
    except (ImageReadError, MemoryError):
        raise
    except Exception as exc:  # noqa: BLE001 - pydicom raises many types on malformed elements
        raise ImageReadError(
            f"{path}: malformed DICOM header ({type(exc).__name__}: {str(exc)[:200]}); the file is corrupt: "
            "re-export it from the PACS"
        ) from exc


def _rows_columns(ds: Dataset, path: str | Path) -> tuple[int, int]:
    rows, cols = ds.get("Rows"), ds.get("Columns")
    if not rows or not cols:
        raise ImageReadError(
            f"{path}: DICOM file has no image (Rows/Columns missing); it may be a structured report, "
            "a presentation state or another non-image object: export the image series instead"
        )
    return int(rows), int(cols)


def read_dicom(path: str | Path, *, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Decode one single-frame DICOM radiograph to a 2-D float32 array in [0, 1], as displayed.

    Order (DICOM PS3.4 N.2): stored values -> modality transform (rescale or
    modality LUT) -> VOI (VOI LUT table, else window centre/width, else the
    image's own min..max) -> polarity (MONOCHROME1 is inverted so bone is bright).
    """
    ds = _read_header(path, stop_before_pixels=False)
    with _malformed_elements(path):
        _check_header(ds, path, max_pixels)
        stored = _decode(ds, path)  # (H, W) integer, or (H, W, 3) for colour
        photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2")).upper()
        if stored.ndim == 3:
            return _colour_to_gray(stored)
        del ds.PixelData  # the decoded array is all we need; drop the stored bytes
        values = _modality(stored, ds)
        del stored
        image = _voi(values, ds, path)
    if photometric == "MONOCHROME1":
        np.subtract(np.float32(1.0), image, out=image)
    return image


# ---------------------------------------------------------------- checks and decoding


def _check_header(ds: Dataset, path: str | Path, max_pixels: int) -> None:
    if "PixelData" not in ds:
        other = [k for k in ("FloatPixelData", "DoubleFloatPixelData") if k in ds]
        what = f"only {other[0]} (floating-point pixels, not supported)" if other else "no (7FE0,0010) Pixel Data"
        raise ImageReadError(
            f"{path}: DICOM file has {what}; it is not an image this tool can read (a report, a key "
            "object or a header-only export): export the radiograph itself"
        )
    rows, cols = _rows_columns(ds, path)
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    if frames > 1:
        raise ImageReadError(
            f"{path}: multi-frame DICOM ({frames} frames); xraylens reads single radiographs: "
            "split the frames into separate files (e.g. with dcmtk or pydicom) and predict each view"
        )
    if rows * cols > max_pixels:
        raise ImageReadError(
            f"{path}: {cols}x{rows} = {rows * cols:,} pixels is over the limit of {max_pixels:,} "
            "(checked from the header, before decoding); pass a larger max_pixels if you trust this file"
        )
    photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2")).upper()
    if photometric not in ("MONOCHROME1", "MONOCHROME2", "RGB") and not photometric.startswith("YBR"):
        raise ImageReadError(
            f"{path}: photometric interpretation {photometric!r} is not supported; "
            "expected MONOCHROME1, MONOCHROME2 or RGB"
        )


def _transfer_syntax(ds: Dataset) -> Any:
    meta = getattr(ds, "file_meta", None)
    uid = meta.get("TransferSyntaxUID") if meta is not None else None
    if uid is None:
        from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian

        uid = ImplicitVRLittleEndian if ds.is_implicit_VR in (True, None) else ExplicitVRLittleEndian
        if meta is not None:
            meta.TransferSyntaxUID = uid
    return uid


def _decode(ds: Dataset, path: str | Path) -> np.ndarray:
    from pydicom.pixels import get_decoder

    uid = _transfer_syntax(ds)
    name = getattr(uid, "name", str(uid))
    try:
        decoder = get_decoder(uid)
    except NotImplementedError as exc:
        raise ImageReadError(
            f"{path}: transfer syntax {name} ({uid}) has no pixel decoder in pydicom; "
            "convert the file to an uncompressed syntax (e.g. dcmtk: dcmdjpeg / dcmconv +te)"
        ) from exc
    if not decoder.is_available:
        hint = next((h for key, h in _CODEC_HINTS.items() if key.lower() in name.lower()), "pip install python-gdcm")
        raise ImageReadError(
            f"{path}: pixel data is compressed as {name} ({uid}) and no decoder for it is installed "
            f"(pydicom plugins: {'; '.join(decoder.missing_dependencies)}). Fix: {hint}"
        )
    try:
        array = ds.pixel_array
    except MemoryError:
        raise
    except Exception as exc:  # noqa: BLE001 - decoders raise many types on corrupt data
        raise ImageReadError(
            f"{path}: pixel data ({name}) cannot be decoded ({type(exc).__name__}: {exc}); "
            "the file is truncated or corrupt: re-export it"
        ) from exc
    if array.ndim == 3 and array.shape[-1] == 1:
        array = array[..., 0]
    if array.ndim not in (2, 3):
        raise ImageReadError(f"{path}: unexpected pixel array shape {array.shape}; expected one 2-D frame")
    return array


# ---------------------------------------------------------------- value transforms


def _modality(stored: np.ndarray, ds: Dataset) -> np.ndarray:
    """Stored values -> modality values (float32, or integer when no rescale is needed)."""
    if ds.get("ModalityLUTSequence"):
        from pydicom.pixels import apply_modality_lut

        return apply_modality_lut(stored, ds)  # integer table lookup (uint8/uint16)
    slope = float(ds.get("RescaleSlope", 1.0) or 1.0)
    intercept = float(ds.get("RescaleIntercept", 0.0) or 0.0)
    if slope == 1.0 and intercept == 0.0:
        return stored
    if slope == 1.0 and intercept.is_integer() and np.issubdtype(stored.dtype, np.integer):
        # stay integer so a VOI LUT can index by it; int32 holds any 16-bit value + intercept
        out = stored.astype(np.int32)
        out += int(intercept)
        return out
    values = stored.astype(np.float32)
    values *= np.float32(slope)
    values += np.float32(intercept)
    return values


def _voi(values: np.ndarray, ds: Dataset, path: str | Path) -> np.ndarray:
    """Modality values -> display values in [0, 1] (float32)."""
    if ds.get("VOILUTSequence"):
        lut_item = ds.VOILUTSequence[0]
        if lut_item.get("LUTDescriptor") is not None and lut_item.get("LUTData") is not None:
            return _voi_lut(values, ds)
    window = _window(ds, path)
    if window is not None:
        return _apply_window(values, *window)
    return _min_max(values)


def _voi_lut(values: np.ndarray, ds: Dataset) -> np.ndarray:
    from pydicom.pixels import apply_voi

    if not np.issubdtype(values.dtype, np.integer):
        values = np.rint(values).astype(np.int32)  # a table is indexed by integers
    looked_up = apply_voi(values, ds)  # uint8/uint16 display values
    lut = np.asarray(ds.VOILUTSequence[0].LUTData, dtype=np.float32).ravel()
    lo, hi = (float(lut.min()), float(lut.max())) if lut.size else (0.0, 1.0)
    out = looked_up.astype(np.float32)
    del looked_up
    return _scale(out, lo, hi)


def _window(ds: Dataset, path: str | Path) -> tuple[float, float, str] | None:
    if "WindowCenter" not in ds or "WindowWidth" not in ds:
        return None
    center, width = ds.WindowCenter, ds.WindowWidth
    center = float(center[0] if _is_multi(center) else center)  # first of alternative windows
    width = float(width[0] if _is_multi(width) else width)
    function = str(ds.get("VOILUTFunction", "LINEAR") or "LINEAR").upper()
    minimum = 1.0 if function == "LINEAR" else 0.0
    if function not in ("LINEAR", "LINEAR_EXACT", "SIGMOID") or not math.isfinite(center) or width <= minimum:
        log.warning("%s: unusable window (center %s, width %s, function %s); using the image's min..max",
                    path, center, width, function)
        return None
    return center, width, function


def _is_multi(value: Any) -> bool:
    return not isinstance(value, str | bytes) and hasattr(value, "__len__")


def _apply_window(values: np.ndarray, center: float, width: float, function: str) -> np.ndarray:
    """DICOM PS3.3 C.11.2.1.2 windowing, normalised to [0, 1], in float32 and in place."""
    out = values.astype(np.float32, copy=False)  # ours to modify: a fresh array when converted
    if function == "SIGMOID":
        out -= np.float32(center)
        out *= np.float32(-4.0 / width)
        np.exp(out, out=out)
        out += np.float32(1.0)
        np.reciprocal(out, out=out)
        return out
    if function == "LINEAR":  # C.11.2.1.2.1: the centre and width of discrete values
        center, width = center - 0.5, width - 1.0
    out -= np.float32(center)
    out *= np.float32(1.0 / width)
    out += np.float32(0.5)
    np.clip(out, 0.0, 1.0, out=out)
    return out


def _min_max(values: np.ndarray) -> np.ndarray:
    lo, hi = float(values.min()), float(values.max())
    out = values.astype(np.float32, copy=False)  # ours to modify: a fresh array when converted
    return _scale(out, lo, hi)


def _scale(out: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """(out - lo) / (hi - lo) clipped to [0, 1], in place; a constant image becomes zeros."""
    if hi <= lo:
        out.fill(0.0)
        return out
    out -= np.float32(lo)
    out *= np.float32(1.0 / (hi - lo))
    np.clip(out, 0.0, 1.0, out=out)
    return out


def _colour_to_gray(rgb: np.ndarray) -> np.ndarray:
    """(H, W, 3) RGB (pydicom converts YBR to RGB) -> luminance in [0, 1], ITU-R 601 like Pillow's ``L``."""
    gray = rgb[..., 0].astype(np.float32) * np.float32(0.299)
    gray += rgb[..., 1].astype(np.float32) * np.float32(0.587)
    gray += rgb[..., 2].astype(np.float32) * np.float32(0.114)
    maximum = float(np.iinfo(rgb.dtype).max) if np.issubdtype(rgb.dtype, np.integer) else 1.0
    return _scale(gray, 0.0, maximum)
