"""Per-finding-kind metrics on a hand-built case whose AUROCs are worked out below, and the box-table reader."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from xraylens.data.problems import DataError
from xraylens.finding_kinds import find_box_table, per_kind_metrics, read_finding_kinds

# Studies (one row per image; probability; boxes on that image). Threshold 0.5.
#   normal   N1 .1   N2 .3   N3 .5   N4 .7 (N4 carries a hardware box: labels win, still a negative)
#   F1 .8 fracture   F2 .9 fracture
#   U  img1 fracture box but unreadable (not in the table), img2 .95 no box -> U is a fracture study
#   M  img1 .95 lesion, img2 .05 hardware, img3 .3 no box      -> study prob 1.3/3 = .433
#   L1 .75 lesion    H1 .6 hardware    A0 .05 abnormal without any box: left out of every kind
#
# fracture  studies F1 .8, F2 .9, U .95 beat all 4 normals            -> AUROC 1
#           images  the same three (U img2 inherits its study's kind)  -> AUROC 1
#           kappa: TP 3, FN 0, TN 2 (.1 .3), FP 2 (.5 .7); p_o 5/7, p_e (5*3 + 2*4)/49 -> 6/13
# lesion    studies M .433 beats .1 .3 (2), L1 .75 beats 4             -> 6/8
#           images  M1 .95 (4), M3 .3 (1 + tie 1/2), L1 (4)             -> 9.5/12; M2 is hardware only: out
# hardware  studies M .433 (2), H1 .6 (3)                                -> 5/8
#           images  M2 .05 (0), M3 .3 (1.5), H1 .6 (3)                  -> 4.5/12
IMAGES = [  # (patient, label, image, probability)
    ("N1", 0, 1, 0.1), ("N2", 0, 1, 0.3), ("N3", 0, 1, 0.5), ("N4", 0, 1, 0.7),
    ("F1", 1, 1, 0.8), ("F2", 1, 1, 0.9), ("U", 1, 2, 0.95),
    ("M", 1, 1, 0.95), ("M", 1, 2, 0.05), ("M", 1, 3, 0.3),
    ("L1", 1, 1, 0.75), ("H1", 1, 1, 0.6), ("A0", 1, 1, 0.05),
]
BOXES = [("N4", 0, 1, "hardware"), ("F1", 1, 1, "fracture"), ("F2", 1, 1, "fracture"), ("U", 1, 1, "fracture"),
         ("M", 1, 1, "lesion"), ("M", 1, 2, "hardware"), ("L1", 1, 1, "lesion"), ("H1", 1, 1, "hardware")]
PATIENTS = {name: f"patient{n:05d}" for n, name in enumerate(("N1", "N2", "N3", "N4", "F1", "F2", "U", "M", "L1",
                                                               "H1", "A0"), start=11000)}


def _path(patient: str, label: int, image: int) -> str:
    sign = "positive" if label else "negative"
    return f"MURA-v1.1/valid/XR_WRIST/{PATIENTS[patient]}/study1_{sign}/image{image}.png"


def _images() -> pd.DataFrame:
    return pd.DataFrame({
        "path": [_path(p, y, i) for p, y, i, _ in IMAGES],
        "study_id": [f"valid/XR_WRIST/{PATIENTS[p]}/study1" for p, *_ in IMAGES],
        "label": [y for _, y, _, _ in IMAGES],
        "probability": [s for *_, s in IMAGES],
    })


def _write_boxes(path: Path, boxes=BOXES) -> Path:
    lines = ["path,x0,y0,x1,y1,kind"] + [f"{_path(p, y, i)},1,2,10,12,{kind}" for p, y, i, kind in boxes]
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture
def per_kind(tmp_path):
    kinds = read_finding_kinds(_write_boxes(tmp_path / "boxes.csv"))
    return per_kind_metrics(_images(), kinds, 0.5, n_boot=200, seed=0)


def test_per_kind_auroc_matches_the_hand_computation(per_kind):
    assert list(per_kind) == ["fracture", "hardware", "lesion"]
    expected = {"fracture": (1.0, 1.0), "lesion": (6 / 8, 9.5 / 12), "hardware": (5 / 8, 4.5 / 12)}
    for kind, (study_auroc, image_auroc) in expected.items():
        assert per_kind[kind]["study"]["auroc"] == pytest.approx(study_auroc), kind
        assert per_kind[kind]["image"]["auroc"] == pytest.approx(image_auroc), kind
    assert per_kind["fracture"]["study"]["kappa"] == pytest.approx(6 / 13)
    assert per_kind["fracture"]["study"]["ci95"]["auroc"] == [1.0, 1.0]  # perfectly separated in every resample


def test_cohorts_keep_all_normals_and_drop_abnormals_without_the_kind(per_kind):
    counts = {kind: (e["n_positive_studies"], e["n_negative_studies"], e["n_positive_images"], e["n_negative_images"])
              for kind, e in per_kind.items()}
    # fracture: F1 F2 U (U through its unreadable image's box); lesion: M L1 + images M1 M3 L1; hardware: M H1
    assert counts == {"fracture": (3, 4, 3, 4), "lesion": (2, 4, 3, 4), "hardware": (2, 4, 3, 4)}
    for entry in per_kind.values():
        lo, hi = entry["image"]["ci95"]["auroc"]
        assert lo <= entry["image"]["auroc"] <= hi
        assert entry["study"]["n"] == entry["n_positive_studies"] + entry["n_negative_studies"]


def test_a_kind_does_not_change_when_other_kinds_are_dropped(tmp_path, per_kind):
    only = read_finding_kinds(_write_boxes(tmp_path / "fracture.csv", [b for b in BOXES if b[3] == "fracture"]))
    alone = per_kind_metrics(_images(), only, 0.5, n_boot=200, seed=0)
    assert list(alone) == ["fracture"] and alone["fracture"] == per_kind["fracture"]


def test_no_abnormal_study_with_boxes_gives_no_kinds(tmp_path):
    kinds = read_finding_kinds(_write_boxes(tmp_path / "boxes.csv", [("N4", 0, 1, "hardware")]))
    assert per_kind_metrics(_images(), kinds, 0.5, n_boot=10) == {}


def test_box_table_errors_name_the_file_and_line(tmp_path):
    with pytest.raises(DataError, match="not found"):
        read_finding_kinds(tmp_path / "nope.csv")
    (tmp_path / "cols.csv").write_text("path,x0,y0,x1,y1\nMURA-v1.1/valid/XR_HAND/patient1/study1_positive/a.png,0,0,1,1\n")
    with pytest.raises(DataError, match="missing column.*kind"):
        read_finding_kinds(tmp_path / "cols.csv")
    (tmp_path / "bad.csv").write_text("path,kind\n" + _path("F1", 1, 1) + ",fracture\nimages/x.png,fracture\n")
    with pytest.raises(DataError, match=r"line 3: path 'images/x.png' is not a MURA-relative"):
        read_finding_kinds(tmp_path / "bad.csv")


def test_box_table_is_found_in_the_data_folder_or_next_to_mura(tmp_path):
    mura_parent = tmp_path / "data"
    (mura_parent / "MURA-v1.1").mkdir(parents=True)
    assert find_box_table(mura_parent / "MURA-v1.1", mura_parent) is None
    _write_boxes(mura_parent / "boxes.csv")
    assert find_box_table(mura_parent / "MURA-v1.1", mura_parent) == mura_parent / "boxes.csv"
