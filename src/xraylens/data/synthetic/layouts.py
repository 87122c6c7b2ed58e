"""The synthetic radiographs written in the FracAtlas or GRAZPEDWRI-DX release layout (``data synth --layout``).

Why: the readers of those datasets (:mod:`xraylens.data.fracatlas`,
:mod:`xraylens.data.grazpedwri`) must run end to end without the downloads.
The same studies that :func:`~xraylens.data.synthetic.generate` draws in the
MURA layout are drawn once into a staging folder and rewritten as the
release would hold them; their boxes become the release's annotation files.

* ``fracatlas`` -> ``OUT/FracAtlas/``: JPEGs in ``images/Fractured`` and
  ``images/Non_fractured``, ``dataset.csv`` (UTF-8 BOM, CRLF), the fracture
  boxes as ``Annotations/COCO JSON/COCO_fracture_masks.json`` and
  ``Annotations/YOLO/<stem>.txt`` (empty when none), and
  ``Utilities/Fracture Split`` for the fractured images. As in FracAtlas the
  label is *fractured*: a study is fractured when a fracture is drawn in one
  of its views; hardware sets the ``hardware`` flag, and studies with only
  hardware or a lesion are ``Non_fractured`` (use ``--findings fracture``
  for labels that match the MURA layout's). The upper-limb parts map onto
  FracAtlas's columns: finger, hand, wrist -> hand; humerus, shoulder ->
  shoulder; elbow, forearm -> mixed.
* ``grazpedwri`` -> ``OUT/GRAZPEDWRI-DX/``: 16-bit grayscale PNGs in
  ``images_part1..4``, ``dataset.csv`` (UTF-8 BOM, CRLF) with
  ``fracture_visible`` and ``metal`` per image, and YOLO files in
  ``folder_structure/yolov5/labels`` (fracture -> class 3, hardware ->
  metal 4, lesion -> bonelesion 1; empty when none). Every image reads as a
  wrist, whatever part was drawn: the layout is the point here, not anatomy.

Rerun policy as for the MURA layout: an empty ``OUT``, or one written before
with the same settings and layout, is (re)written; anything else is refused.
"""

from __future__ import annotations

import io
import json
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from xraylens.atomic import atomic_write_bytes, atomic_write_json, atomic_write_text
from xraylens.data.images import read_image, to_uint8
from xraylens.data.mura_layout import parse_image_path

LAYOUTS: tuple[str, ...] = ("mura", "fracatlas", "grazpedwri")
MANIFEST = "synth_manifest.json"
FRACATLAS_PART = {"XR_FINGER": "hand", "XR_HAND": "hand", "XR_WRIST": "hand", "XR_HUMERUS": "shoulder",
                  "XR_SHOULDER": "shoulder"}  # elbow and forearm: "mixed"
FRACATLAS_COLUMNS = ("image_id", "hand", "leg", "hip", "shoulder", "mixed", "hardware", "multiscan", "fractured",
                     "fracture_count", "frontal", "lateral", "oblique")
GRAZ_COLUMNS = ("filestem", "patient_id", "study_number", "timehash", "gender", "age", "laterality", "projection",
                "initial_exam", "ao_classification", "cast", "diagnosis_uncertain", "osteopenia", "fracture_visible",
                "metal", "pixel_spacing", "device_manufacturer")
GRAZ_CLASS = {"fracture": 3, "hardware": 4, "lesion": 1}  # our kinds -> GRAZPEDWRI-DX YOLO classes


def generate_layout(out: str | Path, layout: str, **settings: Any) -> tuple[Path, dict[str, Any]]:
    """Write the synthetic dataset in ``layout`` under ``out``; returns (the dataset folder, the manifest).

    ``settings`` are :func:`~xraylens.data.synthetic.generate`'s keyword arguments.
    """
    from xraylens.data.synthetic.writer import generate

    if layout not in LAYOUTS:
        raise ValueError(f"layout must be one of {', '.join(LAYOUTS)}; got {layout!r}")
    root = Path(out)
    if layout == "mura":
        result = generate(root, **settings)
        return result.root, result.manifest
    folder_name, writer = _WRITERS[layout]
    wanted = {"layout": layout, **{k: v for k, v in settings.items() if k not in ("workers", "progress")}}
    _claim(root, folder_name, wanted)
    root.mkdir(parents=True, exist_ok=True)
    for stale in root.glob(".synth_mura.*"):  # left by an interrupted run
        shutil.rmtree(stale, ignore_errors=True)
    staging = Path(tempfile.mkdtemp(prefix=".synth_mura.", dir=root))
    try:
        mura = generate(staging / "mura", **settings)
        counts = writer(mura.root, mura.boxes, root / folder_name)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    # the MURA plan's settings and study counts; its splits, junk files and box tallies do not carry over
    kept = ("generator", "generator_version", "seed", "patients", "max_side", "difficulty", "findings", "studies",
            "abnormal_studies")
    manifest = {**{k: mura.manifest[k] for k in kept if k in mura.manifest}, "layout": layout,
                "dataset_folder": folder_name, **counts}
    atomic_write_json(root / MANIFEST, {**manifest, "settings": _jsonable(wanted)})
    return root / folder_name, manifest


