"""Calibration and the decision threshold: how far probabilities can be trusted, and where to cut them.

Everything here is fitted on the *validation* subset carved from ``train``
(never on the test split it is then applied to), so the reported test numbers
stay honest.

* Expected calibration error compares, in equal-width bins of P(abnormal), the
  mean predicted probability with the observed fraction of abnormal cases
  (the reliability diagram of a binary classifier).
* Temperature scaling divides the logit by one scalar ``T`` fitted by
  minimising the negative log-likelihood. It changes confidence, never the
  ranking, so AUROC is untouched; ``T > 1`` softens an overconfident network.
* Threshold choice maximises Youden's J (sensitivity + specificity - 1) or
  Cohen's kappa; the cut is placed halfway between the chosen score and the
  next lower one, so it does not sit exactly on a validation case.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

THRESHOLD_METHODS: tuple[str, ...] = ("youden", "kappa")
_EPS = 1e-12


@dataclass(frozen=True)
class ReliabilityCurve:
    """Per equal-width bin of P(abnormal): how many cases, mean prediction, observed abnormal fraction."""

    edges: np.ndarray  # (n_bins + 1,)
    counts: np.ndarray  # (n_bins,)
    mean_probability: np.ndarray  # (n_bins,), NaN in empty bins
    fraction_positive: np.ndarray  # (n_bins,), NaN in empty bins

    @property
    def ece(self) -> float:
        total = self.counts.sum()
        if total == 0:
            return float("nan")
        filled = self.counts > 0
        gaps = np.abs(self.mean_probability[filled] - self.fraction_positive[filled])
        return float((self.counts[filled] * gaps).sum() / total)

    def to_dict(self) -> dict[str, Any]:
        return {
            "edges": self.edges.tolist(),
            "counts": self.counts.tolist(),
            "mean_probability": self.mean_probability.tolist(),
            "fraction_positive": self.fraction_positive.tolist(),
            "ece": self.ece,
        }


def reliability_curve(labels: np.ndarray, probabilities: np.ndarray, n_bins: int = 10) -> ReliabilityCurve:
    """Bin P(abnormal) into ``n_bins`` equal-width bins on [0, 1] (1.0 falls in the last bin)."""
    y = np.asarray(labels, dtype=np.float64)
    p = np.asarray(probabilities, dtype=np.float64)
    if y.shape != p.shape:
        raise ValueError(f"labels and probabilities differ in shape: {y.shape} vs {p.shape}")
    bins = np.clip((p * n_bins).astype(np.int64), 0, n_bins - 1)
    counts = np.bincount(bins, minlength=n_bins)
    with np.errstate(divide="ignore", invalid="ignore"):
        mean_p = np.bincount(bins, weights=p, minlength=n_bins) / counts
        frac = np.bincount(bins, weights=y, minlength=n_bins) / counts
    return ReliabilityCurve(np.linspace(0.0, 1.0, n_bins + 1), counts, mean_p, frac)


def expected_calibration_error(labels: np.ndarray, probabilities: np.ndarray, n_bins: int = 10) -> float:
    """Count-weighted mean |mean prediction - observed fraction| over equal-width bins; NaN when empty."""
    return reliability_curve(labels, probabilities, n_bins).ece


# ---------------------------------------------------------------- temperature scaling


def logit(probabilities: np.ndarray) -> np.ndarray:
    p = np.clip(np.asarray(probabilities, dtype=np.float64), _EPS, 1 - _EPS)
    return np.log(p) - np.log1p(-p)


def sigmoid(logits: np.ndarray) -> np.ndarray:
    z = np.asarray(logits, dtype=np.float64)
    return np.exp(-np.logaddexp(0.0, -z))


def binary_nll(logits: np.ndarray, labels: np.ndarray, temperature: float = 1.0) -> float:
    """Mean binary cross-entropy of ``sigmoid(logits / temperature)``, computed stably in logit space."""
    z = np.asarray(logits, dtype=np.float64) / temperature
    y = np.asarray(labels, dtype=np.float64)
    return float(np.mean(np.logaddexp(0.0, z) - y * z))


def fit_temperature(logits: np.ndarray, labels: np.ndarray, bounds: tuple[float, float] = (0.05, 20.0)) -> float:
    """The ``T`` in ``bounds`` minimising validation NLL; searched over log T, where the NLL is well shaped."""
    from scipy.optimize import minimize_scalar

    z = np.asarray(logits, dtype=np.float64)
    y = np.asarray(labels, dtype=np.float64)
    if len(z) == 0 or len(np.unique(y)) < 2:
        raise ValueError(
            f"temperature scaling needs validation cases of both classes; got {len(z)} cases "
            f"with labels {sorted(set(y.tolist()))}"
        )
    result = minimize_scalar(lambda log_t: binary_nll(z, y, float(np.exp(log_t))),
                             bounds=(np.log(bounds[0]), np.log(bounds[1])), method="bounded",
                             options={"xatol": 1e-4})
    return float(np.exp(result.x))


def apply_temperature(probabilities: np.ndarray, temperature: float) -> np.ndarray:
    """Rescale probabilities as if their logits had been divided by ``temperature``."""
    if temperature == 1.0:
        return np.asarray(probabilities, dtype=np.float64)
    return sigmoid(logit(probabilities) / temperature)


# ---------------------------------------------------------------- threshold choice


def choose_threshold(labels: np.ndarray, probabilities: np.ndarray, method: str = "youden") -> float:
    """The cut on P(abnormal) that maximises Youden's J or Cohen's kappa on these (validation) cases.

    Candidates are every distinct score (predict abnormal when p >= cut); the
    best is returned as the midpoint to the next lower distinct score. Ties go
    to the highest cut (fewest positive calls).
    """
    if method not in THRESHOLD_METHODS:
        raise ValueError(f"unknown threshold method {method!r}; choose from {', '.join(THRESHOLD_METHODS)}")
    y = np.asarray(labels, dtype=np.float64)
    p = np.asarray(probabilities, dtype=np.float64)
    n_pos, n_neg = y.sum(), len(y) - y.sum()
    if n_pos == 0 or n_neg == 0:
        raise ValueError(f"choosing a threshold needs both classes; got {int(n_pos)} abnormal, {int(n_neg)} normal")
    cuts, inverse = np.unique(p, return_inverse=True)
    cuts = cuts[::-1]  # descending: cut k calls abnormal every score >= cuts[k]
    block = len(cuts) - 1 - inverse
    tp = np.cumsum(np.bincount(block, weights=y, minlength=len(cuts)))
    fp = np.cumsum(np.bincount(block, weights=1 - y, minlength=len(cuts)))
    fn, tn = n_pos - tp, n_neg - fp
    if method == "youden":
        score = tp / n_pos - fp / n_neg
    else:
        n = len(y)
        chance = ((tp + fp) * (tp + fn) + (tn + fn) * (tn + fp)) / n**2
        with np.errstate(divide="ignore", invalid="ignore"):
            score = np.where(chance < 1, ((tp + tn) / n - chance) / (1 - chance), -np.inf)
    best = int(np.argmax(score))
    if best + 1 < len(cuts):
        return float((cuts[best] + cuts[best + 1]) / 2)
    return float(cuts[best])
