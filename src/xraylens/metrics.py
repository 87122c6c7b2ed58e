"""Image- and study-level metrics, per body part, with study-resampled bootstrap confidence intervals.

MURA scores studies, not images: a study's probability is the mean of its
views' probabilities (as in the MURA paper) and Cohen's kappa on studies is
the official metric. Every report here gives both levels.

Confidence intervals are a percentile bootstrap that resamples *studies* with
replacement, at both levels: the views of one study are correlated, so
resampling images would pretend there is more independent evidence than there
is and give intervals that are too narrow. (The official MURA evaluation
script is no guide here: its "confidence interval" puts a variance where a
standard error belongs.) A bootstrap sample that holds one class only has no
defined AUROC (or sensitivity, ...); such samples give NaN and are left out of
the percentiles; a metric with no defined value at all is NaN (``null`` in JSON).

Speed: one resample is a row of per-study counts, so ``B`` resamples are a
``(B, n)`` weight matrix, and every metric is a weighted sum over columns:
confusion counts are matrix products, AUROC is a weighted rank statistic over
tie blocks. No Python loop over resamples.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Sequence
from typing import Any

import numpy as np

METRIC_NAMES: tuple[str, ...] = ("auroc", "kappa", "accuracy", "sensitivity", "specificity", "f1")
_CHUNK_ELEMENTS = 4_000_000  # weights per bootstrap chunk (32 MB of float64): bounds memory on big splits


# ---------------------------------------------------------------- study aggregation


def study_level(
    study_ids: Sequence[Any] | np.ndarray, probabilities: np.ndarray, labels: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Average the views of each study.

    Returns ``(study_keys, study_probabilities, study_labels, codes)``: studies
    in order of first appearance, and for every image the position of its study
    (``study_keys[codes[i]]`` is image ``i``'s study). An image label that
    differs from its study's is an error: labels are per study in MURA.
    """
    ids = np.asarray(study_ids, dtype=object)
    probs = np.asarray(probabilities, dtype=np.float64)
    y = np.asarray(labels)
    if not (len(ids) == len(probs) == len(y)):
        raise ValueError(f"study_ids, probabilities and labels differ in length: {len(ids)}, {len(probs)}, {len(y)}")
    keys, first, codes = np.unique(ids, return_index=True, return_inverse=True)
    order = np.argsort(first, kind="stable")  # first-appearance order, not sorted order
    rank = np.empty_like(order)
    rank[order] = np.arange(len(order))
    codes = rank[codes.reshape(-1)]
    n_views = np.bincount(codes, minlength=len(keys))
    study_probs = np.bincount(codes, weights=probs, minlength=len(keys)) / np.maximum(n_views, 1)
    study_labels = y[first[order]]
    if np.any(study_labels[codes] != y):
        bad = ids[study_labels[codes] != y][0]
        raise ValueError(f"study {bad!r} has images with different labels; MURA labels are per study")
    return keys[order], study_probs, study_labels.astype(np.int64), codes


# ---------------------------------------------------------------- point metrics


def auroc(labels: np.ndarray, scores: np.ndarray) -> float:
    """Area under the ROC curve (ties count one half); NaN when only one class is present."""
    y, s = _check(labels, scores)
    return float(_weighted_metrics(y, s, 0.5, np.ones((1, len(y))))["auroc"][0])


def cohen_kappa(labels: np.ndarray, predictions: np.ndarray) -> float:
    """Cohen's kappa between truth and 0/1 predictions; NaN when chance agreement is already perfect."""
    y, p = _check(labels, predictions)
    return float(_weighted_metrics(y, p, 0.5, np.ones((1, len(y))))["kappa"][0])


def binary_metrics(labels: np.ndarray, probabilities: np.ndarray, threshold: float = 0.5) -> dict[str, float]:
    """AUROC and the threshold metrics (predict abnormal when probability >= threshold), one level."""
    y, s = _check(labels, probabilities)
    values = _weighted_metrics(y, s, threshold, np.ones((1, len(y))))
    return {name: float(values[name][0]) for name in METRIC_NAMES}


