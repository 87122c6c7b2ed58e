"""Dataset problems: what was skipped while indexing, and why.

Why a list and not exceptions: a 40,000-image download nearly always carries
some junk (macOS ``._*`` files, a truncated PNG, a CSV line pointing nowhere).
Indexing skips each one, records it here, and the caller decides: a summary
shows them, ``strict=True`` turns them into one :class:`DataError`.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from typing import Any

# Every kind, with the fix a user should try; the order is the order of reports.
PROBLEM_KINDS: dict[str, str] = {
    "bad_csv_line": "fix or delete the line in the CSV",
    "missing_on_disk": "the download is incomplete: re-extract the dataset's archive (MURA-v1.1.zip, ...)",
    "unlisted_on_disk": "a file the official CSVs do not list: remove it or add it to the CSV",
    "duplicate_id": "one image id listed twice or stored twice: the first (or the copy its label names) is kept",
    "label_conflict": "the label CSV (MURA's *_labeled_studies.csv, or dataset.csv) and the folder disagree, "
                      "skipped: fix the label or rename the folder",
    "bad_box": "a box annotation that cannot be used: fix or delete that line of the annotation file",
    "unlabeled": "the study is missing from *_labeled_studies.csv: add it or remove the images",
    "hidden_file": "hidden or macOS '._*' file: safe to delete",
    "empty_file": "zero-byte file: re-extract it from the archive",
    "not_image": "not a PNG/JPEG/DICOM file despite its name: re-extract or delete it",
    "unreadable": "truncated or corrupt image: re-extract it from the archive",
    "unexpected_path": "file or folder outside the dataset's layout (MURA: XR_<PART>/patientN/studyK_<sign>/)",
    "outside_root": "a symlink that leads out of the dataset folder, refused: copy the file into the tree",
    "empty_study": "a study folder with no image in it: re-extract it from the archive or delete the folder",
}


class DataError(ValueError):
    """The dataset cannot be used as it is; the message names the file and what was expected."""


@dataclass(frozen=True)
class Problem:
    """One skipped file or CSV line: ``path`` is MURA-relative where possible, else absolute."""

    path: str
    kind: str
    detail: str

    def to_dict(self) -> dict[str, str]:
        return asdict(self)


def problem_counts(problems: Iterable[Problem]) -> dict[str, int]:
    """Counts per kind in :data:`PROBLEM_KINDS` order (unknown kinds last), only kinds that occur."""
    counts = Counter(p.kind for p in problems)
    order = list(PROBLEM_KINDS) + sorted(set(counts) - set(PROBLEM_KINDS))
    return {kind: counts[kind] for kind in order if counts[kind]}


def summarize_problems(problems: list[Problem], max_examples: int = 3) -> dict[str, Any]:
    """JSON-able ``{"total", "counts", "examples": {kind: [problem dicts]}, "fixes": {kind: text}}``."""
    counts = problem_counts(problems)
    examples: dict[str, list[dict[str, str]]] = {kind: [] for kind in counts}
    for problem in problems:
        bucket = examples[problem.kind]
        if len(bucket) < max_examples:
            bucket.append(problem.to_dict())
    fixes = {kind: PROBLEM_KINDS[kind] for kind in counts if kind in PROBLEM_KINDS}
    return {"total": len(problems), "counts": counts, "examples": examples, "fixes": fixes}


def format_problems(problems: list[Problem], max_examples: int = 3) -> str:
    """Human-readable block: one line per kind with its count and fix, then the first examples."""
    summary = summarize_problems(problems, max_examples)
    lines = [f"{summary['total']} problem(s):"]
    for kind, count in summary["counts"].items():
        fix = summary["fixes"].get(kind, "")
        lines.append(f"  {kind}: {count}" + (f"  ({fix})" if fix else ""))
        for example in summary["examples"][kind]:
            lines.append(f"      {example['path']}: {example['detail']}")
        if count > len(summary["examples"][kind]):
            lines.append(f"      ... and {count - len(summary['examples'][kind])} more")
    return "\n".join(lines)


def raise_if_problems(problems: list[Problem], what: str) -> None:
    """The ``strict=True`` policy: any problem at all stops the run, with counts and examples."""
    if problems:
        raise DataError(
            f"{what}: strict mode refuses a dataset with problems; fix them or run without strict.\n"
            + format_problems(problems)
        )
