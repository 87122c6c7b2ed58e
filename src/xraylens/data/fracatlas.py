"""FracAtlas (Abedeen et al., Scientific Data 2023) as released -> the index table and its fracture boxes.

The release (``FracAtlas/``)::

    dataset.csv     image_id,hand,leg,hip,shoulder,mixed,hardware,multiscan,fractured,fracture_count,
                    frontal,lateral,oblique   (0/1 flags; a UTF-8 BOM is tolerated)
    images/Fractured/IMG0000019.jpg, images/Non_fractured/IMG0000000.jpg, ...
    Annotations/COCO JSON/COCO_fracture_masks.json   one category "fractured"; pixel bbox [x, y, w, h]
    Annotations/YOLO/<stem>.txt                      "0 cx cy w h", normalised; empty when not fractured
    Utilities/Fracture Split/{train,valid,test}.csv  header image_id; fractured images only

How it becomes the table:

* **patients and studies**: FracAtlas names no patient, so every image is
  its own patient and its own study. Two images of one person can therefore
  fall on both sides of a split; nothing in the release allows better.
* **label** = ``fractured``; **body part**: the one flag set among hand, leg,
  hip, shoulder (``XR_HAND``, ``XR_LEG``, ``XR_HIP``, ``XR_SHOULDER``), or
  ``XR_MIXED`` when ``mixed`` is set or not exactly one is; **view**: the
  set flags among frontal, lateral, oblique joined by ``+`` (``unknown`` if none).
* **split**: seeded and stratified (``data.test_fraction`` of the images
  become ``valid``, our test split); with ``data.official_split=test`` (or
  ``valid``) the fractured images listed in that official file are the test
  split and those in the other two files are ``train``; the official files
  do not cover the non-fractured images, which keep the seeded split.
* **boxes** (kind ``fracture``): from the COCO JSON when it exists, else from
  the YOLO files. They are taken to be drawn on the *stored* pixels. For an
  image whose EXIF header asks for a rotation (which :func:`read_image`
  applies), the boxes are turned with it; the COCO route checks its recorded
  width and height against the file first: boxes recorded on the upright
  size are kept as they are, sizes that match neither frame drop that
  image's boxes as a ``bad_box`` problem (the image itself stays).

Quirks of the real release and what happens to them: an id listed twice, or
an image stored in both ``Fractured`` and ``Non_fractured``, keeps the copy
whose folder agrees with ``dataset.csv`` (the other is a ``duplicate_id``
problem); an image only in the folder that contradicts its flag is a
``label_conflict``; truncated JPEGs are found by ``--verify`` (and skipped
by training, evaluation and explanation when met, never a crash).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path

import pandas as pd

from xraylens.data.boxes import TrueBox
from xraylens.data.dataset_index import (
    DatasetIndex,
    ReaderOptions,
    finish_table,
    list_images,
    read_flag_csv,
    verified,
)
from xraylens.data.images import ImageReadError, image_size, jpeg_orientation
from xraylens.data.orientation import stored_size, upright_box
from xraylens.data.problems import DataError, Problem
from xraylens.data.yolo_labels import read_yolo_file

DIR_NAME = "FracAtlas"
CSV_NAME = "dataset.csv"
FLAGS = ("hand", "leg", "hip", "shoulder", "mixed", "hardware", "multiscan", "fractured", "frontal", "lateral",
         "oblique")
PARTS = {"hand": "XR_HAND", "leg": "XR_LEG", "hip": "XR_HIP", "shoulder": "XR_SHOULDER"}
VIEWS = ("frontal", "lateral", "oblique")
FRACTURED, NON_FRACTURED = "Fractured", "Non_fractured"
COCO_JSON = Path("Annotations", "COCO JSON", "COCO_fracture_masks.json")
YOLO_DIR = Path("Annotations", "YOLO")
SPLIT_DIR = Path("Utilities", "Fracture Split")
KIND = "fracture"  # FracAtlas's one category, "fractured", under our name
BoxList = list[tuple[float, float, float, float]]  # x0, y0, x1, y1 in pixels


def looks_like(folder: Path) -> bool:
    """A FracAtlas folder: its dataset.csv next to images/Fractured or images/Non_fractured."""
    return (folder / CSV_NAME).is_file() and any((folder / "images" / d).is_dir() for d in (FRACTURED, NON_FRACTURED))


def read_fracatlas(
    root: Path,
    options: ReaderOptions,
    *,
    splits: Iterable[str],
    body_parts: Iterable[str] | None,
    verify: bool = False,
    progress: bool = True,
) -> DatasetIndex:
    """Index the FracAtlas folder ``root``; every quirk is skipped and reported, or handled (module docstring)."""
    problems: list[Problem] = []
    rows = _listed(root / CSV_NAME, problems)
    located = _locate(root, rows, problems)  # stem -> path
    images = pd.DataFrame(
        [(path, _body_part(rows[stem]), stem, stem, _view(rows[stem]), int(rows[stem]["fractured"] == "1"))
         for stem, path in located.items()],
        columns=["path", "body_part", "patient_id", "study_id", "view", "label"])
    if options.official_split != "off":
        images["split"] = images["patient_id"].map(_official(root, options.official_split))
    boxes, notes, unreadable = _boxes(root, located, problems)
    images = images[~images["path"].isin(unreadable)]
    table = finish_table(root, images, options, splits=splits, body_parts=body_parts)
    if verify:
        table = verified(table, problems, progress)
    route = "COCO JSON" if (root / COCO_JSON).is_file() else "YOLO" if (root / YOLO_DIR).is_dir() else None
    source = f"{CSV_NAME} + {route} boxes" if route else f"{CSV_NAME} (no annotations found: no boxes)"
    return DatasetIndex(table, root, source, problems, "fracatlas", boxes, notes)


# ---------------------------------------------------------------- the list and the files


def _listed(csv_path: Path, problems: list[Problem]) -> dict[str, dict[str, str]]:
    """``{stem: row}`` of dataset.csv; bad flags and repeated ids become problems (a conflicting repeat drops both)."""
    rows: dict[str, dict[str, str]] = {}
    conflicting: set[str] = set()
    for line, row in read_flag_csv(csv_path, ("image_id", *FLAGS)):
        stem = Path(row["image_id"]).stem
        bad = [f for f in FLAGS if row[f] not in ("0", "1")]
        if not stem or bad:
            detail = f"{CSV_NAME} line {line}: " + (f"{', '.join(bad)} must be 0 or 1" if stem else "no image_id")
            problems.append(Problem(CSV_NAME, "bad_csv_line", detail))
        elif stem in rows:
            disagree = rows[stem]["fractured"] != row["fractured"]
            if disagree:
                conflicting.add(stem)
            problems.append(Problem(CSV_NAME, "duplicate_id", f"{CSV_NAME} line {line}: {stem} listed again"
                                    + (" with another 'fractured' flag: both dropped" if disagree else "")))
        else:
            rows[stem] = row
    return {stem: row for stem, row in rows.items() if stem not in conflicting}


def _locate(root: Path, rows: dict[str, dict[str, str]], problems: list[Problem]) -> dict[str, str]:
    """``{stem: path}`` for every listed image found in the folder its flag names; the rest are problems."""
    on_disk: dict[str, dict[str, str]] = {}  # stem -> {folder: path}
    for folder in (FRACTURED, NON_FRACTURED):
        for rel in list_images(root, root / "images" / folder, problems):
            on_disk.setdefault(Path(rel).stem, {})[folder] = rel
    located: dict[str, str] = {}
    for stem, row in rows.items():
        copies = on_disk.get(stem, {})
        wanted, other = (FRACTURED, NON_FRACTURED) if row["fractured"] == "1" else (NON_FRACTURED, FRACTURED)
        if wanted in copies:
            located[stem] = copies[wanted]
            if other in copies:
                problems.append(Problem(copies[other], "duplicate_id", f"{stem} is also in images/{wanted}/, "
                                        f"which its fractured={row['fractured']} names; this copy is skipped"))
        elif other in copies:
            problems.append(Problem(copies[other], "label_conflict",
                                    f"{CSV_NAME} says fractured={row['fractured']} but the image is in images/{other}/"))
        else:
            problems.append(Problem(f"images/{wanted}/{stem}.jpg", "missing_on_disk", f"listed in {CSV_NAME}"))
    for stem in sorted(set(on_disk) - set(rows)):
        for rel in on_disk[stem].values():
            problems.append(Problem(rel, "unlisted_on_disk", f"not in {CSV_NAME} (or its line was unusable)"))
    return located


def _body_part(row: dict[str, str]) -> str:
    parts = [PARTS[p] for p in PARTS if row[p] == "1"]
    return parts[0] if len(parts) == 1 and row["mixed"] != "1" else "XR_MIXED"


def _view(row: dict[str, str]) -> str:
    return "+".join(v for v in VIEWS if row[v] == "1") or "unknown"


def _official(root: Path, test_file: str) -> dict[str, str]:
    """``{stem: "train" | "valid"}`` from Utilities/Fracture Split: ``test_file`` is our test split."""
    folder = root / SPLIT_DIR
    assigned: dict[str, str] = {}
    for name in ("train", "valid", "test"):
        path = folder / f"{name}.csv"
        if not path.is_file():
            raise DataError(f"{path}: not found, but data.official_split={test_file} needs FracAtlas's official "
                            "split files; re-extract them or set data.official_split=off")
        for _, row in read_flag_csv(path, ("image_id",)):
            assigned[Path(row["image_id"]).stem] = "valid" if name == test_file else "train"
    return assigned


# ---------------------------------------------------------------- boxes


def _boxes(root: Path, located: dict[str, str], problems: list[Problem]
           ) -> tuple[dict[str, list[TrueBox]] | None, list[str], set[str]]:
    """Boxes per path in upright pixels, notes on what was turned, and the paths whose header is unreadable."""
    recorded: dict[str, tuple[tuple[int, int], BoxList]] = {}
    labels: dict[str, Path] = {}
    if (root / COCO_JSON).is_file():
        recorded = _coco_boxes(root / COCO_JSON, located, problems)
    elif (root / YOLO_DIR).is_dir():
        labels = _yolo_files(root, located)
    else:
        return None, [], set()
    boxes: dict[str, list[TrueBox]] = {}
    turned, unreadable = 0, set()
    for path in sorted({*recorded, *labels}):
        try:
            upright_h, upright_w = image_size(root / path)
            orientation = jpeg_orientation(root / path)
        except ImageReadError as exc:
            problems.append(Problem(path, "unreadable", str(exc)))
            unreadable.add(path)
            continue
        stored_h, stored_w = stored_size(upright_h, upright_w, orientation)
        size, coords = recorded[path] if path in recorded else (None, _yolo(labels[path], stored_w, stored_h,
                                                                             path, problems))
        placed = _placed(path, coords, size, (stored_w, stored_h), (upright_w, upright_h), orientation, problems)
        if placed:
            turned += orientation != 1
            boxes[path] = [TrueBox(*b, kind=KIND) for b in placed]
    notes = [f"{turned} image(s) with boxes carry an EXIF rotation: their boxes were turned with the image"] \
        if turned else []
    return boxes, notes, unreadable


def _placed(path: str, coords: BoxList, size: tuple[int, int] | None, stored: tuple[int, int],
            upright: tuple[int, int], orientation: int, problems: list[Problem]) -> BoxList | None:
    """Boxes in the upright frame; ``size`` is the (width, height) the COCO file records, None for YOLO."""
    if size is not None and size == upright and upright != stored:
        frame = "upright"  # recorded on the image as shown: nothing to turn
    elif size is None or size == stored:
        frame = "stored"
    else:
        problems.append(Problem(path, "bad_box", f"the COCO file records {size[0]}x{size[1]} px but the image is "
                                f"{stored[0]}x{stored[1]}; its boxes cannot be placed and are skipped"))
        return None
    width, height = upright
    out = []
    for box in coords:
        x0, y0, x1, y1 = upright_box(box, orientation, *stored) if frame == "stored" else box
        x0, y0, x1, y1 = max(x0, 0.0), max(y0, 0.0), min(x1, float(width)), min(y1, float(height))
        if x1 > x0 and y1 > y0:
            out.append((x0, y0, x1, y1))
        else:
            problems.append(Problem(path, "bad_box", f"a box {box} covers no pixel of the {width}x{height} image"))
    return out


def _coco_boxes(json_path: Path, located: dict[str, str], problems: list[Problem]
                ) -> dict[str, tuple[tuple[int, int], BoxList]]:
    """``{path: ((width, height) recorded, [xyxy, ...])}`` for the listed images the COCO file annotates."""
    try:
        coco = json.loads(json_path.read_text(encoding="utf-8-sig"))
        images = {int(im["id"]): im for im in coco["images"]}
        annotations = list(coco["annotations"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise DataError(f"{json_path}: not a COCO annotation file with images and annotations ({exc}); "
                        "re-extract it, or delete it to read the YOLO files instead") from exc
    out: dict[str, tuple[tuple[int, int], BoxList]] = {}
    for number, ann in enumerate(annotations, start=1):
        try:
            image = images[int(ann["image_id"])]
            x, y, w, h = (float(v) for v in ann["bbox"])
            size = (int(image["width"]), int(image["height"]))
            stem = Path(str(image["file_name"])).stem
        except (KeyError, TypeError, ValueError) as exc:
            problems.append(Problem(COCO_JSON.as_posix(), "bad_box", f"annotation {number}: unusable ({exc!r})"))
            continue
        if stem in located:
            out.setdefault(located[stem], (size, []))[1].append((x, y, x + w, y + h))
    return out


def _yolo_files(root: Path, located: dict[str, str]) -> dict[str, Path]:
    """``{path: label file}`` for the listed images whose YOLO file holds anything (empty means no fracture)."""
    files = {path: root / YOLO_DIR / f"{stem}.txt" for stem, path in located.items()}
    return {path: label for path, label in files.items() if label.is_file() and label.stat().st_size > 0}


def _yolo(label: Path, width: int, height: int, path: str, problems: list[Problem]) -> BoxList:
    """One YOLO file in pixels of the stored image (the only frame a normalised box can refer to)."""
    found, bad = read_yolo_file(label, width, height, classes=1, report_as=path)
    problems += bad
    return [(b.x0, b.y0, b.x1, b.y1) for b in found]


__all__ = ["DIR_NAME", "looks_like", "read_fracatlas"]
