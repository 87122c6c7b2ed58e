"""What every dataset reader hands on: the MURA-shaped image table, the dataset's boxes, what was skipped.

Why one shape: training, evaluation, explanation and the summary were
written against the MURA index (one row per image: path, file, split,
body_part, patient_id, study_id, study_path, view, label). The readers of
the box datasets (:mod:`xraylens.data.fracatlas`,
:mod:`xraylens.data.grazpedwri`) build exactly that table, so nothing
above the data layer asks which dataset it holds; :mod:`xraylens.data.formats`
picks the reader.

What the table means for a dataset that is not MURA:

* ``path`` is relative to ``root``, the dataset's own folder (where its
  ``dataset.csv`` is); ``file`` is the absolute file.
* ``split`` is ``train`` or ``valid`` as in MURA: ``valid`` is the test
  set, and validation during training is still carved out of ``train`` by
  patient (:func:`xraylens.data.splits.split_train_val`). Neither dataset
  ships a patient-grouped test split, so :func:`finish_table` holds out
  ``test_fraction`` of the patients with ``test_seed``, stratified by body
  part and label like the validation subset.
* Labels are per study (an image inherits its study's label): a study is
  abnormal when any of its images is.
* ``study_path`` is the study id (MURA's submission file names studies by
  folder; these datasets have no study folders).

``boxes`` maps a table path to its :class:`~xraylens.data.boxes.TrueBox`
list in pixels of the image as :func:`~xraylens.data.images.read_image`
delivers it (upright, original size); kinds use our names (``fracture``,
``hardware``, ``lesion``), other classes keep their own.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from xraylens.data.boxes import TrueBox
from xraylens.data.images import ImageReadError, junk_kind, read_image
from xraylens.data.mura import COLUMNS
from xraylens.data.mura_layout import SPLITS
from xraylens.data.problems import DataError, Problem, summarize_problems
from xraylens.data.splits import hold_out_patients

FORMAT_NAMES: dict[str, str] = {"mura": "MURA v1.1", "fracatlas": "FracAtlas", "grazpedwri": "GRAZPEDWRI-DX"}
OFFICIAL_SPLITS = ("off", "test", "valid")
LABEL_RULES = ("fracture", "any")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")


@dataclass
class DatasetIndex:
    """The image table plus where it came from, the dataset's own boxes and what was skipped."""

    table: pd.DataFrame
    root: Path  # the folder the table's paths are relative to (MURA: the folder that contains MURA-v1.1)
    source: str  # how the list and labels were read, e.g. "csv" or "dataset.csv + COCO JSON boxes"
    problems: list[Problem] = field(default_factory=list)
    format: str = "mura"
    boxes: dict[str, list[TrueBox]] | None = None  # None: the dataset ships none (MURA: see boxes.csv)
    notes: list[str] = field(default_factory=list)  # handled quirks worth a line in the summary

    def problem_summary(self, max_examples: int = 3) -> dict[str, Any]:
        """Counts per kind, the first examples of each and the suggested fix; JSON-able."""
        return summarize_problems(self.problems, max_examples)


@dataclass(frozen=True)
class ReaderOptions:
    """How a box dataset becomes a table; stored in checkpoints (``data.*``) so evaluation rebuilds the same split."""

    test_fraction: float = 0.2
    test_seed: int = 0
    official_split: str = "off"  # FracAtlas: "test" or "valid" names the official file used as our test split
    label: str = "fracture"  # GRAZPEDWRI-DX: "fracture" (fracture_visible) or "any" (any finding box too)

    def __post_init__(self) -> None:
        if not 0.0 <= self.test_fraction < 1.0:
            raise DataError(f"data.test_fraction must be in [0, 1), got {self.test_fraction}")
        if self.official_split not in OFFICIAL_SPLITS:
            raise DataError(f"data.official_split must be one of {', '.join(OFFICIAL_SPLITS)}, "
                            f"got {self.official_split!r}")
        if self.label not in LABEL_RULES:
            raise DataError(f"data.label must be one of {', '.join(LABEL_RULES)}, got {self.label!r}")

    @classmethod
    def from_config(cls, data: Any = None) -> ReaderOptions:
        """From a :class:`~xraylens.config.DataConfig`, its dict form (a checkpoint's ``data``) or None."""
        if data is None:
            return cls()
        get = data.get if isinstance(data, Mapping) else lambda key, default: getattr(data, key, default)
        defaults = cls()
        return cls(float(get("test_fraction", defaults.test_fraction)), int(get("test_seed", defaults.test_seed)),
                   str(get("official_split", defaults.official_split)), str(get("label", defaults.label)))


# ---------------------------------------------------------------- building the table


