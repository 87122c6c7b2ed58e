"""GRAZPEDWRI-DX (Nagy et al., Scientific Data 2022) as released -> the index table and its YOLO boxes.

The release::

    dataset.csv     UTF-8 with BOM, CRLF. filestem,patient_id,study_number,timehash,gender,age,laterality,
                    projection,initial_exam,ao_classification,cast,diagnosis_uncertain,osteopenia,
                    fracture_visible,metal,pixel_spacing,device_manufacturer   (flags are 1 or empty)
    images_part1/ ... images_part4/<filestem>.png            16-bit grayscale PNG
    folder_structure/yolov5/labels/<filestem>.txt            "cls cx cy w h", normalised

How it becomes the table:

* **patients and studies**: ``patient_id``; a study is ``patient_id`` +
  ``study_number``, so the study-level evaluation averages a study's views.
* **body part** ``XR_WRIST`` for every image; **view** ``projection<N>``
  with the release's projection code.
* **label** (``data.label``): ``fracture`` (default) is the
  ``fracture_visible`` flag; ``any`` also counts an image with a box of any
  finding class. As everywhere, a study is abnormal when one of its images is.
* **split**: there is no official one; ``data.test_fraction`` of the
  patients (seeded, stratified by label) become ``valid``, our test split.
* **boxes**: classes 0-8 are boneanomaly, bonelesion, foreignbody,
  fracture, metal, periostealreaction, pronatorsign, softtissue, text.
  They keep their names except metal -> ``hardware`` and bonelesion ->
  ``lesion`` (ours). ``text`` marks burned-in lettering, not a finding: its
  boxes are left out, so no CAM scores a hit for pointing at a label.

Problems: a filestem listed twice or stored in two parts (first kept,
``duplicate_id``), a flag that is neither 1 nor empty (``bad_csv_line``),
listed but absent or present but unlisted images, unusable label lines
(``bad_box``). 16-bit PNGs go through the one image contract
(:mod:`xraylens.data.images`), which scales them by their effective bit depth.
"""

from __future__ import annotations

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
from xraylens.data.images import ImageReadError, image_size
from xraylens.data.problems import Problem
from xraylens.data.yolo_labels import read_yolo_file

CSV_NAME = "dataset.csv"
NEEDED = ("filestem", "patient_id", "study_number", "projection", "fracture_visible")
FLAG_COLUMNS = ("fracture_visible", "metal")
IMAGE_PARTS = tuple(f"images_part{k}" for k in range(1, 5))
LABEL_DIR = Path("folder_structure", "yolov5", "labels")
CLASSES = ("boneanomaly", "bonelesion", "foreignbody", "fracture", "metal", "periostealreaction",
           "pronatorsign", "softtissue", "text")
OUR_NAMES = {"metal": "hardware", "bonelesion": "lesion"}
NOT_FINDINGS = frozenset({"text"})
BODY_PART = "XR_WRIST"


def looks_like(folder: Path) -> bool:
    """A GRAZPEDWRI-DX folder: its dataset.csv next to at least one images_part<N> folder."""
    return (folder / CSV_NAME).is_file() and any((folder / part).is_dir() for part in IMAGE_PARTS)


def kind_of(cls: int) -> str:
    """Our name for YOLO class ``cls``."""
    return OUR_NAMES.get(CLASSES[cls], CLASSES[cls])


