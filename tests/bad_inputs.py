"""The bad-input corpus (not a test module): every kind of file and dataset flaw issue 11 lists, written to disk.

``FILE_KINDS`` are single files (each entry point that reads files meets
them); ``TREE_KINDS`` are flaws of a MURA tree (only entry points that index
a dataset meet them). ``GOOD`` kinds are unusual but valid and must be read;
every other kind must be reported by name while the rest is used, or (a CSV
that is not a MURA list at all) refused with an error naming the file.

``OUTCOMES`` collects what each entry point did with each kind; the suite's
last test and the session summary print it as the table in the README.
"""

from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

import numpy as np
from PIL import Image

GOOD = ("png_16bit", "png_rgba", "png_palette", "png_1x1", "dicom_monochrome1")
FILE_KINDS = ("zero_byte", "png_truncated", "random_bytes_png", "html_png", "png_16bit", "png_rgba", "png_palette",
              "png_1x1", "png_bomb", "dicom_no_pixels", "dicom_monochrome1", "dicom_compressed_no_decoder",
              "dicom_huge_declared")
TREE_KINDS = ("csv_wrong_columns", "csv_path_escapes_root", "symlink_escapes_root", "study_without_images",
              "label_disagrees_with_folder")
EXTRA_ROWS = ("dicom_without_pydicom",)  # not a file: an environment (the dicom extra not installed)
ENTRY_POINTS = ("data summary", "training loader", "evaluate", "explain", "explain-eval", "predict", "server")
SUFFIX = {kind: ".dcm" if kind.startswith("dicom") else ".png" for kind in FILE_KINDS}

# (kind, entry point) -> outcome text, filled in by tests/test_bad_inputs.py
OUTCOMES: dict[tuple[str, str], str] = {}


def _gradient(height: int = 40, width: int = 30) -> np.ndarray:
    ys, xs = np.mgrid[0:height, 0:width]
    return ((xs * 5 + ys * 3) % 256).astype(np.uint8)


def _png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return buffer.getvalue()


