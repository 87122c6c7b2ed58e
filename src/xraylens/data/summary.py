"""What is in a dataset index (MURA, FracAtlas, GRAZPEDWRI-DX): counts per split and body part, sizes, boxes, problems.

Why a plain dict: the same numbers go to the terminal (``format_summary``), to
JSON for scripts and CI (``xraylens data summary --json``) and into reports,
so they are computed once, here, and only rendered elsewhere.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from xraylens.config import BODY_PARTS
from xraylens.data.dataset_index import FORMAT_NAMES, DatasetIndex
from xraylens.data.images import ImageReadError, image_size
from xraylens.data.mura import MuraIndex
from xraylens.data.problems import Problem, problem_counts


def summarize(index: MuraIndex | DatasetIndex, *, sizes: bool = True, progress: bool = True) -> dict[str, Any]:
    """JSON-able summary of ``index``; ``sizes=True`` reads every header (no decoding) for size statistics."""
    table = index.table
    problems = list(index.problems)
    boxes = getattr(index, "boxes", None)
    summary: dict[str, Any] = {
        "root": str(index.root),
        "format": getattr(index, "format", "mura"),
        "source": index.source,
        "boxes": _box_counts(table, boxes) if boxes is not None else None,
        "notes": list(getattr(index, "notes", [])),
        "splits": {split: _counts(group, by_part=True) for split, group in table.groupby("split", sort=True)},
        "total": _counts(table, by_part=False),
        "image_size": _size_stats(table, problems, progress) if sizes else None,
    }
    summary["problems"] = [p.to_dict() for p in problems]
    summary["problem_counts"] = problem_counts(problems)
    return summary


def _counts(rows: pd.DataFrame, *, by_part: bool) -> dict[str, Any]:
    studies = rows.drop_duplicates("study_id")
    counts: dict[str, Any] = {
        "images": len(rows),
        "studies": len(studies),
        "patients": int(rows["patient_id"].nunique()),
        "abnormal_studies": int(studies["label"].sum()),
        "normal_studies": int((studies["label"] == 0).sum()),
        "abnormal_images": int(rows["label"].sum()),
    }
    if by_part:
        counts["by_body_part"] = {
            part: _counts(group, by_part=False)
            for part, group in rows.groupby("body_part", sort=False)
            if len(group)
        }
        counts["by_body_part"] = {p: counts["by_body_part"][p] for p in _part_order(counts["by_body_part"])}
    return counts


def _box_counts(table: pd.DataFrame, boxes: dict[str, list]) -> dict[str, Any]:
    """Boxes of the indexed images: how many images carry any, and the count per kind."""
    mine = [b for path in table["path"] for b in boxes.get(path, [])]
    kinds = pd.Series([b.kind for b in mine], dtype=object).value_counts().sort_index()
    return {"images_with_boxes": int(table["path"].isin(boxes.keys()).sum()), "boxes": len(mine),
            "by_kind": {str(k): int(v) for k, v in kinds.items()}}


def _part_order(parts: dict[str, Any]) -> list[str]:
    return [p for p in BODY_PARTS if p in parts] + sorted(set(parts) - set(BODY_PARTS))


def _size_stats(table: pd.DataFrame, problems: list[Problem], progress: bool) -> dict[str, Any] | None:
    """Min/median/max height and width over all images, from headers; unreadable headers become problems."""
    from tqdm.auto import tqdm

    heights, widths = [], []
    for path, file in tqdm(
        zip(table["path"], table["file"], strict=True),
        total=len(table),
        desc="reading image headers",
        unit="img",
        disable=not progress,
    ):
        try:
            height, width = image_size(file)
        except ImageReadError as exc:
            problems.append(Problem(path, "unreadable", str(exc)))
            continue
        heights.append(height)
        widths.append(width)
    if not heights:
        return None
    return {"images": len(heights), "height": _stats(heights), "width": _stats(widths)}


def _stats(values: list[int]) -> dict[str, float]:
    array = np.asarray(values)
    return {"min": int(array.min()), "median": float(np.median(array)), "max": int(array.max())}


# ---------------------------------------------------------------- text


def format_summary(summary: dict[str, Any], max_problems: int = 10) -> str:
    """A table for humans: one line per split and body part, then sizes and the first problems."""
    header = f"{'split':<6} {'body part':<12} {'images':>7} {'studies':>8} {'patients':>9} {'abnormal studies':>17}"
    name = FORMAT_NAMES.get(summary.get("format", "mura"), "dataset")
    lines = [f"{name} at {summary['root']} (from {summary['source']})", "", header, "-" * len(header)]
    for split, counts in summary["splits"].items():
        for part, part_counts in counts["by_body_part"].items():
            lines.append(_row(split, part, part_counts))
        lines.append(_row(split, "all", counts))
        lines.append("")
    if len(summary["splits"]) > 1:
        lines += [_row("total", "", summary["total"]), ""]
    lines.append(_size_line(summary.get("image_size")))
    if summary.get("boxes"):
        b = summary["boxes"]
        kinds = ", ".join(f"{kind} {n}" for kind, n in b["by_kind"].items()) or "none"
        lines.append(f"boxes: {b['boxes']} on {b['images_with_boxes']} images ({kinds})")
    lines += [f"note: {note}" for note in summary.get("notes", [])]
    lines += _problem_lines(summary, max_problems)
    return "\n".join(lines)


def _row(split: str, part: str, counts: dict[str, Any]) -> str:
    studies = counts["studies"]
    share = (
        f"{counts['abnormal_studies']} ({100 * counts['abnormal_studies'] / studies:.0f}%)"
        if studies
        else "0"
    )
    return (
        f"{split:<6} {part:<12} {counts['images']:>7} {studies:>8} {counts['patients']:>9} {share:>17}"
    ).rstrip()


def _size_line(sizes: dict[str, Any] | None) -> str:
    if not sizes:
        return "image size: not measured (no images, or --no-sizes)"
    h, w = sizes["height"], sizes["width"]
    return (
        f"image size (height x width) over {sizes['images']} images: min {h['min']}x{w['min']}, "
        f"median {h['median']:g}x{w['median']:g}, max {h['max']}x{w['max']}"
    )


def _problem_lines(summary: dict[str, Any], max_problems: int) -> list[str]:
    problems = summary["problems"]
    if not problems:
        return ["problems: none"]
    counts = ", ".join(f"{kind} {n}" for kind, n in summary["problem_counts"].items())
    lines = [f"problems: {len(problems)} skipped ({counts})"]
    lines += [f"  {p['kind']:<16} {p['path']}: {p['detail']}" for p in problems[:max_problems]]
    if len(problems) > max_problems:
        lines.append(f"  ... and {len(problems) - max_problems} more (use --json for the full list)")
    return lines
