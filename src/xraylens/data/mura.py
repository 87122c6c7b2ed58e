"""MURA v1.1 index: the official CSVs or a folder walk -> one table, one row per image.

Why both routes give the same table: the synthetic dataset, a hand-made subset
and the real download must look identical to training and evaluation code.
The CSVs are the ground truth when present (they carry the labels); the disk
is always walked too, because what is listed and what is on disk drift apart
in real downloads (partial extractions, macOS ``._*`` files, stray copies).

Every file that cannot be used is skipped and recorded as a
:class:`~xraylens.data.problems.Problem`; nothing is silently dropped. That
includes a symlink leading out of the ``MURA-v1.1`` folder (a tree that reads
files from elsewhere on the machine is refused entry by entry, never followed
silently), a study folder with no images, and a study whose label CSV entry
contradicts its folder name (no safe guess exists, so the study is skipped).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from xraylens.config import BODY_PARTS
from xraylens.data.images import ImageReadError, junk_kind, read_image
from xraylens.data.mura_layout import (
    MURA_DIR,
    PATIENT_RE,
    SPLITS,
    STUDY_DIR_RE,
    ImageRef,
    check_splits,
    image_csv,
    label_csv,
    normalize_body_parts,
    parse_image_path,
    read_image_csv,
    read_label_csv,
    resolve_root,
)
from xraylens.data.problems import DataError, Problem, raise_if_problems, summarize_problems

__all__ = ["COLUMNS", "DataError", "MuraIndex", "Problem", "index_dataset", "normalize_body_parts"]

COLUMNS: tuple[str, ...] = (
    "path",
    "file",
    "split",
    "body_part",
    "patient_id",
    "study_id",
    "study_path",
    "view",
    "label",
)


@dataclass
class MuraIndex:
    """The image table plus where it came from and what was skipped on the way."""

    table: pd.DataFrame
    root: Path  # the folder that contains MURA-v1.1
    source: str  # "csv" (official lists) or "walk" (folders only)
    problems: list[Problem] = field(default_factory=list)

    def problem_summary(self, max_examples: int = 3) -> dict[str, Any]:
        """Counts per kind, the first examples of each and the suggested fix; JSON-able."""
        return summarize_problems(self.problems, max_examples)


def index_dataset(
    root: str | Path,
    *,
    splits: Sequence[str] | str = SPLITS,
    body_parts: Iterable[str] | str | None = None,
    verify: bool = False,
    strict: bool = False,
    progress: bool = True,
) -> MuraIndex:
    """Index a MURA v1.1 tree; ``root`` is the ``MURA-v1.1`` folder or its parent.

    Route: with both CSVs of every requested split, the image list and labels
    come from them (``source="csv"``) and the disk walk only finds files that
    are missing or unlisted. Otherwise the folders are the list
    (``source="walk"``); labels then come from ``<split>_labeled_studies.csv``
    where that file exists, else from the ``_positive``/``_negative`` names.

    ``verify=True`` decodes every image (slow, but the only way to find
    truncated files before training trips on them). ``strict=True`` turns any
    recorded problem into a :class:`DataError`. A study whose CSV label
    contradicts its folder name is skipped as a ``label_conflict`` problem.
    """
    parent = resolve_root(root)
    mura_dir = parent / MURA_DIR
    chosen_splits = check_splits(splits)
    parts = normalize_body_parts(body_parts)
    use_csv = all(
        image_csv(mura_dir, s).is_file() and label_csv(mura_dir, s).is_file() for s in chosen_splits
    )
    problems: list[Problem] = []
    refs: list[ImageRef] = []
    for split in chosen_splits:
        split_refs, split_problems = _index_split(mura_dir, split, parts, use_csv, progress)
        refs += split_refs
        problems += split_problems
    labels = _labels(mura_dir, chosen_splits, refs, problems)
    refs = [ref for ref in refs if ref.study_id in labels]
    if verify:
        refs = _verified(parent, refs, problems, progress)
    table = _table(parent, refs, labels)
    if strict:
        raise_if_problems(problems, f"{mura_dir}")
    return MuraIndex(table=table, root=parent, source="csv" if use_csv else "walk", problems=problems)


# ---------------------------------------------------------------- one split


def _index_split(
    mura_dir: Path, split: str, parts: tuple[str, ...], use_csv: bool, progress: bool
) -> tuple[list[ImageRef], list[Problem]]:
    split_dir = mura_dir / split
    if not split_dir.is_dir():
        raise DataError(
            f"{split_dir}: folder not found; the download is incomplete (re-extract MURA-v1.1.zip) "
            f"or index only the splits you have, e.g. splits=('train',)"
        )
    candidates, problems = _walk_split(mura_dir.parent, split_dir, parts, mura_dir.resolve())
    on_disk, bad_paths = _check_magic(mura_dir.parent, candidates, problems, progress, split)
    bad_paths |= {p.path for p in problems}  # off-layout entries too: report each path once
    if not use_csv:
        return [r for r in (parse_image_path(p) for p in sorted(on_disk)) if r is not None], problems
    listed, csv_problems = read_image_csv(image_csv(mura_dir, split), split)
    problems += csv_problems
    refs = []
    for ref in listed:
        if ref.body_part not in parts or ref.path in bad_paths:
            continue  # filtered out, or already reported as junk by the walk
        if ref.path in on_disk:
            refs.append(ref)
        else:
            problems.append(Problem(ref.path, "missing_on_disk", "listed in the CSV but not on disk"))
    listed_paths = {ref.path for ref in listed}
    for path in sorted(on_disk - listed_paths):
        problems.append(
            Problem(path, "unlisted_on_disk", f"on disk but not in {image_csv(mura_dir, split).name}")
        )
    return refs, problems


def _walk_split(
    parent: Path, split_dir: Path, parts: tuple[str, ...], inside: Path
) -> tuple[list[str], list[Problem]]:
    """MURA-relative paths of every non-hidden file in a study folder; layout deviations become problems.

    ``inside`` is the resolved ``MURA-v1.1`` folder: a symlink whose target lies
    outside it is recorded as ``outside_root`` and never read.
    """
    problems: list[Problem] = []
    files: list[str] = []
    walk = {"parent": parent, "problems": problems, "inside": inside}
    for part in _entries(split_dir, want_dirs=True, **walk):
        if part.name not in BODY_PARTS:
            detail = f"not a body part folder ({', '.join(BODY_PARTS)})"
            problems.append(Problem(_rel(parent, part.path), "unexpected_path", detail))
        if part.name not in parts:
            continue
        for patient in _entries(Path(part.path), want_dirs=True, pattern=PATIENT_RE, **walk):
            for study in _entries(Path(patient.path), want_dirs=True, pattern=STUDY_DIR_RE, **walk):
                before = len(problems)
                found = [_rel(parent, f.path) for f in _entries(Path(study.path), want_dirs=False, **walk)]
                if not found and len(problems) == before:
                    problems.append(Problem(_rel(parent, study.path) + "/", "empty_study",
                                            "study folder holds no image file"))
                files += found
    return files, problems


def _entries(
    folder: Path, *, parent: Path, problems: list[Problem], inside: Path, want_dirs: bool, pattern: Any = None
) -> list[os.DirEntry]:
    """Sorted entries of the wanted kind; hidden, escaping and off-layout entries are recorded and skipped."""
    with os.scandir(folder) as scan:
        entries = sorted(scan, key=lambda e: e.name)
    kept = []
    for entry in entries:
        if entry.is_symlink() and not _leads_inside(entry.path, inside):
            detail = f"symlink to {os.path.realpath(entry.path)}, outside {inside}; not read"
            problems.append(Problem(_rel(parent, entry.path), "outside_root", detail))
        elif entry.name.startswith("."):
            kind = "AppleDouble (macOS resource fork)" if entry.name.startswith("._") else "hidden"
            problems.append(Problem(_rel(parent, entry.path), "hidden_file", f"{kind} entry, skipped"))
        elif entry.is_dir() != want_dirs or (pattern is not None and not pattern.fullmatch(entry.name)):
            expected = "a folder" if want_dirs else "an image file"
            if pattern is not None:
                expected += f" named like {pattern.pattern}"
            problems.append(Problem(_rel(parent, entry.path), "unexpected_path", f"expected {expected} here"))
        else:
            kept.append(entry)
    return kept


def _leads_inside(path: str, inside: Path) -> bool:
    """Whether a symlink's final target lies within ``inside`` (a resolved folder); dangling ones do not."""
    target = Path(os.path.realpath(path))
    return target.exists() and target.is_relative_to(inside)


