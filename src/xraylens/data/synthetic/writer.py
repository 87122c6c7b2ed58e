"""Write the synthetic dataset to disk in the MURA v1.1 layout, plus boxes and a manifest.

Rerun policy (rule 9, reruns never lose results silently):

* ``OUT`` missing or empty: written from scratch.
* ``OUT`` written earlier by this generator with the same seed, patient count,
  size, difficulty, finding kinds and generator version: written again in place; every file comes out
  byte-identical, so nothing is lost (this also finishes an interrupted run).
* anything else in ``OUT`` (other files, or an earlier synthetic dataset with
  other settings): refused with :class:`FileExistsError`; nothing is touched.

Every file is written atomically; the manifest goes last and so doubles as a
"this folder is complete" marker.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from xraylens.atomic import atomic_write_bytes, atomic_write_json, atomic_write_text
from xraylens.config import BODY_PARTS
from xraylens.data.boxes import BOX_COLUMNS
from xraylens.data.synthetic.acquisition import encode
from xraylens.data.synthetic.findings import DIFFICULTIES, KINDS, check_kinds
from xraylens.data.synthetic.plan import MURA_DIR, StudyPlan, make_plan
from xraylens.data.synthetic.render import render_study

GENERATOR = "xraylens.synthetic"
# 1.1: more conspicuous `easy` findings; 1.2: `easy` lesions focal, not wider than the bone (realistic unchanged)
GENERATOR_VERSION = "1.2"
_PENDING = ".synth_pending.json"  # written first: marks OUT as ours while a run is in progress
# What a macOS "._*" AppleDouble file starts with; a few bytes, not a PNG.
_APPLEDOUBLE = b"\x00\x05\x16\x07\x00\x02\x00\x00Mac OS X        \x00\x02"


@dataclass(frozen=True)
class SynthResult:
    root: Path  # OUT: the folder that contains MURA-v1.1
    manifest: dict
    boxes: pd.DataFrame  # columns path, x0, y0, x1, y1 (x1, y1 exclusive), kind


def generate(
    out: str | Path,
    *,
    patients: int = 300,
    max_side: int = 512,
    seed: int = 0,
    workers: int = 1,
    progress: bool = True,
    difficulty: str = "realistic",
    findings: tuple[str, ...] | list[str] = KINDS,
) -> SynthResult:
    """Write ``OUT/MURA-v1.1`` (images + official-style CSVs), ``OUT/boxes.csv`` and ``OUT/synth_manifest.json``.

    The same arguments always give byte-identical files, whatever ``workers`` is.

    ``difficulty``: ``"realistic"`` (default) draws findings as subtle as real
    ones (hairline fractures 1-2.5 px wide at 512 px, some views not showing
    the finding); from-scratch models do not learn them, ImageNet transfer at
    native resolution does with thousands of images (README, "What learns").
    ``"easy"`` makes the same findings obvious (wide, deep, displaced
    fractures; larger lesions; thicker hardware; every view of an abnormal
    study shows its finding). Only the findings change: normal studies,
    anatomy, acquisition and look-alikes are byte-identical between the two,
    so there is no label shortcut, and boxes stay tight around what was drawn.

    ``findings`` restricts the kinds drawn in abnormal studies (``fracture``,
    ``hardware``, ``lesion``). Measured (README, "What learns"): from random
    weights on a CPU only hardware is learned in minutes, which is why the
    demo draws hardware alone; fractures and lesions need ImageNet weights
    or far more training.
    """
    findings = check_kinds(findings)
    if difficulty not in DIFFICULTIES:
        raise ValueError(f"difficulty must be one of {', '.join(DIFFICULTIES)}; got {difficulty!r}")
    if max_side < 64:
        raise ValueError(
            f"max_side must be at least 64 px (got {max_side}); anatomy is unreadable below that"
        )
    if workers < 1:
        raise ValueError(f"workers must be at least 1, got {workers}")
    root = Path(out)
    settings = _settings(patients, max_side, seed, difficulty, findings)
    plan = make_plan(patients, seed)
    _claim(root, settings)
    rows: list[tuple] = []
    stats: dict[str, int] = {"rgb": 0, "gray16": 0}
    for study, views in _tqdm(
        _render_all(root, plan, seed, max_side, workers, difficulty, findings), len(plan), progress
    ):
        for view, (boxes, storage) in enumerate(views):
            stats[storage] = stats.get(storage, 0) + 1
            rows += [(study.image_path(view), *box) for box in boxes]
    _write_csvs(root, plan)
    boxes = pd.DataFrame(rows, columns=list(BOX_COLUMNS))
    atomic_write_text(root / "boxes.csv", boxes.to_csv(index=False, lineterminator="\n"))
    manifest = {
        **settings,
        **_counts(plan),
        "boxes": len(boxes),
        "boxes_by_kind": {k: int(v) for k, v in boxes["kind"].value_counts().sort_index().items()},
        "storage": {"rgb": stats.get("rgb", 0), "gray16": stats.get("gray16", 0)},
        "boxes_format": {
            "columns": list(BOX_COLUMNS),
            "coordinates": "pixels of the written image; x1, y1 exclusive",
        },
    }
    atomic_write_json(root / "synth_manifest.json", manifest)
    (root / _PENDING).unlink(missing_ok=True)
    return SynthResult(root, manifest, boxes)


def is_finished(
    out: str | Path, *, patients: int = 300, max_side: int = 512, seed: int = 0,
    difficulty: str = "realistic", findings: tuple[str, ...] | list[str] = KINDS,
) -> bool:
    """True when ``out`` holds a complete dataset that ``generate`` with these arguments would write.

    The manifest is written last, so its presence means every image is there.
    """
    manifest = Path(out) / "synth_manifest.json"
    return manifest.is_file() and _read_settings(manifest) == _settings(
        patients, max_side, seed, difficulty, check_kinds(findings))


def _settings(patients: int, max_side: int, seed: int, difficulty: str, findings: tuple[str, ...]) -> dict:
    """What makes two datasets the same: equal settings give byte-identical files."""
    return {
        "generator": GENERATOR,
        "generator_version": GENERATOR_VERSION,
        "seed": int(seed),
        "patients": int(patients),
        "max_side": int(max_side),
        "difficulty": difficulty,
        "findings": list(findings),
    }


def _claim(root: Path, settings: dict) -> None:
    """Refuse a folder holding anything but an earlier run with the same settings; then mark it as ours."""
    if root.exists() and not root.is_dir():
        raise FileExistsError(f"{root} is a file; give a folder to write the synthetic dataset into")
    entries = {p.name for p in root.iterdir()} if root.exists() else set()
    if entries:
        mine = {MURA_DIR, "boxes.csv", "synth_manifest.json", _PENDING}
        marker = root / ("synth_manifest.json" if "synth_manifest.json" in entries else _PENDING)
        earlier = _read_settings(marker) if marker.exists() else None
        if entries - mine or earlier is None:
            raise FileExistsError(
                f"{root} is not empty and was not written by the synthetic generator "
                f"(found {', '.join(sorted(entries)[:5])}); choose an empty or new folder"
            )
        if earlier != settings:
            changed = ", ".join(
                f"{k} {earlier.get(k)} -> {v}" for k, v in settings.items() if earlier.get(k) != v
            )
            raise FileExistsError(
                f"{root} holds a synthetic dataset made with other settings ({changed}); "
                "writing over it would mix the two. Delete the folder or choose another one"
            )
    atomic_write_json(root / _PENDING, settings)


def _read_settings(path: Path) -> dict | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    keys = ("generator", "generator_version", "seed", "patients", "max_side", "difficulty", "findings")
    if not isinstance(data, dict) or data.get("generator") != GENERATOR:
        return None
    # manifests written before a setting existed had its default (and are byte-identical to it now)
    defaults = {"difficulty": "realistic", "findings": list(KINDS)}
    return {k: data.get(k, defaults.get(k)) for k in keys}


def _render_all(
    root: Path, plan: list[StudyPlan], seed: int, max_side: int, workers: int, difficulty: str,
    findings: tuple[str, ...],
) -> Iterator:
    jobs = [(str(root), study, seed, max_side, difficulty, findings) for study in plan]
    if workers == 1:
        for job in jobs:
            yield job[1], _write_study(job)
        return
    with ProcessPoolExecutor(max_workers=workers) as pool:
        for job, result in zip(jobs, pool.map(_write_study, jobs, chunksize=4), strict=True):
            yield job[1], result


def _write_study(job: tuple[str, StudyPlan, int, int, str, tuple[str, ...]]) -> list[tuple[list, str]]:
    """Render and write one study's images (and its junk file); returns per view (boxes, storage)."""
    root, study, seed, max_side, difficulty, findings = job
    views, _ = render_study(seed, study, max_side, difficulty=difficulty, kinds=findings)
    out = []
    for k, view in enumerate(views):
        atomic_write_bytes(Path(root) / study.image_path(k), encode(view.image, view.storage))
        out.append((view.boxes, view.storage))
    for j in study.junk:
        atomic_write_bytes(Path(root) / f"{study.folder}._image{j}.png", _APPLEDOUBLE)
    return out