def _claim(root: Path, folder_name: str, wanted: dict[str, Any]) -> None:
    """Refuse a folder that holds anything but an earlier run with the same layout and settings."""
    if root.exists() and not root.is_dir():
        raise FileExistsError(f"{root} is a file; give a folder to write the synthetic dataset into")
    entries = {p.name for p in root.iterdir() if not p.name.startswith(".synth_mura.")} if root.exists() else set()
    if not entries:
        return
    try:
        earlier = json.loads((root / MANIFEST).read_text()).get("settings")
    except (OSError, ValueError, AttributeError):
        earlier = None
    if entries - {folder_name, MANIFEST} or earlier is None:
        raise FileExistsError(f"{root} is not empty and was not written by the synthetic generator "
                              f"(found {', '.join(sorted(entries)[:5])}); choose an empty or new folder")
    if earlier != _jsonable(wanted):
        raise FileExistsError(f"{root} holds a synthetic dataset made with other settings ({earlier}); writing "
                              "over it would mix the two. Delete the folder or choose another one")


def _jsonable(settings: dict[str, Any]) -> dict[str, Any]:
    return json.loads(json.dumps(settings, default=list))


def _images(mura_root: Path, boxes: pd.DataFrame) -> list[tuple[Any, str, list]]:
    """(parsed MURA path, file, boxes) for every synthetic image, in path order (junk files left out)."""
    rows = []
    for split in ("train", "valid"):
        listed = (mura_root / "MURA-v1.1" / f"{split}_image_paths.csv").read_text().split()
        rows += [parse_image_path(p) for p in listed]
    by_path = {p: list(g.itertuples(index=False)) for p, g in boxes.groupby("path")}
    return [(ref, str(mura_root / ref.path), by_path.get(ref.path, [])) for ref in sorted(rows, key=lambda r: r.path)]


def _csv(path: Path, header: tuple[str, ...], rows: list[list[str]]) -> None:
    """As the releases ship dataset.csv: UTF-8 with a BOM, CRLF line endings."""
    text = "\r\n".join([",".join(header), *(",".join(r) for r in rows)]) + "\r\n"
    atomic_write_bytes(path, b"\xef\xbb\xbf" + text.encode())


def _yolo(boxes: list, width: int, height: int, classes: Callable[[str], int | None]) -> str:
    lines = []
    for b in boxes:
        cls = classes(b.kind)
        if cls is not None:
            lines.append(f"{cls} {(b.x0 + b.x1) / 2 / width:.6f} {(b.y0 + b.y1) / 2 / height:.6f} "
                         f"{(b.x1 - b.x0) / width:.6f} {(b.y1 - b.y0) / height:.6f}")
    return "".join(line + "\n" for line in lines)


# ---------------------------------------------------------------- FracAtlas


