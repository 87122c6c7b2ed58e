"""The MURA v1.1 layout: where the folder is, what its paths mean, and how its two CSVs are read.

Kept apart from :mod:`xraylens.data.mura` so that the rules of the released
format (path grammar, CSV shape) can be read in one sitting and tested
without touching the disk walk.

Paths are the strings the official CSVs use: POSIX, relative to the folder
that *contains* ``MURA-v1.1``, e.g.
``MURA-v1.1/train/XR_WRIST/patient00001/study1_positive/image1.png``.
"""

from __future__ import annotations

import csv
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from xraylens.config import BODY_PARTS
from xraylens.data.problems import DataError, Problem

MURA_DIR = "MURA-v1.1"
SPLITS: tuple[str, ...] = ("train", "valid")
LAYOUT_HINT = (
    f"{MURA_DIR}/{{train,valid}}/XR_<PART>/patient<N>/study<K>_{{positive,negative}}/image<J>.png, "
    f"plus {MURA_DIR}/{{train,valid}}_image_paths.csv and {{train,valid}}_labeled_studies.csv"
)
IMAGE_EXAMPLE = f"{MURA_DIR}/train/XR_WRIST/patient00001/study1_positive/image1.png"
STUDY_EXAMPLE = f"{MURA_DIR}/train/XR_WRIST/patient00001/study1_positive/,1"

_STUDY_PATTERN = (
    r"MURA-v1\.1/(?P<split>[^/]+)/(?P<part>XR_[A-Za-z]+)/(?P<patient>patient\d+)/"
    r"(?P<study>study\d+)_(?P<sign>positive|negative)/"
)
_IMAGE_RE = re.compile(_STUDY_PATTERN + r"(?P<name>[^/]+)")
_STUDY_RE = re.compile(_STUDY_PATTERN)
PATIENT_RE = re.compile(r"patient\d+")
STUDY_DIR_RE = re.compile(r"study\d+_(positive|negative)")


@dataclass(frozen=True)
class ImageRef:
    """One image path, parsed into the fields of the index table."""

    path: str
    split: str
    body_part: str
    patient_id: str
    study: str  # "study1"
    sign: str  # "positive" / "negative": the folder's claim about the label
    name: str  # "image1.png"

    @property
    def study_id(self) -> str:
        """Unique across the dataset: the same patient and study number can occur in both splits' folders."""
        return f"{self.split}/{self.body_part}/{self.patient_id}/{self.study}"

    @property
    def study_path(self) -> str:
        return f"{MURA_DIR}/{self.split}/{self.body_part}/{self.patient_id}/{self.study}_{self.sign}/"

    @property
    def view(self) -> str:
        return self.name.rsplit(".", 1)[0] if "." in self.name else self.name


def parse_image_path(path: str) -> ImageRef | None:
    """Parse a MURA-relative image path; ``None`` when it does not follow the layout."""
    match = _IMAGE_RE.fullmatch(path)
    if match is None:
        return None
    g = match.groupdict()
    return ImageRef(path, g["split"], g["part"], g["patient"], g["study"], g["sign"], g["name"])


def study_id_of(study_path: str) -> tuple[str, str] | None:
    """``(study_id, sign)`` for a labeled-studies path, or ``None`` when it does not follow the layout."""
    match = _STUDY_RE.fullmatch(study_path)
    if match is None:
        return None
    g = match.groupdict()
    return f"{g['split']}/{g['part']}/{g['patient']}/{g['study']}", g["sign"]


# ---------------------------------------------------------------- root, splits, body parts


def resolve_root(root: str | Path) -> Path:
    """The folder that contains ``MURA-v1.1``; ``root`` may be that folder or ``MURA-v1.1`` itself."""
    given = Path(root).expanduser().absolute()
    if not given.exists():
        raise DataError(
            f"{given}: no such folder; expected the MURA-v1.1 folder or its parent ({LAYOUT_HINT})"
        )
    if given.name == MURA_DIR and given.is_dir():
        return given.parent
    if (given / MURA_DIR).is_dir():
        return given
    raise DataError(
        f"{given}: not a MURA v1.1 dataset: no {MURA_DIR} folder inside. Expected {LAYOUT_HINT}. "
        f"Pass the {MURA_DIR} folder or the folder that contains it (create one with `xraylens data synth`)"
    )


def check_splits(splits: Iterable[str] | str) -> tuple[str, ...]:
    chosen = (splits,) if isinstance(splits, str) else tuple(dict.fromkeys(splits))
    unknown = [s for s in chosen if s not in SPLITS]
    if unknown or not chosen:
        raise DataError(f"unknown split(s) {unknown or '(none given)'}; valid splits: {', '.join(SPLITS)}")
    return chosen


def normalize_body_parts(
    body_parts: Iterable[str] | str | None, known: tuple[str, ...] = BODY_PARTS
) -> tuple[str, ...]:
    """``"wrist"``, ``"WRIST"`` or ``"XR_WRIST"`` -> ``"XR_WRIST"``; ``None`` or empty means all ``known`` parts."""
    if body_parts is None:
        return known
    if isinstance(body_parts, str):
        body_parts = [body_parts]
    chosen = []
    for name in body_parts:
        canonical = name.strip().upper()
        canonical = canonical if canonical.startswith("XR_") else f"XR_{canonical}"
        if canonical not in known:
            valid = ", ".join(p.removeprefix("XR_").lower() for p in known)
            raise DataError(f"unknown body part {name!r}; valid: {valid} (or XR_WRIST style)")
        chosen.append(canonical)
    return tuple(p for p in known if p in chosen) or known


# ---------------------------------------------------------------- CSVs


