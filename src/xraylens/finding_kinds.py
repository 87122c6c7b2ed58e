"""Metrics per finding kind (fracture, hardware, lesion, ...): which abnormalities the model finds.

One AUROC over every abnormal study can hide a kind of finding the model
misses, as long as the other kinds are common. A box table
(``path,x0,y0,x1,y1,kind``, as the synthetic dataset writes it to
``ROOT/boxes.csv``; only ``path`` and ``kind`` are read here) says which kinds
each abnormal image shows, so each kind can be scored on its own. FracAtlas
and GRAZPEDWRI-DX bring their own boxes (:func:`kinds_from_boxes`).

Who counts, for kind K:

* **studies**: positives are the abnormal studies with at least one box of
  kind K on any of their images; negatives are *all* normal studies; abnormal
  studies without K are left out (they are neither evidence for nor against
  finding K). A study's kinds come from the box table itself, so a box on an
  unreadable image still marks its study; the study's probability is, as
  everywhere, the mean of its readable views.
* **images**: an abnormal image with boxes is a positive of its own boxes'
  kinds only. An abnormal image with no box at all (a view in which the finding
  is hidden, or simply not marked) is a positive of every kind of its study:
  the label is per study, and that view is part of the evidence the study
  probability averages, so leaving it out would score an easier task than the
  study level does. Negatives are all images of normal studies.

Labels win over boxes: a normal study that carries a box is still a negative.
Each kind is bootstrapped on its own studies with its own seed stream, using
:func:`xraylens.metrics.metric_section`, so the numbers and intervals mean
exactly what the overall and per-body-part ones do.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from xraylens.data.boxes import TrueBox, find_box_table, read_box_csv
from xraylens.data.mura_layout import IMAGE_EXAMPLE, parse_image_path
from xraylens.data.problems import DataError
from xraylens.metrics import metric_section, study_level

KIND_COLUMNS = ("path", "kind")  # the columns of a box table that kinds need


@dataclass(frozen=True)
class FindingKinds:
    """Kinds per image path and per study, read from one box table."""

    source: Path
    by_image: dict[str, frozenset[str]]  # MURA-relative image path -> kinds of its boxes
    by_study: dict[str, frozenset[str]]  # study_id ("valid/XR_WRIST/patient00012/study1") -> union of its images'

    def image_kinds(self, path: str, study_id: str) -> frozenset[str]:
        """An image's own box kinds, or its study's when it has no box (see the module docstring)."""
        own = self.by_image.get(path)
        return own if own else self.by_study.get(study_id, frozenset())


def read_finding_kinds(path: str | Path) -> FindingKinds:
    """Read a box table; DataError naming the file and line when it is missing or malformed."""
    path = Path(path)
    table = read_box_csv(path, KIND_COLUMNS)
    by_image: dict[str, set[str]] = {}
    by_study: dict[str, set[str]] = {}
    for line, (image, kind) in enumerate(zip(table["path"], table["kind"], strict=True), start=2):
        image, kind = image.strip(), kind.strip()
        ref = parse_image_path(image)
        if ref is None:
            raise DataError(f"{path} line {line}: path {image!r} is not a MURA-relative image path "
                            f"such as {IMAGE_EXAMPLE}")
        if not kind:
            raise DataError(f"{path} line {line}: empty kind for {image}; name the finding (fracture, ...)")
        by_image.setdefault(image, set()).add(kind)
        by_study.setdefault(ref.study_id, set()).add(kind)
    return FindingKinds(path, {k: frozenset(v) for k, v in by_image.items()},
                        {k: frozenset(v) for k, v in by_study.items()})


def kinds_from_boxes(boxes: dict[str, list[TrueBox]], table: pd.DataFrame, source: str | Path) -> FindingKinds:
    """Kinds from a dataset's own boxes (FracAtlas, GRAZPEDWRI-DX): studies come from the index ``table``.

    Their paths are not MURA paths, so a box's study is looked up in the
    table (columns ``path``, ``study_id``); boxes of images outside it are ignored.
    """
    study_of = dict(zip(table["path"].astype(str), table["study_id"].astype(str), strict=True))
    by_image: dict[str, set[str]] = {}
    by_study: dict[str, set[str]] = {}
    for path, found in boxes.items():
        if path in study_of and found:
            kinds = {b.kind for b in found}
            by_image.setdefault(path, set()).update(kinds)
            by_study.setdefault(study_of[path], set()).update(kinds)
    return FindingKinds(Path(source), {k: frozenset(v) for k, v in by_image.items()},
                        {k: frozenset(v) for k, v in by_study.items()})


def per_kind_metrics(
    images: pd.DataFrame,
    kinds: FindingKinds,
    threshold: float,
    *,
    n_boot: int = 1000,
    seed: int = 0,
) -> dict[str, dict[str, Any]]:
    """``{kind: {n_positive_studies, n_negative_studies, n_positive_images, n_negative_images, study, image}}``.

    ``images`` holds the readable images (``path``, ``study_id``, ``label``,
    ``probability``); ``study`` and ``image`` are
    :func:`~xraylens.metrics.metric_section` dicts. Kinds are those carried by
    at least one abnormal study of ``images``, sorted; none gives ``{}``.
    """
    y = images["label"].to_numpy().astype(np.int64)
    probs = images["probability"].to_numpy(dtype=np.float64)
    study_ids = images["study_id"].astype(str).to_numpy(dtype=object)
    paths = images["path"].astype(str).tolist()
    empty: frozenset[str] = frozenset()
    study_kinds = [kinds.by_study.get(s, empty) if label else empty for s, label in zip(study_ids, y, strict=True)]
    image_kinds = [kinds.image_kinds(p, s) if label else empty for p, s, label in zip(paths, study_ids, y, strict=True)]
    normal = y == 0
    out: dict[str, dict[str, Any]] = {}
    for kind in sorted(set().union(*study_kinds)):
        stream = (seed, zlib.crc32(f"kind/{kind}".encode()))  # its own stream: unchanged when other kinds go
        in_study = normal | np.array([kind in k for k in study_kinds], dtype=bool)
        in_image = normal | np.array([kind in k for k in image_kinds], dtype=bool)
        _, study_probs, study_y, _ = study_level(study_ids[in_study], probs[in_study], y[in_study])
        _, _, _, codes = study_level(study_ids[in_image], probs[in_image], y[in_image])
        study = metric_section(study_y, study_probs, threshold, n_boot=n_boot, seed=stream)
        image = metric_section(y[in_image], probs[in_image], threshold, groups=codes, n_boot=n_boot, seed=stream)
        image["n_studies"] = int(codes.max()) + 1 if len(codes) else 0
        out[kind] = {
            "n_positive_studies": int(np.sum(study_y == 1)), "n_negative_studies": int(np.sum(study_y == 0)),
            "n_positive_images": int(np.sum(y[in_image] == 1)), "n_negative_images": int(np.sum(y[in_image] == 0)),
            "study": study, "image": image,
        }
    return out


__all__ = ["FindingKinds", "find_box_table", "kinds_from_boxes", "per_kind_metrics", "read_finding_kinds"]