def read_grazpedwri(
    root: Path,
    options: ReaderOptions,
    *,
    splits: Iterable[str],
    body_parts: Iterable[str] | None,
    verify: bool = False,
    progress: bool = True,
) -> DatasetIndex:
    """Index the GRAZPEDWRI-DX folder ``root``; every quirk is skipped and reported (module docstring)."""
    problems: list[Problem] = []
    rows = _listed(root / CSV_NAME, problems)
    located = _locate(root, rows, problems)
    boxes, unreadable = _boxes(root, located, problems)
    images = pd.DataFrame(
        [(path, BODY_PART, rows[stem]["patient_id"], f"{rows[stem]['patient_id']}/{rows[stem]['study_number']}",
          f"projection{rows[stem]['projection']}", _label(rows[stem], boxes.get(path, []), options.label))
         for stem, path in located.items() if path not in unreadable],
        columns=["path", "body_part", "patient_id", "study_id", "view", "label"])
    table = finish_table(root, images, options, splits=splits, body_parts=body_parts)
    if verify:
        table = verified(table, problems, progress)
    source = f"{CSV_NAME} + YOLO boxes" if (root / LABEL_DIR).is_dir() else f"{CSV_NAME} (no label folder: no boxes)"
    return DatasetIndex(table, root, source, problems, "grazpedwri", boxes if (root / LABEL_DIR).is_dir() else None)


def _label(row: dict[str, str], boxes: list[TrueBox], rule: str) -> int:
    return int(row["fracture_visible"] == "1" or (rule == "any" and bool(boxes)))


def _listed(csv_path: Path, problems: list[Problem]) -> dict[str, dict[str, str]]:
    """``{filestem: row}``; unusable lines and repeated stems (first kept) become problems."""
    rows: dict[str, dict[str, str]] = {}
    for line, row in read_flag_csv(csv_path, NEEDED):
        stem = row["filestem"]
        bad = [c for c in FLAG_COLUMNS if row.get(c, "") not in ("", "0", "1")]
        if not stem or not row["patient_id"] or bad:
            why = f"{', '.join(bad)} must be 1 or empty" if bad else "filestem and patient_id are required"
            problems.append(Problem(CSV_NAME, "bad_csv_line", f"{CSV_NAME} line {line}: {why}"))
        elif stem in rows:
            problems.append(Problem(CSV_NAME, "duplicate_id", f"{CSV_NAME} line {line}: {stem} listed again; "
                                    "the first line is kept"))
        else:
            rows[stem] = row
    return rows


def _locate(root: Path, rows: dict[str, dict[str, str]], problems: list[Problem]) -> dict[str, str]:
    """``{filestem: path}`` over images_part1..4 (first part wins); missing and unlisted files are problems."""
    on_disk: dict[str, str] = {}
    for part in IMAGE_PARTS:
        for rel in list_images(root, root / part, problems):
            stem = Path(rel).stem
            if stem in on_disk:
                problems.append(Problem(rel, "duplicate_id", f"{stem} is also {on_disk[stem]}; this copy is skipped"))
            else:
                on_disk[stem] = rel
    located = {stem: on_disk[stem] for stem in rows if stem in on_disk}
    for stem in rows:
        if stem not in on_disk:
            problems.append(Problem(f"images_part*/{stem}.png", "missing_on_disk", f"listed in {CSV_NAME}"))
    for stem in sorted(set(on_disk) - set(rows)):
        problems.append(Problem(on_disk[stem], "unlisted_on_disk", f"not in {CSV_NAME} (or its line was unusable)"))
    return located


def _boxes(root: Path, located: dict[str, str], problems: list[Problem]) -> tuple[dict[str, list[TrueBox]], set[str]]:
    """Finding boxes per path (text left out), from each label file and its image's size (header only)."""
    boxes: dict[str, list[TrueBox]] = {}
    unreadable: set[str] = set()
    for stem, path in located.items():
        label = root / LABEL_DIR / f"{stem}.txt"
        if not label.is_file() or label.stat().st_size == 0:
            continue
        try:
            height, width = image_size(root / path)
        except ImageReadError as exc:
            problems.append(Problem(path, "unreadable", str(exc)))
            unreadable.add(path)
            continue
        found, bad = read_yolo_file(label, width, height, classes=len(CLASSES), report_as=path)
        problems += bad
        mine = [TrueBox(b.x0, b.y0, b.x1, b.y1, kind_of(b.cls)) for b in found if CLASSES[b.cls] not in NOT_FINDINGS]
        if mine:
            boxes[path] = mine
    return boxes, unreadable


__all__ = ["CLASSES", "kind_of", "looks_like", "read_grazpedwri"]