def image_csv(mura_dir: Path, split: str) -> Path:
    return mura_dir / f"{split}_image_paths.csv"


def label_csv(mura_dir: Path, split: str) -> Path:
    return mura_dir / f"{split}_labeled_studies.csv"


def read_image_csv(csv_path: Path, split: str) -> tuple[list[ImageRef], list[Problem]]:
    """Listed images in file order; malformed lines become ``bad_csv_line`` problems."""
    refs: list[ImageRef] = []
    problems: list[Problem] = []
    seen: set[str] = set()
    well_formed = 0
    lines = _csv_lines(csv_path)
    for number, fields in lines:
        ref = parse_image_path(fields[0].strip()) if len(fields) == 1 else None
        if ref is None or ref.split != split or ref.body_part not in BODY_PARTS:
            problems.append(_bad_line(csv_path, number, fields, f"expected one path like {IMAGE_EXAMPLE}"))
            continue
        well_formed += 1
        if ref.path in seen:
            problems.append(_bad_line(csv_path, number, fields, "duplicate of an earlier line"))
        else:
            seen.add(ref.path)
            refs.append(ref)
    _check_shape(csv_path, lines, well_formed, IMAGE_EXAMPLE)
    return refs, problems


def read_label_csv(csv_path: Path, split: str) -> tuple[dict[str, tuple[str, int | None, str]], list[Problem]]:
    """``{study_id: (sign, label, study_path)}``; ``label`` is None for a study the CSV contradicts.

    A line whose label contradicts its own folder name, or a study listed twice
    with different labels, is a ``label_conflict`` problem: no safe guess exists,
    so the study is left out (and its images with it) while the rest is used.
    """
    labels: dict[str, tuple[str, int | None, str]] = {}
    problems: list[Problem] = []
    well_formed = 0
    lines = _csv_lines(csv_path)
    for number, fields in lines:
        parsed = _parse_label_line(fields, split)
        if parsed is None:
            problems.append(
                _bad_line(csv_path, number, fields, f"expected 'study path,0|1' like {STUDY_EXAMPLE}")
            )
            continue
        well_formed += 1
        study_id, sign, label, study_path = parsed
        if (sign == "positive") != (label == 1):
            labels[study_id] = (sign, None, study_path)
            problems.append(Problem(study_path, "label_conflict", (
                f"{csv_path.name} line {number}: study {study_path} is labelled {label} but its folder says "
                f"'{sign}'; the CSV and the folder name must agree: fix the label or rename the folder")))
            continue
        if study_id in labels:
            if labels[study_id][1] is not None and labels[study_id][1] != label:
                labels[study_id] = (sign, None, study_path)
                problems.append(Problem(study_path, "label_conflict", (
                    f"{csv_path.name} line {number}: study {study_id} is listed twice with different labels")))
            elif labels[study_id][1] is not None:
                problems.append(_bad_line(csv_path, number, fields, "duplicate of an earlier line"))
            continue
        labels[study_id] = (sign, label, study_path)
    _check_shape(csv_path, lines, well_formed, STUDY_EXAMPLE)
    return labels, problems


def _parse_label_line(fields: list[str], split: str) -> tuple[str, str, int, str] | None:
    if len(fields) != 2 or fields[1].strip() not in ("0", "1"):
        return None
    study_path = fields[0].strip()
    study_path = study_path if study_path.endswith("/") else study_path + "/"
    parsed = study_id_of(study_path)
    if parsed is None or not parsed[0].startswith(f"{split}/") or parsed[0].split("/")[1] not in BODY_PARTS:
        return None
    return parsed[0], parsed[1], int(fields[1].strip()), study_path


def _csv_lines(csv_path: Path) -> list[tuple[int, list[str]]]:
    """Non-blank lines as ``(line number, fields)``; unreadable or binary files are DataErrors."""
    try:
        with open(csv_path, newline="", encoding="utf-8-sig") as handle:
            reader = csv.reader(handle)
            return [(reader.line_num, row) for row in reader if any(cell.strip() for cell in row)]
    except UnicodeDecodeError as exc:
        raise DataError(
            f"{csv_path}: not a UTF-8 text file ({exc}); re-extract it from MURA-v1.1.zip"
        ) from exc
    except (OSError, csv.Error) as exc:
        raise DataError(f"{csv_path}: cannot be read as CSV ({exc})") from exc


def _check_shape(csv_path: Path, lines: list[tuple[int, list[str]]], good: int, example: str) -> None:
    """Tell a wrong file (header row, wrong columns, foreign paths) from a few bad lines in a right one."""
    if not lines:
        raise DataError(f"{csv_path}: the file is empty; expected one line per entry like {example}")
    first_number, first = lines[0]
    if not first[0].strip().startswith(f"{MURA_DIR}/") and good == len(lines) - 1 and good > 0:
        raise DataError(
            f"{csv_path} line {first_number} looks like a header ({','.join(first)!r}); "
            "the official MURA CSVs have no header row: delete that line"
        )
    if good * 2 < len(lines):
        raise DataError(
            f"{csv_path}: only {good} of {len(lines)} lines have the expected form {example!r} "
            f"(no header, paths starting with {MURA_DIR}/); line {first_number} reads {','.join(first)!r}. "
            "Is this the right file? Re-extract it from MURA-v1.1.zip"
        )


def _bad_line(csv_path: Path, number: int, fields: list[str], expected: str) -> Problem:
    detail = f"{csv_path.name} line {number}: {expected}, got {','.join(fields)!r}"
    return Problem(f"{MURA_DIR}/{csv_path.name}", "bad_csv_line", detail)
