"""Patient-grouped, seeded, stratified train/val split of MURA's ``train`` split.

Why by patient: views of one study (and studies of one patient) are nearly
the same picture; if they land on both sides, validation measures memory, not
generalisation, and early stopping picks the wrong epoch. MURA's own ``valid``
split is our test set and is never touched here.

Why stratified: with 7 body parts and imbalanced labels, a plain random
patient split can leave a part or class nearly absent from validation.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

_NEEDED = ("split", "patient_id", "body_part", "label")


def split_train_val(table: pd.DataFrame, val_fraction: float, seed: int) -> pd.DataFrame:
    """Copy of ``table`` with a ``subset`` column: ``train``/``val`` for split ``train``, ``test`` for ``valid``.

    Each patient gets a stratum, its most common (body part, label) over its
    images; about ``val_fraction`` of the patients of every stratum go to
    ``val`` (rounding is balanced across strata so the total is
    ``round(val_fraction * patients)``). The result depends only on the set of
    rows and ``seed``, not on row order.
    """
    _check(table, val_fraction)
    out = table.copy()
    unknown = sorted(set(out["split"]) - {"train", "valid"})
    if unknown:
        raise ValueError(f"split_train_val: split values must be 'train' or 'valid', found {unknown}")
    train = out[out["split"] == "train"]
    val_patients = _val_patients(train, val_fraction, seed)
    subset = np.where(out["split"] == "valid", "test", "train").astype(object)
    subset[(out["split"] == "train").to_numpy() & out["patient_id"].isin(val_patients).to_numpy()] = "val"
    out["subset"] = subset
    return out


def hold_out_patients(table: pd.DataFrame, fraction: float, seed: int) -> set[str]:
    """About ``fraction`` of the patients of ``table``, stratified and seeded exactly as the ``val`` subset is.

    For datasets without an official test split (FracAtlas, GRAZPEDWRI-DX):
    their readers hold these patients out as the split ``valid``, so the
    test set is patient-grouped and balanced over body parts and labels too.
    """
    if not 0.0 <= fraction < 1.0:
        raise ValueError(f"test fraction must be in [0, 1), got {fraction}")
    return _val_patients(table, fraction, seed)


def _check(table: pd.DataFrame, val_fraction: float) -> None:
    missing = [c for c in _NEEDED if c not in table.columns]
    if missing:
        raise ValueError(f"split_train_val: table lacks column(s) {missing}; pass MuraIndex.table")
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")


def _val_patients(train: pd.DataFrame, val_fraction: float, seed: int) -> set[str]:
    strata = _patient_strata(train)  # patient_id -> stratum, sorted by patient
    n_patients = len(strata)
    if n_patients == 0 or val_fraction == 0.0:
        return set()
    total = min(max(1, round(val_fraction * n_patients)), n_patients - 1) if n_patients > 1 else 0
    groups = {key: sorted(ids) for key, ids in strata.groupby(strata).groups.items()}
    quotas = _allocate(groups, val_fraction, total)
    rng = np.random.default_rng(seed)
    chosen: set[str] = set()
    for key in sorted(groups):
        ids = groups[key]
        order = rng.permutation(len(ids))
        chosen.update(ids[i] for i in order[: quotas[key]])
    return chosen


def _patient_strata(train: pd.DataFrame) -> pd.Series:
    """Most common ``body_part|label`` of each patient's images; ties go to the alphabetically first."""
    keys = train["body_part"].astype(str) + "|" + train["label"].astype(int).astype(str)
    counts = pd.DataFrame({"patient_id": train["patient_id"].astype(str), "key": keys}).value_counts()
    counts = (
        counts.rename("n")
        .reset_index()
        .sort_values(["patient_id", "n", "key"], ascending=[True, False, True])
    )
    first = counts.drop_duplicates("patient_id")
    return pd.Series(first["key"].to_numpy(), index=first["patient_id"].to_numpy(), name="stratum")


def _allocate(groups: dict[str, list[str]], val_fraction: float, total: int) -> dict[str, int]:
    """Largest-remainder quotas: floor of each stratum's share, then the remainders until ``total``."""
    exact = {key: val_fraction * len(ids) for key, ids in groups.items()}
    quotas = {key: int(np.floor(value)) for key, value in exact.items()}
    by_remainder = sorted(groups, key=lambda key: (-(exact[key] - quotas[key]), -len(groups[key]), key))
    short = total - sum(quotas.values())
    for key in by_remainder:
        if short <= 0:
            break
        if quotas[key] < len(groups[key]):
            quotas[key] += 1
            short -= 1
    while short < 0:  # only when total was capped below the floors (tiny tables)
        key = max(quotas, key=lambda k: (quotas[k], k))
        quotas[key] -= 1
        short += 1
    return quotas