def _check_magic(
    parent: Path, candidates: list[str], problems: list[Problem], progress: bool, split: str
) -> tuple[set[str], set[str]]:
    """Split candidates into images and junk by size and magic bytes (cheap: reads 132 bytes per file)."""
    from tqdm.auto import tqdm

    good: set[str] = set()
    bad: set[str] = set()
    for rel in tqdm(
        candidates, desc=f"checking {split} files", unit="file", disable=not progress, leave=False
    ):
        file = parent / rel
        kind, detail = junk_kind(file)
        if kind is None:
            good.add(rel)
        else:
            bad.add(rel)
            problems.append(Problem(rel, kind, detail))
    return good, bad




# ---------------------------------------------------------------- labels, verification, table


def _labels(
    mura_dir: Path, splits: tuple[str, ...], refs: list[ImageRef], problems: list[Problem]
) -> dict[str, int]:
    """``{study_id: label}`` for the studies of ``refs``; from the CSVs where present, else folder names."""
    from_csv: dict[str, tuple[str, int | None, str]] = {}
    has_csv = set()
    for split in splits:
        path = label_csv(mura_dir, split)
        if path.is_file():
            split_labels, csv_problems = read_label_csv(path, split)
            from_csv.update(split_labels)
            problems += csv_problems
            has_csv.add(split)
    labels: dict[str, int] = {}
    conflicts: set[str] = set()
    for ref in refs:
        if ref.study_id in labels or ref.study_id in conflicts:
            continue
        entry = from_csv.get(ref.study_id)
        if ref.split not in has_csv:
            labels[ref.study_id] = int(ref.sign == "positive")
        elif entry is None:
            detail = f"study {ref.study_path} is not in {label_csv(mura_dir, ref.split).name}"
            problems.append(Problem(ref.path, "unlabeled", detail))
        elif entry[1] is None:
            conflicts.add(ref.study_id)  # the CSV contradicts itself; read_label_csv reported it
        elif entry[0] != ref.sign:
            conflicts.add(ref.study_id)
            detail = (f"folder {ref.study_path} disagrees with the label CSV entry {entry[2]} "
                      f"(label {entry[1]}); its images are skipped")
            problems.append(Problem(ref.study_path, "label_conflict", detail))
        else:
            labels[ref.study_id] = entry[1]
    return labels