def _write_fracatlas(mura_root: Path, boxes: pd.DataFrame, dest: Path) -> dict[str, int]:
    from PIL import Image

    images = _images(mura_root, boxes)
    fractured_studies = {ref.study_id for ref, _, found in images if any(b.kind == "fracture" for b in found)}
    rows, coco_images, annotations, fractured_stems = [], [], [], []
    for n, (ref, file, found) in enumerate(images):
        stem, fractured = f"IMG{n:07d}", int(ref.study_id in fractured_studies)
        pixels = to_uint8(read_image(file))
        height, width = pixels.shape
        buffer = io.BytesIO()
        Image.fromarray(pixels).save(buffer, format="JPEG", quality=95)
        atomic_write_bytes(dest / "images" / ("Fractured" if fractured else "Non_fractured") / f"{stem}.jpg",
                           buffer.getvalue())
        fractures = [b for b in found if b.kind == "fracture"]
        part = FRACATLAS_PART.get(ref.body_part, "mixed")
        view = min(int("".join(c for c in ref.view if c.isdigit()) or 1), 3) - 1  # image1 frontal, 2 lateral, ...
        rows.append([f"{stem}.jpg", *(str(int(part == p)) for p in ("hand", "leg", "hip", "shoulder")),
                     str(int(part == "mixed")), str(int(any(b.kind == "hardware" for b in found))), "0",
                     str(fractured), str(len(fractures)), *(str(int(view == k)) for k in range(3))])
        coco_images.append({"id": n + 1, "file_name": f"{stem}.jpg", "width": width, "height": height})
        for b in fractures:
            w, h = float(b.x1 - b.x0), float(b.y1 - b.y0)
            annotations.append({"id": len(annotations) + 1, "image_id": n + 1, "category_id": 1, "iscrowd": 0,
                                "bbox": [float(b.x0), float(b.y0), w, h], "area": w * h,
                                "segmentation": [[b.x0, b.y0, b.x1, b.y0, b.x1, b.y1, b.x0, b.y1]]})
        atomic_write_text(dest / "Annotations" / "YOLO" / f"{stem}.txt",
                          _yolo(fractures, width, height, lambda kind: 0))
        if fractured:
            fractured_stems.append(stem)
    _csv(dest / "dataset.csv", FRACATLAS_COLUMNS, rows)
    atomic_write_json(dest / "Annotations" / "COCO JSON" / "COCO_fracture_masks.json",
                      {"images": coco_images, "annotations": annotations,
                       "categories": [{"id": 1, "name": "fractured"}]})
    order = np.random.default_rng(0).permutation(len(fractured_stems))  # FracAtlas's split: about 70/20/10
    cut = [int(round(len(order) * f)) for f in (0.7, 0.9)]
    for name, chosen in zip(("train", "valid", "test"), np.split(order, cut), strict=True):
        _csv(dest / "Utilities" / "Fracture Split" / f"{name}.csv", ("image_id",),
             [[f"{fractured_stems[i]}.jpg"] for i in sorted(chosen)])
    return {"images": len(images), "fractured": len(fractured_stems), "boxes": len(annotations)}


# ---------------------------------------------------------------- GRAZPEDWRI-DX


def _write_grazpedwri(mura_root: Path, boxes: pd.DataFrame, dest: Path) -> dict[str, int]:
    from PIL import Image

    images = _images(mura_root, boxes)
    study_numbers: dict[str, dict[str, int]] = {}  # patient -> {study id: number}
    rows, written = [], 0
    for ref, file, found in images:
        patient = f"{int(ref.patient_id.removeprefix('patient')):04d}"
        numbers = study_numbers.setdefault(patient, {})
        study = numbers.setdefault(ref.study_id, len(numbers) + 1)
        view = int("".join(c for c in ref.view if c.isdigit()) or 1)
        stem = f"{patient}_{1_200_000_000 + 100 * study + view}_{study:02d}_WRI-L{min(view, 3)}_M010"
        pixels = np.rint(read_image(file) * 65535).astype(np.uint16)
        height, width = pixels.shape
        buffer = io.BytesIO()
        Image.fromarray(pixels).save(buffer, format="PNG")
        atomic_write_bytes(dest / f"images_part{int(patient) % 4 + 1}" / f"{stem}.png", buffer.getvalue())
        atomic_write_text(dest / "folder_structure" / "yolov5" / "labels" / f"{stem}.txt",
                          _yolo(found, width, height, GRAZ_CLASS.get))
        kinds = {b.kind for b in found}
        rows.append([stem, patient, str(study), str(1_200_000_000 + 100 * study + view), "M", "10", "L",
                     str(min(view, 3)), "1", "", "", "", "", "1" if "fracture" in kinds else "",
                     "1" if "hardware" in kinds else "", "0.144", "synthetic"])
        written += len(found)
    _csv(dest / "dataset.csv", GRAZ_COLUMNS, rows)
    return {"images": len(images), "patients": len(study_numbers), "boxes": written}


_WRITERS: dict[str, tuple[str, Callable[[Path, pd.DataFrame, Path], dict[str, int]]]] = {
    "fracatlas": ("FracAtlas", _write_fracatlas),
    "grazpedwri": ("GRAZPEDWRI-DX", _write_grazpedwri),
}

__all__ = ["LAYOUTS", "generate_layout"]