def bootstrap_ci(
    labels: np.ndarray,
    probabilities: np.ndarray,
    threshold: float = 0.5,
    *,
    groups: np.ndarray | None = None,
    n_boot: int = 1000,
    seed: int | Sequence[int] = 0,
    level: float = 0.95,
) -> dict[str, tuple[float, float]]:
    """Percentile bootstrap intervals for every metric, resampling ``groups`` (studies) with replacement.

    ``groups[i]`` is the cluster (study) of item ``i`` as integer codes
    ``0..S-1``; ``None`` makes every item its own cluster. Resamples depend only
    on ``seed`` and the number of clusters, so study-level and image-level
    intervals computed with the same seed use the very same study resamples.
    """
    y, s = _check(labels, probabilities)
    codes = np.arange(len(y)) if groups is None else np.asarray(groups, dtype=np.int64)
    if len(codes) != len(y):
        raise ValueError(f"groups has {len(codes)} entries for {len(y)} items")
    if n_boot < 1 or len(y) == 0:
        return {name: (math.nan, math.nan) for name in METRIC_NAMES}
    n_groups = int(codes.max()) + 1
    rng = np.random.default_rng(seed)
    chunk = max(1, _CHUNK_ELEMENTS // max(len(y), n_groups))
    samples: dict[str, list[np.ndarray]] = {name: [] for name in METRIC_NAMES}
    for start in range(0, n_boot, chunk):
        rows = min(chunk, n_boot - start)
        picks = rng.integers(0, n_groups, size=(rows, n_groups))  # (B, S) resampled cluster ids
        offsets = (picks + n_groups * np.arange(rows)[:, None]).ravel()
        counts = np.bincount(offsets, minlength=rows * n_groups).reshape(rows, n_groups)
        for name, values in _weighted_metrics(y, s, threshold, counts[:, codes].astype(np.float64)).items():
            samples[name].append(values)
    tail = 100 * (1 - level) / 2
    intervals = {}
    for name in METRIC_NAMES:
        values = np.concatenate(samples[name])
        values = values[~np.isnan(values)]
        lo, hi = np.percentile(values, [tail, 100 - tail]) if len(values) else (math.nan, math.nan)
        intervals[name] = (float(lo), float(hi))
    return intervals


# ---------------------------------------------------------------- full report


def evaluation_metrics(
    labels: np.ndarray,
    probabilities: np.ndarray,
    study_ids: Sequence[Any] | np.ndarray,
    body_parts: Sequence[str] | np.ndarray,
    threshold: float = 0.5,
    *,
    n_boot: int = 1000,
    seed: int = 0,
) -> dict[str, Any]:
    """Image-level and study-level metrics with CIs, overall and per body part (image-level inputs).

    Returns ``{"image": section, "study": section}``; a section holds every
    metric in :data:`METRIC_NAMES`, ``ci95`` ``{metric: [lo, hi]}``, ``n`` (images
    or studies), ``n_studies``, ``n_abnormal`` and ``by_body_part`` ``{XR_PART:
    the same without by_body_part}``. Each body part is bootstrapped on its own
    studies (fixed size, its own seed stream), so its interval reflects its own n.
    Image- and study-level intervals of a group use the same study resamples.
    """
    probs = np.asarray(probabilities, dtype=np.float64)
    y = np.asarray(labels)
    parts = np.asarray(body_parts, dtype=object)
    if len(parts) != len(y):
        raise ValueError(f"body_parts has {len(parts)} entries for {len(y)} images")
    report: dict[str, Any] = {"image": {}, "study": {}}
    groups = [("all", np.ones(len(y), dtype=bool))]
    groups += [(str(part), parts == part) for part in sorted(set(parts.tolist()))]
    ids = np.asarray(study_ids, dtype=object)
    for name, mask in groups:
        # Seed stream per group name: a body part's interval does not change when others are filtered out.
        stream = (seed, zlib.crc32(name.encode()))
        sections = _both_levels(y[mask], probs[mask], ids[mask], threshold, n_boot, stream)
        for level in ("image", "study"):
            if name == "all":
                report[level] = {**sections[level], "by_body_part": {}}
            else:
                report[level]["by_body_part"][name] = sections[level]
    return report


def metric_section(
    labels: np.ndarray,
    probabilities: np.ndarray,
    threshold: float = 0.5,
    *,
    groups: np.ndarray | None = None,
    n_boot: int = 1000,
    seed: int | Sequence[int] = 0,
) -> dict[str, Any]:
    """One level of one group, as reports store it: every metric, ``ci95`` ``{metric: [lo, hi]}``, ``n``, ``n_abnormal``.

    Public so that other groupings (per finding kind, ...) report exactly the
    numbers, intervals and counts that the overall and per-body-part sections do.
    """
    y = np.asarray(labels)
    section: dict[str, Any] = binary_metrics(y, probabilities, threshold)
    ci = bootstrap_ci(y, probabilities, threshold, groups=groups, n_boot=n_boot, seed=seed)
    section["ci95"] = {name: [lo, hi] for name, (lo, hi) in ci.items()}
    section.update(n=int(len(y)), n_abnormal=int(np.sum(y == 1)))
    return section


def _both_levels(
    y: np.ndarray, probs: np.ndarray, study_ids: np.ndarray, threshold: float, n_boot: int, seed: tuple[int, int]
) -> dict[str, dict[str, Any]]:
    _, study_probs, study_y, codes = study_level(study_ids, probs, y)
    out = {}
    for level, (yy, pp, groups) in {"image": (y, probs, codes), "study": (study_y, study_probs, None)}.items():
        out[level] = metric_section(yy, pp, threshold, groups=groups, n_boot=n_boot, seed=seed)
        out[level]["n_studies"] = len(study_y)
    return out


def to_jsonable(obj: Any) -> Any:
    """Nested metrics with NaN/inf turned into None (JSON ``null``) and numpy scalars into Python ones."""
    if isinstance(obj, dict):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [to_jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return to_jsonable(obj.tolist())
    if isinstance(obj, np.generic):
        obj = obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


# ---------------------------------------------------------------- the vectorised core


def _check(labels: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    y = np.asarray(labels)
    s = np.asarray(scores, dtype=np.float64)
    if y.shape != s.shape or y.ndim != 1:
        raise ValueError(f"labels and scores must be 1-D of equal length, got {y.shape} and {s.shape}")
    if not np.isin(y, (0, 1)).all():
        raise ValueError("labels must be 0 (normal) or 1 (abnormal)")
    if np.isnan(s).any():
        raise ValueError("scores contain NaN; drop unreadable images before computing metrics")
    return y.astype(np.float64), s


def _weighted_metrics(y: np.ndarray, s: np.ndarray, threshold: float, w: np.ndarray) -> dict[str, np.ndarray]:
    """Every metric for each row of weights ``w`` (B, n): row b counts item i ``w[b, i]`` times."""
    pred = (s >= threshold).astype(np.float64)
    tp = w @ (y * pred)
    fp = w @ ((1 - y) * pred)
    fn = w @ (y * (1 - pred))
    tn = w @ ((1 - y) * (1 - pred))
    n = tp + fp + fn + tn
    with np.errstate(divide="ignore", invalid="ignore"):
        observed = (tp + tn) / n
        chance = ((tp + fp) * (tp + fn) + (tn + fn) * (tn + fp)) / n**2
        values = {
            "auroc": _weighted_auroc(y, s, w),
            "kappa": np.where(chance < 1, (observed - chance) / (1 - chance), np.nan),
            "accuracy": observed,
            "sensitivity": tp / (tp + fn),
            "specificity": tn / (tn + fp),
            "f1": 2 * tp / (2 * tp + fp + fn),
        }
    return {name: np.where(np.isfinite(v), v, np.nan) for name, v in values.items()}


def _weighted_auroc(y: np.ndarray, s: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Mann-Whitney AUROC per weight row: P(score_pos > score_neg) + 1/2 P(tie)."""
    if len(y) == 0:
        return np.full(len(w), np.nan)
    order = np.argsort(s, kind="stable")
    sorted_s = s[order]
    starts = np.flatnonzero(np.r_[True, sorted_s[1:] != sorted_s[:-1]])  # tie blocks, ascending score
    ws = w[:, order]
    pos = np.add.reduceat(ws * y[order], starts, axis=1)  # (B, K) positive weight per tie block
    neg = np.add.reduceat(ws * (1 - y[order]), starts, axis=1)
    below = np.cumsum(neg, axis=1) - neg  # negative weight strictly below each block
    with np.errstate(divide="ignore", invalid="ignore"):
        area = (pos * (below + 0.5 * neg)).sum(axis=1) / (pos.sum(axis=1) * neg.sum(axis=1))
    return area