def _verified(parent: Path, refs: list[ImageRef], problems: list[Problem], progress: bool) -> list[ImageRef]:
    """Fully decode every image through the same contract training uses; failures become ``unreadable``."""
    from tqdm.auto import tqdm

    kept = []
    for ref in tqdm(refs, desc="verifying images", unit="img", disable=not progress):
        try:
            read_image(parent / ref.path)
        except ImageReadError as exc:
            problems.append(Problem(ref.path, "unreadable", str(exc)))
        else:
            kept.append(ref)
    return kept


def _table(parent: Path, refs: list[ImageRef], labels: dict[str, int]) -> pd.DataFrame:
    """One row per image, sorted by split, part, patient, study number, view number (image10 after image9)."""
    rows = [
        (
            ref.path,
            str(parent / ref.path),
            ref.split,
            ref.body_part,
            ref.patient_id,
            ref.study_id,
            ref.study_path,
            ref.view,
            labels[ref.study_id],
            SPLITS.index(ref.split),
            _number(ref.study),
            _number(ref.view),
        )
        for ref in refs
    ]
    keys = ["_split", "_study", "_view"]
    frame = pd.DataFrame(rows, columns=[*COLUMNS, *keys])
    frame = frame.sort_values(["_split", "body_part", "patient_id", "_study", "_view", "path"], kind="stable")
    frame = frame.drop(columns=keys).reset_index(drop=True)
    return frame.astype({**{c: str for c in COLUMNS if c != "label"}, "label": "int64"})


def _number(name: str) -> int:
    digits = "".join(ch for ch in name if ch.isdigit())
    return int(digits) if digits else -1


def _rel(parent: Path, path: str) -> str:
    return Path(path).relative_to(parent).as_posix()
