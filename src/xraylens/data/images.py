"""The one image-reading contract: every radiograph becomes a 2-D float32 array in [0, 1].

Why one contract: MURA is mostly 8-bit grayscale PNG, but real-world inputs
(uploads, other hospitals' exports) arrive as 16-bit PNG, RGB screenshots,
palette PNGs, JPEGs or DICOM. If each caller decoded files its own way, the
model would see different intensity scales in training and in production.
Everything that reads pixels goes through :func:`read_image`.

Orientation: a JPEG whose EXIF header says it is stored rotated or mirrored
(camera and phone exports, some of FracAtlas) is turned upright exactly as
Pillow's ``ImageOps.exif_transpose`` does, in :func:`read_image` and in
:func:`image_size` alike, so sizes, boxes and pixels always describe the image
as a viewer shows it. Readers of box datasets whose boxes were drawn on the
stored pixels map them with :mod:`xraylens.data.orientation`.

16-bit images are divided by the full scale of their *effective* bit depth,
the fewest bits (8 to 16) that hold their brightest value: many 16-bit
exports carry 10-, 12- or 14-bit data, which divided by 65535 would land in
the bottom few grey levels and be lost in the 8-bit cache. An image that uses
the 16th bit is divided by 65535 as before. No per-image stretch or percentile
window: those would change with what is in the picture (bright metal is a
finding, not an outlier), this depends only on how the file was stored.

Safety: the pixel count is checked from the file header *before* decoding, so
a small file that expands to gigabytes (a decompression bomb) is refused
cheaply. Only PNG and JPEG parsers are enabled in Pillow, which keeps its
attack surface small; DICOM is dispatched to ``xraylens.data.dicom`` (needs
the ``dicom`` extra).
"""

from __future__ import annotations

import os
import struct
import warnings
from pathlib import Path

import numpy as np

from xraylens.data.image_errors import DEFAULT_MAX_PIXELS, ImageReadError, MissingExtraError

_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
_JPEG_MAGIC = b"\xff\xd8\xff"
_DICOM_OFFSET = 128
_DICOM_MAGIC = b"DICM"
_PIL_FORMATS = ("PNG", "JPEG")
_EXIF_ORIENTATION = 0x0112
SWAPS_AXES = frozenset({5, 6, 7, 8})  # EXIF orientations that turn the image by 90 degrees
_DICOM_HINT = "DICOM support needs the dicom extra: pip install 'xraylens[dicom]'"


# ---------------------------------------------------------------- sniffing


def sniff_kind(path: str | Path) -> str | None:
    """``"png"``, ``"jpeg"``, ``"dicom"`` by magic bytes, or ``None`` (empty, text, other formats).

    Extensions lie (an HTML error page saved as ``image1.png`` is common after a
    failed download), so the bytes decide. Raises :class:`ImageReadError` only
    when the file itself cannot be opened.
    """
    try:
        with open(path, "rb") as handle:
            head = handle.read(_DICOM_OFFSET + len(_DICOM_MAGIC))
    except OSError as exc:
        raise _os_error(path, exc) from exc
    return _kind_from_head(head)


def _kind_from_head(head: bytes) -> str | None:
    if head.startswith(_PNG_MAGIC):
        return "png"
    if head.startswith(_JPEG_MAGIC):
        return "jpeg"
    if head[_DICOM_OFFSET : _DICOM_OFFSET + len(_DICOM_MAGIC)] == _DICOM_MAGIC:
        return "dicom"
    return None


def junk_kind(path: str | Path) -> tuple[str | None, str]:
    """``(problem kind, detail)`` for a file that is no image by size or magic bytes; ``(None, "")`` otherwise.

    Cheap (a stat and 132 bytes), so dataset readers run it on every file they index.
    """
    try:
        if os.path.getsize(path) == 0:
            return "empty_file", "0 bytes"
        kind = sniff_kind(path)
    except (OSError, ImageReadError) as exc:
        return "unreadable", str(exc)
    if kind is None:
        return "not_image", "not a PNG, JPEG or DICOM file (by its first bytes)"
    return None, ""


def _is_dicom(path: str | Path, kind: str | None) -> bool:
    """Magic bytes win; the ``.dcm`` suffix only decides for DICOM files written without the preamble."""
    return kind == "dicom" or (kind is None and str(path).lower().endswith(".dcm"))