def _write_csvs(root: Path, plan: list[StudyPlan]) -> None:
    for split in ("train", "valid"):
        studies = [s for s in plan if s.split == split]
        images = "".join(s.image_path(v) + "\n" for s in studies for v in range(s.views))
        labels = "".join(f"{s.folder},{s.label}\n" for s in studies)
        atomic_write_text(root / MURA_DIR / f"{split}_image_paths.csv", images)
        atomic_write_text(root / MURA_DIR / f"{split}_labeled_studies.csv", labels)


def _counts(plan: list[StudyPlan]) -> dict:
    def tally(studies: list[StudyPlan]) -> dict[str, int]:
        return {
            "images": sum(s.views for s in studies),
            "studies": len(studies),
            "patients": len({s.patient for s in studies}),
            "abnormal_studies": sum(s.label for s in studies),
        }

    splits = {}
    for split in ("train", "valid"):
        mine = [s for s in plan if s.split == split]
        splits[split] = {
            **tally(mine),
            "body_parts": {p: tally([s for s in mine if s.part == p]) for p in BODY_PARTS},
        }
    total = tally(plan)
    return {
        "images": total["images"],
        "studies": total["studies"],
        "abnormal_studies": total["abnormal_studies"],
        "junk_files": sum(len(s.junk) for s in plan),
        "splits": splits,
    }


def _tqdm(items: Iterator, total: int, progress: bool) -> Iterator:
    if not progress:
        return items
    from tqdm import tqdm

    return tqdm(items, total=total, desc="synthetic studies", unit="study")
