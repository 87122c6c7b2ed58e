"""Patient-grouped split: no leakage, seeded, stratified, the official valid split untouched."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from xraylens.data.splits import split_train_val

PARTS = ("XR_WRIST", "XR_HAND", "XR_ELBOW", "XR_SHOULDER")


@pytest.fixture(scope="module")
def table() -> pd.DataFrame:
    """~400 train patients (some with two body parts) and 50 valid patients, 1-3 studies of 1-3 images."""
    rng = np.random.default_rng(123)
    rows = []
    for p in range(450):
        split = "train" if p < 400 else "valid"
        parts = rng.choice(PARTS, size=2 if p % 10 == 0 else 1, replace=False)
        for part in parts:
            for study in range(int(rng.integers(1, 4))):
                label = int(rng.random() < (0.6 if part == "XR_WRIST" else 0.3))
                for view in range(int(rng.integers(1, 4))):
                    rows.append(
                        {
                            "path": f"{split}/{part}/patient{p:05d}/study{study}/image{view}.png",
                            "split": split,
                            "body_part": part,
                            "patient_id": f"patient{p:05d}",
                            "label": label,
                        }
                    )
    return pd.DataFrame(rows)


def test_no_patient_on_both_sides(table: pd.DataFrame) -> None:
    out = split_train_val(table, 0.2, seed=0)
    subsets_per_patient = out.groupby("patient_id")["subset"].nunique()
    assert (subsets_per_patient == 1).all()


def test_valid_is_test_and_train_is_train_or_val(table: pd.DataFrame) -> None:
    out = split_train_val(table, 0.2, seed=0)
    assert set(out.loc[out["split"] == "valid", "subset"]) == {"test"}
    assert set(out.loc[out["split"] == "train", "subset"]) == {"train", "val"}
    assert "subset" not in table.columns  # a copy, the input is untouched
    assert len(out) == len(table)


def test_val_share_near_fraction(table: pd.DataFrame) -> None:
    train = split_train_val(table, 0.2, seed=0).query("split == 'train'")
    patients = train.groupby("subset")["patient_id"].nunique()
    assert patients["val"] == round(0.2 * 400)
    image_share = (train["subset"] == "val").mean()
    assert 0.15 < image_share < 0.25


def test_stratified_by_body_part_and_label(table: pd.DataFrame) -> None:
    """Each patient's stratum is its most common (part, label); every stratum gives floor/ceil of its share."""
    train = split_train_val(table, 0.25, seed=1).query("split == 'train'")
    keyed = train.assign(key=train["body_part"] + "|" + train["label"].astype(str))
    counts = keyed.groupby(["patient_id", "key"]).size().rename("n").reset_index()
    counts = counts.sort_values(["patient_id", "n", "key"], ascending=[True, False, True])
    stratum = counts.drop_duplicates("patient_id").set_index("patient_id")["key"]
    subset = train.groupby("patient_id")["subset"].first()
    for key, patients in stratum.groupby(stratum).groups.items():
        n_val = int((subset[patients] == "val").sum())
        assert abs(n_val - 0.25 * len(patients)) < 1, (key, n_val, len(patients))


def test_deterministic_for_a_seed_and_independent_of_row_order(table: pd.DataFrame) -> None:
    first = split_train_val(table, 0.2, seed=7)
    again = split_train_val(table.sample(frac=1.0, random_state=0), 0.2, seed=7).sort_index()
    pd.testing.assert_series_equal(first["subset"], again["subset"])


def test_other_seed_other_split(table: pd.DataFrame) -> None:
    a = split_train_val(table, 0.2, seed=0)
    b = split_train_val(table, 0.2, seed=1)
    val_a = set(a.loc[a["subset"] == "val", "patient_id"])
    val_b = set(b.loc[b["subset"] == "val", "patient_id"])
    assert val_a != val_b and len(val_a) == len(val_b)


def test_zero_fraction_and_bad_inputs(table: pd.DataFrame) -> None:
    assert "val" not in set(split_train_val(table, 0.0, seed=0)["subset"])
    with pytest.raises(ValueError, match="val_fraction"):
        split_train_val(table, 1.0, seed=0)
    with pytest.raises(ValueError, match="patient_id"):
        split_train_val(table.drop(columns="patient_id"), 0.2, seed=0)


def test_tiny_table_keeps_a_training_patient(tiny_mura) -> None:
    from xraylens.data.mura import index_dataset

    index = index_dataset(tiny_mura.root, progress=False)
    out = split_train_val(index.table, 0.5, seed=0)
    train = out[out["split"] == "train"]
    assert train.groupby("subset")["patient_id"].nunique().to_dict() == {"train": 2, "val": 2}
    assert (out.groupby("patient_id")["subset"].nunique() == 1).all()  # patient00004: two parts, one side