def finish_table(
    root: Path,
    images: pd.DataFrame,
    options: ReaderOptions,
    *,
    splits: Iterable[str] = SPLITS,
    body_parts: Iterable[str] | None = None,
) -> pd.DataFrame:
    """Image rows (path, body_part, patient_id, study_id, view, label[, split]) -> the index table.

    A ``split`` value already set (an official split) is kept; the other rows'
    patients are divided by :func:`hold_out_patients`. Then study labels,
    the absolute ``file``, the filters and MURA's column order and dtypes.
    """
    frame = images.copy()
    if "split" not in frame:
        frame["split"] = None
    frame["label"] = frame.groupby("study_id")["label"].transform("max").astype("int64")
    open_rows = frame["split"].isna()
    held_out = hold_out_patients(frame[open_rows], options.test_fraction, options.test_seed)
    frame.loc[open_rows, "split"] = frame.loc[open_rows, "patient_id"].map(
        lambda p: "valid" if p in held_out else "train")
    frame = frame[frame["split"].isin(tuple(splits))]
    if body_parts is not None:
        frame = frame[frame["body_part"].isin(tuple(body_parts))]
    frame["file"] = [str(root / p) for p in frame["path"]]
    frame["study_path"] = frame["study_id"]
    frame["_split"] = frame["split"].map(SPLITS.index)
    frame = frame.sort_values(["_split", "body_part", "patient_id", "study_id", "path"], kind="stable")
    frame = frame[list(COLUMNS)].reset_index(drop=True)
    return frame.astype({**{c: str for c in COLUMNS if c != "label"}, "label": "int64"})


def list_images(root: Path, folder: Path, problems: list[Problem]) -> list[str]:
    """Root-relative POSIX paths of the image files directly in ``folder``, sorted; everything else is reported.

    Hidden and macOS ``._*`` files, sub-folders and files that are not images
    by their first bytes become problems; a missing folder is simply empty.
    """
    if not folder.is_dir():
        return []
    with os.scandir(folder) as scan:
        entries = sorted(scan, key=lambda e: e.name)
    kept = []
    for entry in entries:
        rel = Path(entry.path).relative_to(root).as_posix()
        if entry.name.startswith("."):
            kind = "AppleDouble (macOS resource fork)" if entry.name.startswith("._") else "hidden"
            problems.append(Problem(rel, "hidden_file", f"{kind} entry, skipped"))
        elif entry.is_dir() or not entry.name.lower().endswith(IMAGE_SUFFIXES):
            problems.append(Problem(rel, "unexpected_path", f"expected only image files in {folder.name}/"))
        else:
            kind, detail = junk_kind(entry.path)
            if kind is None:
                kept.append(rel)
            else:
                problems.append(Problem(rel, kind, detail))
    return kept


def verified(table: pd.DataFrame, problems: list[Problem], progress: bool) -> pd.DataFrame:
    """Rows whose image decodes through the training contract; the others become ``unreadable`` problems."""
    from tqdm.auto import tqdm

    keep = []
    for path, file in tqdm(zip(table["path"], table["file"], strict=True), total=len(table),
                           desc="verifying images", unit="img", disable=not progress):
        try:
            read_image(file)
        except ImageReadError as exc:
            problems.append(Problem(path, "unreadable", str(exc)))
            keep.append(False)
        else:
            keep.append(True)
    return table[keep].reset_index(drop=True)


def read_flag_csv(path: Path, needed: Iterable[str]) -> list[tuple[int, dict[str, str]]]:
    """``(line number, row)`` of a dataset's CSV (UTF-8 with or without BOM, LF or CRLF); DataError when unusable."""
    import csv

    try:
        with open(path, newline="", encoding="utf-8-sig") as handle:
            reader = csv.DictReader(handle)
            header = [name.strip() for name in (reader.fieldnames or [])]
            reader.fieldnames = header
            rows = [(reader.line_num, {k: (v or "").strip() for k, v in row.items() if k is not None})
                    for row in reader if any((v or "").strip() for v in row.values() if isinstance(v, str))]
    except FileNotFoundError as exc:
        raise DataError(f"{path}: not found; it ships with the dataset: re-extract the archive") from exc
    except UnicodeDecodeError as exc:
        raise DataError(f"{path}: not a UTF-8 text file ({exc}); re-extract it from the dataset's archive") from exc
    except (OSError, csv.Error) as exc:
        raise DataError(f"{path}: cannot be read as CSV ({exc})") from exc
    missing = [c for c in needed if c not in header]
    if missing:
        raise DataError(f"{path}: missing column(s) {', '.join(missing)}; found {','.join(header) or 'no header'}. "
                        "Is this the dataset's own dataset.csv?")
    return rows


__all__ = ["FORMAT_NAMES", "DatasetIndex", "ReaderOptions", "finish_table", "list_images", "read_flag_csv",
           "verified"]