def bomb_png(width: int, height: int) -> bytes:
    """A valid PNG header declaring ``width`` x ``height`` gray pixels with 1 kB of data behind it."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 1024))
            + chunk(b"IEND", b""))


def _dicom(path: Path, stored: np.ndarray | None, photometric: str = "MONOCHROME2", *,
           rows_cols: tuple[int, int] | None = None, syntax: str | None = None) -> None:
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.encaps import encapsulate
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.1.1"  # DX for presentation
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID, ds.SOPInstanceUID, ds.Modality = meta.MediaStorageSOPClassUID, generate_uid(), "DX"
    if stored is not None:
        ds.set_pixel_data(stored, photometric, 16 if stored.dtype == np.uint16 else 8)
    else:
        ds.Rows, ds.Columns, ds.PhotometricInterpretation = 40, 30, photometric
    if rows_cols is not None:
        ds.Rows, ds.Columns = rows_cols  # the header claims far more than the file holds
    if syntax is not None:
        ds.file_meta.TransferSyntaxUID = syntax
        ds.PixelData = encapsulate([b"\xff\xd8\xff\xf7" + b"\0" * 32])
        ds["PixelData"].VR = "OB"
    ds.save_as(path, enforce_file_format=True)


def write_file_kind(kind: str, path: Path) -> Path:
    """Write one ``FILE_KINDS`` entry at ``path`` (its suffix is the caller's)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    gray = _gradient()
    if kind == "zero_byte":
        path.write_bytes(b"")
    elif kind == "png_truncated":
        data = _png(Image.fromarray(np.random.default_rng(0).integers(0, 255, (60, 60), dtype=np.uint8)))
        path.write_bytes(data[: len(data) // 2])
    elif kind == "random_bytes_png":
        path.write_bytes(np.random.default_rng(1).integers(0, 256, 3000, dtype=np.uint8).tobytes())
    elif kind == "html_png":
        path.write_bytes(b"<!DOCTYPE html><html><body><h1>404 Not Found</h1></body></html>\n")
    elif kind == "png_16bit":
        path.write_bytes(_png(Image.fromarray(gray.astype(np.uint16) * 257)))
    elif kind == "png_rgba":
        rgba = np.dstack([gray, gray, gray, np.full_like(gray, 128)])
        path.write_bytes(_png(Image.fromarray(rgba, "RGBA")))
    elif kind == "png_palette":
        path.write_bytes(_png(Image.fromarray(gray).convert("P", palette=Image.Palette.ADAPTIVE, colors=16)))
    elif kind == "png_1x1":
        path.write_bytes(_png(Image.fromarray(np.full((1, 1), 200, np.uint8))))
    elif kind == "png_bomb":
        path.write_bytes(bomb_png(20_000, 5_000))  # 100 MP in 1 kB: over the 50 MP default limit
    elif kind == "dicom_no_pixels":
        _dicom(path, None)
    elif kind == "dicom_monochrome1":
        _dicom(path, 255 - gray, "MONOCHROME1")  # displays as ``gray`` once inverted
    elif kind == "dicom_compressed_no_decoder":
        from pydicom.uid import JPEGLSLossless

        _dicom(path, gray.astype(np.uint16), syntax=JPEGLSLossless)
    elif kind == "dicom_huge_declared":
        _dicom(path, gray.astype(np.uint16), rows_cols=(65535, 65535))
    else:
        raise ValueError(kind)
    return path


def write_loose_files(folder: Path) -> dict[str, Path]:
    """Every file kind in one folder, as a user would pass them to predict, explain or the server."""
    return {kind: write_file_kind(kind, folder / f"{kind}{SUFFIX[kind]}") for kind in FILE_KINDS}


# ---------------------------------------------------------------- a MURA tree with every flaw


def _study(split: str, part: str, patient: int, sign: str) -> str:
    return f"MURA-v1.1/{split}/{part}/patient{patient:05d}/study1_{sign}/"


def add_flaws(root: Path, split: str, outside: Path) -> dict[str, str]:
    """Add every file kind (as views of one abnormal study) and every tree flaw but the CSV's to ``split``.

    Returns ``{kind: MURA-relative path the reports must name}``. ``outside`` is a
    folder out of the dataset, where the symlink leads.
    """
    base = 50 if split == "train" else 11250
    mura = root / "MURA-v1.1"
    images, studies, where = [], [], {}
    study = _study(split, "XR_WRIST", base, "positive")
    studies.append(f"{study},1")
    good = root / study / "image1.png"
    write_file_kind("png_16bit", good)  # a plain readable view, so the study is never empty
    images.append(f"{study}image1.png")
    for number, kind in enumerate(FILE_KINDS, start=2):
        rel = f"{study}image{number}{SUFFIX[kind]}"
        write_file_kind(kind, root / rel)
        images.append(rel)
        where[kind] = rel
    where["png_16bit"] = f"{study}image1.png"
    escape = f"{study}../../../../../../secret.png"  # a CSV line climbing out of the root
    images.append(escape)
    where["csv_path_escapes_root"] = escape
    linked = _study(split, "XR_WRIST", base + 1, "negative")
    target = write_file_kind("png_16bit", outside / f"{split}_secret.png")
    (root / linked).mkdir(parents=True)
    (root / linked / "image1.png").symlink_to(target)
    images.append(f"{linked}image1.png")
    studies.append(f"{linked},0")
    where["symlink_escapes_root"] = f"{linked}image1.png"
    empty = _study(split, "XR_HAND", base + 2, "negative")
    (root / empty).mkdir(parents=True)
    studies.append(f"{empty},0")
    where["study_without_images"] = empty
    conflict = _study(split, "XR_ELBOW", base + 3, "positive")
    write_file_kind("png_16bit", root / conflict / "image1.png")
    images.append(f"{conflict}image1.png")
    studies.append(f"{conflict},0")  # the folder says positive
    where["label_disagrees_with_folder"] = conflict
    with open(mura / f"{split}_image_paths.csv", "a") as handle:
        handle.write("".join(f"{line}\n" for line in images))
    with open(mura / f"{split}_labeled_studies.csv", "a") as handle:
        handle.write("".join(f"{line}\n" for line in studies))
    return where


def break_csvs(root: Path) -> Path:
    """Give every image list the wrong columns (a header and a label column): the whole file is not MURA's."""
    for split in ("train", "valid"):
        csv = root / "MURA-v1.1" / f"{split}_image_paths.csv"
        lines = csv.read_text().splitlines()
        csv.write_text("path,label\n" + "".join(f"{line},1\n" for line in lines))
    return root / "MURA-v1.1" / "valid_image_paths.csv"


def format_table() -> str:
    """The markdown table of kinds x entry points (``-`` where a kind cannot meet that entry point)."""
    header = "| kind | " + " | ".join(ENTRY_POINTS) + " |"
    lines = [header, "|" + "---|" * (len(ENTRY_POINTS) + 1)]
    for kind in (*FILE_KINDS, *TREE_KINDS, *EXTRA_ROWS):
        cells = [OUTCOMES.get((kind, entry), "-") for entry in ENTRY_POINTS]
        lines.append(f"| {kind} | " + " | ".join(cells) + " |")
    return "\n".join(lines)