# ---------------------------------------------------------------- public API


def image_size(path: str | Path) -> tuple[int, int]:
    """``(height, width)`` from the header alone, for dataset summaries and size checks without decoding."""
    kind = _checked_kind(path)
    if _is_dicom(path, kind):
        return _with_dicom_extra(path, "dicom_size", path)
    with _open_pil(path, kind) as image:
        width, height = image.size
        turned = _orientation(image, kind) in SWAPS_AXES
    return (width, height) if turned else (height, width)


def read_image(path: str | Path, *, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Decode ``path`` to a 2-D float32 array in [0, 1]; shape ``(H, W)``.

    Colour images become luminance (ITU-R 601, as Pillow's ``L`` mode), alpha
    is ignored, 16-bit images keep their full precision (divided by the full
    scale of their effective bit depth, see above), and an EXIF-rotated JPEG
    is turned upright.
    Images with more than ``max_pixels`` pixels are refused from the header,
    before any pixel is decoded.
    """
    kind = _checked_kind(path)
    if _is_dicom(path, kind):
        return _read_dicom(path, max_pixels)
    with _open_pil(path, kind) as image:
        width, height = image.size
        if width * height > max_pixels:
            raise ImageReadError(
                f"{path}: {width}x{height} = {width * height:,} pixels is over the limit of {max_pixels:,} "
                "(a guard against decompression bombs); pass a larger max_pixels if you trust this file"
            )
        try:
            image.load()
        except (OSError, SyntaxError, ValueError, EOFError, struct.error) as exc:
            raise ImageReadError(
                f"{path}: truncated or corrupt {kind.upper() if kind else 'image'} ({exc}); "
                "re-download or re-export the file"
            ) from exc
        orientation = _orientation(image, kind)
        if orientation != 1:
            from PIL import ImageOps

            image = ImageOps.exif_transpose(image)
        return _to_float(image, path)


def jpeg_orientation(path: str | Path) -> int:
    """The EXIF orientation (1-8) of a JPEG as read from its header; 1 (upright) for anything else."""
    kind = _checked_kind(path)
    if _is_dicom(path, kind):
        return 1
    with _open_pil(path, kind) as image:
        return _orientation(image, kind)


def to_uint8(img: np.ndarray) -> np.ndarray:
    """8-bit copy of an image for saving, overlays and PIL: floats are read as [0, 1], uint16 as [0, 65535]."""
    array = np.asarray(img)
    if array.dtype == np.uint8:
        return array.copy()
    if array.dtype == np.uint16:
        return (array.astype(np.uint32) * 255 // 65535).astype(np.uint8)
    if np.issubdtype(array.dtype, np.bool_):
        return array.astype(np.uint8) * 255
    if np.issubdtype(array.dtype, np.number):
        scaled = np.nan_to_num(array.astype(np.float64), nan=0.0, posinf=1.0, neginf=0.0)
        return np.rint(np.clip(scaled, 0.0, 1.0) * 255.0).astype(np.uint8)
    raise TypeError(f"to_uint8: cannot convert an array of dtype {array.dtype} to an image")


# ---------------------------------------------------------------- helpers


def _checked_kind(path: str | Path) -> str | None:
    """Sniff the kind and turn the common failures (missing, folder, empty, not an image) into clear errors."""
    kind = sniff_kind(path)
    if kind is not None:
        return kind
    if str(path).lower().endswith(".dcm"):
        return None  # DICOM without preamble: let the DICOM reader decide
    if os.path.getsize(path) == 0:
        raise ImageReadError(f"{path}: file is empty (0 bytes); re-download or re-copy it")
    with open(path, "rb") as handle:
        head = handle.read(16)
    raise ImageReadError(
        f"{path}: not a PNG, JPEG or DICOM image (starts with {head!r}); it may be a text or HTML file "
        "saved under an image name: re-download it or remove it"
    )


def _orientation(image, kind: str | None) -> int:
    """EXIF orientation of an open JPEG (header only); PNG's eXIf chunk would need a full decode, so 1."""
    if kind != "jpeg":
        return 1
    try:
        value = int(image.getexif().get(_EXIF_ORIENTATION, 1))
    except (ValueError, TypeError, OSError, SyntaxError):  # a malformed EXIF block is no reason to refuse pixels
        return 1
    return value if 1 <= value <= 8 else 1


def _os_error(path: str | Path, exc: OSError) -> ImageReadError:
    if isinstance(exc, FileNotFoundError):
        return ImageReadError(f"{path}: no such file; check the path (relative paths start at {Path.cwd()})")
    if isinstance(exc, IsADirectoryError):
        return ImageReadError(f"{path}: is a folder, not an image file")
    if isinstance(exc, PermissionError):
        return ImageReadError(f"{path}: permission denied; make the file readable for this user")
    return ImageReadError(f"{path}: cannot be read ({exc})")


def _open_pil(path: str | Path, kind: str | None):
    """Open lazily (header only) with just the PNG and JPEG parsers; Pillow's own bomb limit becomes our error."""
    from PIL import Image, UnidentifiedImageError

    try:
        with warnings.catch_warnings():  # Pillow warns between 89 and 179 MP; max_pixels is the limit we enforce
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            return Image.open(path, formats=_PIL_FORMATS)
    except Image.DecompressionBombError as exc:
        raise ImageReadError(
            f"{path}: refused by Pillow's decompression-bomb limit ({exc}); if you trust the file, raise "
            "PIL.Image.MAX_IMAGE_PIXELS in your application as well as max_pixels"
        ) from exc
    except UnidentifiedImageError as exc:
        raise ImageReadError(
            f"{path}: looks like {kind or 'an unknown format'} but its header cannot be parsed; "
            "the file is corrupt: re-download or re-export it"
        ) from exc
    except OSError as exc:
        raise _os_error(path, exc) from exc
    except (ValueError, SyntaxError, EOFError, struct.error) as exc:  # e.g. "Truncated IHDR chunk" (fuzzing)
        raise ImageReadError(
            f"{path}: looks like {kind or 'an unknown format'} but its header is corrupt ({exc}); "
            "re-download or re-export it"
        ) from exc


def _to_float(image, path: str | Path) -> np.ndarray:
    """Pillow image (any PNG/JPEG mode) -> (H, W) float32 in [0, 1]."""
    mode = image.mode
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):  # "I": 16-bit data widened to int32 by some Pillows
        return _from_16bit(np.asarray(image))
    if mode == "L":
        gray = image
    elif mode in ("1", "LA", "La"):
        gray = image.convert("L") if mode == "1" else image.getchannel(0)
    elif mode in ("P", "PA"):
        gray = image.convert("RGBA").convert("L")  # via RGBA: palette transparency must not leak into gray
    elif mode in ("RGB", "RGBA", "RGBa", "RGBX", "CMYK", "YCbCr"):
        gray = image.convert("RGB").convert("L") if mode in ("CMYK", "YCbCr") else image.convert("L")
    else:
        raise ImageReadError(
            f"{path}: unsupported pixel mode {mode!r}; convert it to 8- or 16-bit grayscale PNG "
            "(e.g. with ImageMagick: magick in.png -colorspace Gray out.png)"
        )
    return np.asarray(gray, dtype=np.float32) / np.float32(255.0)


def _from_16bit(values: np.ndarray) -> np.ndarray:
    """(H, W) 16-bit values -> float32 in [0, 1], divided by 2**bits - 1 for the effective bit depth."""
    values = np.clip(values.astype(np.int64), 0, 65535)
    bits = max(8, int(values.max()).bit_length()) if values.size else 16
    return (values.astype(np.float32) / np.float32(2**bits - 1)).astype(np.float32)


def _read_dicom(path: str | Path, max_pixels: int) -> np.ndarray:
    return _with_dicom_extra(path, "read_dicom", path, max_pixels=max_pixels)


def _with_dicom_extra(path: str | Path, name: str, *args, **kwargs):
    """Call ``xraylens.data.dicom.<name>``; without pydicom that is one file's :class:`ImageReadError`.

    pydicom is imported inside the reader, so its absence surfaces on the first
    call, not at import: a bare ImportError there stopped a whole ``predict``
    run at the first DICOM instead of reporting each one.
    """
    import importlib

    try:
        return getattr(importlib.import_module("xraylens.data.dicom"), name)(*args, **kwargs)
    except ImportError as exc:
        raise MissingExtraError(f"{path}: is a DICOM file; {_DICOM_HINT}") from exc
