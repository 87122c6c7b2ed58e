"""Metrics, bootstrap and calibration against hand-computed cases and sklearn."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from sklearn.metrics import cohen_kappa_score, roc_auc_score

from xraylens import calibration as cal
from xraylens import metrics as M

# Six studies worked out by hand at threshold 0.5:
#   labels      1    1    1    0    0    0
#   prob       .9   .6   .3   .4   .2   .1   -> predictions 1 1 0 0 0 0
#   TP = 2, FN = 1, TN = 3, FP = 0
#   accuracy 5/6, sensitivity 2/3, specificity 1, F1 = 2*2 / (2*2 + 0 + 1) = 4/5
#   kappa: p_o = 5/6, p_e = (2/6)(3/6) + (4/6)(3/6) = 1/2 -> (5/6 - 1/2) / (1/2) = 2/3
#   AUROC: of 9 (abnormal, normal) pairs the abnormal ranks higher in 3 + 3 + 2 = 8 -> 8/9
SIX_LABELS = np.array([1, 1, 1, 0, 0, 0])
SIX_PROBS = np.array([0.9, 0.6, 0.3, 0.4, 0.2, 0.1])
SIX_EXPECTED = {"accuracy": 5 / 6, "sensitivity": 2 / 3, "specificity": 1.0, "f1": 0.8, "kappa": 2 / 3,
                "auroc": 8 / 9}


def test_six_study_case_matches_hand_computation():
    values = M.binary_metrics(SIX_LABELS, SIX_PROBS, threshold=0.5)
    assert set(values) == set(M.METRIC_NAMES)
    for name, expected in SIX_EXPECTED.items():
        assert values[name] == pytest.approx(expected), name


def test_kappa_and_auroc_agree_with_sklearn_and_the_rank_statistic():
    rng = np.random.default_rng(1)
    y = rng.integers(0, 2, 300)
    s = np.round(rng.random(300) + 0.4 * y, 1)  # rounding makes ties
    pred = (s >= 0.7).astype(int)
    assert M.cohen_kappa(y, pred) == pytest.approx(cohen_kappa_score(y, pred))
    pos, neg = s[y == 1], s[y == 0]
    rank_statistic = ((pos[:, None] > neg[None, :]) + 0.5 * (pos[:, None] == neg[None, :])).mean()
    assert M.auroc(y, s) == pytest.approx(rank_statistic)
    assert M.auroc(y, s) == pytest.approx(roc_auc_score(y, s))
    assert M.auroc([1, 0], [0.5, 0.5]) == pytest.approx(0.5)


def test_one_class_gives_nan_auroc_and_json_null():
    values = M.binary_metrics([1, 1, 1], [0.2, 0.7, 0.9])
    assert math.isnan(values["auroc"]) and math.isnan(values["specificity"])
    assert values["sensitivity"] == pytest.approx(2 / 3)
    ci = M.bootstrap_ci([1, 1, 1], [0.2, 0.7, 0.9], n_boot=50)
    assert all(math.isnan(v) for v in ci["auroc"])
    text = json.dumps(M.to_jsonable({"auroc": values["auroc"], "ci95": ci}), allow_nan=False)
    assert json.loads(text)["auroc"] is None


def test_study_probability_is_the_mean_of_its_views():
    study_ids = ["a", "a", "b", "c", "c", "c"]
    probs = np.array([0.2, 0.6, 0.9, 0.1, 0.2, 0.6])
    labels = np.array([1, 1, 0, 0, 0, 0])
    keys, study_probs, study_labels, codes = M.study_level(study_ids, probs, labels)
    assert keys.tolist() == ["a", "b", "c"]
    np.testing.assert_allclose(study_probs, [0.4, 0.9, 0.3])
    assert study_labels.tolist() == [1, 0, 0]
    assert codes.tolist() == [0, 0, 1, 2, 2, 2]
    with pytest.raises(ValueError, match="different labels"):
        M.study_level(["a", "a"], [0.1, 0.2], [0, 1])


def _sample(n_studies: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n_studies)
    return y, 1 / (1 + np.exp(-(rng.normal(size=n_studies) + 1.5 * (2 * y - 1))))


def test_bootstrap_ci_contains_estimate_is_seeded_and_narrows_with_n():
    y, p = _sample(200)
    point = M.binary_metrics(y, p)
    ci = M.bootstrap_ci(y, p, n_boot=500, seed=3)
    for name in M.METRIC_NAMES:
        assert ci[name][0] <= point[name] <= ci[name][1], name
    assert M.bootstrap_ci(y, p, n_boot=500, seed=3) == ci
    assert M.bootstrap_ci(y, p, n_boot=500, seed=4) != ci
    y_big, p_big = _sample(5000, seed=1)
    big = M.bootstrap_ci(y_big, p_big, n_boot=500, seed=3)
    for name in ("auroc", "kappa"):
        assert big[name][1] - big[name][0] < 0.5 * (ci[name][1] - ci[name][0]), name


def test_image_level_ci_resamples_whole_studies():
    """Three identical views per study add no evidence: the image CI must equal the study CI."""
    y, p = _sample(150, seed=2)
    views = 3
    codes = np.repeat(np.arange(150), views)
    by_study = M.bootstrap_ci(y, p, n_boot=300, seed=7)
    by_image_clustered = M.bootstrap_ci(y[codes], p[codes], groups=codes, n_boot=300, seed=7)
    naive = M.bootstrap_ci(y[codes], p[codes], n_boot=300, seed=7)  # what resampling images would give
    for name in M.METRIC_NAMES:
        assert by_image_clustered[name] == pytest.approx(by_study[name]), name
    assert naive["auroc"][1] - naive["auroc"][0] < by_study["auroc"][1] - by_study["auroc"][0]


def test_evaluation_metrics_reports_both_levels_and_every_body_part():
    study_ids = [f"s{i}" for i in range(6) for _ in range(2)]
    probs = np.repeat(SIX_PROBS, 2) + np.tile([-0.05, 0.05], 6)  # two views averaging to SIX_PROBS
    labels = np.repeat(SIX_LABELS, 2)
    parts = np.repeat(["XR_WRIST", "XR_HAND", "XR_WRIST", "XR_HAND", "XR_WRIST", "XR_HAND"], 2)
    report = M.evaluation_metrics(labels, probs, study_ids, parts, threshold=0.5, n_boot=200, seed=0)
    study, image = report["study"], report["image"]
    for name, expected in SIX_EXPECTED.items():
        assert study[name] == pytest.approx(expected), name
    assert (study["n"], image["n"], image["n_studies"]) == (6, 12, 6)
    assert set(study["by_body_part"]) == {"XR_HAND", "XR_WRIST"}
    hand = study["by_body_part"]["XR_HAND"]
    assert hand["n"] == 3 and set(hand["ci95"]) == set(M.METRIC_NAMES)
    assert image["by_body_part"]["XR_WRIST"]["n"] == 6


# ---------------------------------------------------------------- calibration and thresholds


def test_ece_small_when_calibrated_large_when_overconfident():
    rng = np.random.default_rng(0)
    z = rng.normal(0, 2, 20000)
    y = (rng.random(20000) < cal.sigmoid(z)).astype(int)
    assert cal.expected_calibration_error(y, cal.sigmoid(z)) < 0.02
    assert cal.expected_calibration_error(y, cal.sigmoid(3 * z)) > 0.08
    curve = cal.reliability_curve(y, cal.sigmoid(z), n_bins=10)
    assert curve.counts.sum() == 20000 and len(curve.edges) == 11


def test_temperature_scaling_softens_an_overconfident_model():
    rng = np.random.default_rng(1)
    z = rng.normal(0, 2, 5000)
    y = (rng.random(5000) < cal.sigmoid(z)).astype(int)
    overconfident = 3 * z
    t = cal.fit_temperature(overconfident, y)
    assert 2.4 < t < 3.6
    assert cal.binary_nll(overconfident, y, t) < cal.binary_nll(overconfident, y)
    scaled = cal.apply_temperature(cal.sigmoid(overconfident), t)
    assert cal.expected_calibration_error(y, scaled) < cal.expected_calibration_error(y, cal.sigmoid(overconfident))
    with pytest.raises(ValueError, match="both classes"):
        cal.fit_temperature([1.0, 2.0], [1, 1])


@pytest.mark.parametrize("method", ["youden", "kappa"])
def test_threshold_choice_separates_a_separable_case(method):
    labels = [0, 0, 0, 1, 1, 1]
    probs = [0.1, 0.2, 0.3, 0.6, 0.7, 0.8]
    assert cal.choose_threshold(labels, probs, method) == pytest.approx(0.45)


def test_kappa_threshold_is_the_best_cut():
    y, p = _sample(400, seed=5)
    p = np.clip(p + 0.2, 0, 1)  # shift so that 0.5 is not the best cut
    chosen = cal.choose_threshold(y, p, "kappa")
    grid = np.unique(p)
    best = max(cohen_kappa_score(y, (p >= t).astype(int)) for t in grid)
    assert cohen_kappa_score(y, (p >= chosen).astype(int)) == pytest.approx(best)
    assert chosen > 0.5
