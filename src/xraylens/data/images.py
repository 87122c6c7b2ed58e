"""The one image-reading contract: every radiograph becomes a 2-D float32 array in [0, 1].

Why one contract: MURA is mostly 8-bit grayscale PNG, but real-world inputs
(uploads, other hospitals' exports) arrive as 16-bit PNG, RGB screenshots,
palette PNGs, JPEGs or DICOM. If each caller decoded files its own way, the
model would see different intensity scales in training and in production.
Everything that reads pixels goes through :func:`read_image`.

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
    return height, width


def read_image(path: str | Path, *, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Decode ``path`` to a 2-D float32 array in [0, 1]; shape ``(H, W)``.

    Colour images become luminance (ITU-R 601, as Pillow's ``L`` mode), alpha
    is ignored, 16-bit images keep their full precision (divided by 65535).
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
        return _to_float(image, path)


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
    if mode in ("I;16", "I;16B", "I;16L", "I;16N"):
        return (np.asarray(image).astype(np.float32) / 65535.0).astype(np.float32)
    if mode == "I":  # 16-bit data widened to int32 by some Pillow versions
        array = np.asarray(image).astype(np.float32)
        return np.clip(array / 65535.0, 0.0, 1.0).astype(np.float32)
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
