"""The MURA index: both routes agree, junk is skipped and reported, wrong datasets fail clearly."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from xraylens.data.mura import COLUMNS, DataError, index_dataset, normalize_body_parts

STUDY = "MURA-v1.1/train/XR_WRIST/patient00001/study1_positive"


def _index(tree, **kwargs):
    return index_dataset(tree.root, progress=False, **kwargs)


def _kinds(index) -> dict[str, str]:
    return {p.path: p.kind for p in index.problems}


def test_clean_tree_matches_what_was_written(tiny_mura) -> None:
    index = _index(tiny_mura)
    assert index.source == "csv"
    assert index.problems == []
    assert index.root == tiny_mura.root
    assert tuple(index.table.columns) == COLUMNS
    assert sorted(index.table["path"]) == sorted(r["path"] for r in tiny_mura.images)
    expected = {r["path"]: r["label"] for r in tiny_mura.images}
    assert dict(zip(index.table["path"], index.table["label"], strict=True)) == expected
    row = index.table.set_index("path").loc[f"{STUDY}/image2.png"]
    assert row["file"] == str(tiny_mura.root / STUDY / "image2.png")
    assert (row["split"], row["body_part"], row["patient_id"], row["view"]) == (
        "train",
        "XR_WRIST",
        "patient00001",
        "image2",
    )
    assert row["study_id"] == "train/XR_WRIST/patient00001/study1"
    assert row["study_path"] == f"{STUDY}/"
    assert index.table["label"].dtype == np.int64


def test_csv_route_and_walk_route_give_the_same_table(tiny_mura) -> None:
    from_csv = _index(tiny_mura)
    tiny_mura.drop_csvs()
    walked = _index(tiny_mura)
    assert walked.source == "walk"
    assert walked.problems == []
    pd.testing.assert_frame_equal(from_csv.table, walked.table)


def test_root_may_be_the_mura_folder_itself(tiny_mura) -> None:
    via_parent = _index(tiny_mura)
    via_mura = index_dataset(tiny_mura.mura_dir, progress=False)
    assert via_mura.root == tiny_mura.root
    pd.testing.assert_frame_equal(via_parent.table, via_mura.table)


def test_wrong_root_names_path_and_layout(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"not a MURA v1\.1 dataset.*MURA-v1\.1/\{train,valid\}/XR_<PART>"):
        index_dataset(tmp_path, progress=False)
    with pytest.raises(DataError, match="no such folder"):
        index_dataset(tmp_path / "absent", progress=False)


def test_sorted_deterministically_with_numeric_views(tiny_mura) -> None:
    for j in range(3, 12):
        tiny_mura.write_png(f"{STUDY}/image{j}.png")
    tiny_mura.drop_csvs()
    table = _index(tiny_mura).table
    views = table[table["study_id"] == "train/XR_WRIST/patient00001/study1"]["view"].tolist()
    assert views == [f"image{j}" for j in range(1, 12)]
    assert list(table["split"]) == sorted(table["split"])


def _add_junk(tree) -> dict[str, str]:
    """Every kind of junk the index must skip, and the kind it must report for each."""
    png = (tree.root / STUDY / "image1.png").read_bytes()
    noise = np.random.default_rng(0).integers(0, 255, (40, 40), dtype=np.uint8)
    Image.fromarray(noise).save(tree.root / STUDY / "image3.png")  # listed below, then truncated
    truncated = (tree.root / STUDY / "image3.png").read_bytes()
    tree.write(f"{STUDY}/image3.png", truncated[: len(truncated) // 2])
    tree.write(f"{STUDY}/._image1.png", b"\x00\x05\x16\x07AppleDouble")
    tree.write(f"{STUDY}/.DS_Store", b"Bud1")
    tree.write(f"{STUDY}/image4.png", b"")
    tree.write(f"{STUDY}/image5.png", b"this is a text file\n")
    tree.write(f"{STUDY}/image6.png", png)  # a real image nobody lists
    unlabeled = "MURA-v1.1/train/XR_WRIST/patient00009/study1_negative/image1.png"
    tree.write(unlabeled, png)
    for name in ("image3", "image4", "image5", "image7"):
        tree.append_line("train_image_paths.csv", f"{STUDY}/{name}.png")
    tree.append_line("train_image_paths.csv", unlabeled)
    return {
        f"{STUDY}/._image1.png": "hidden_file",
        f"{STUDY}/.DS_Store": "hidden_file",
        f"{STUDY}/image4.png": "empty_file",
        f"{STUDY}/image5.png": "not_image",
        f"{STUDY}/image6.png": "unlisted_on_disk",
        f"{STUDY}/image7.png": "missing_on_disk",
        unlabeled: "unlabeled",
    }


def test_each_junk_kind_is_reported_and_skipped(tiny_mura) -> None:
    expected = _add_junk(tiny_mura)
    index = _index(tiny_mura)
    assert _kinds(index) == expected
    paths = set(index.table["path"])
    assert not paths & set(expected)
    assert f"{STUDY}/image3.png" in paths  # truncation is invisible without verify
    assert len(paths) == len(tiny_mura.images) + 1


def test_verify_finds_truncated_images(tiny_mura) -> None:
    _add_junk(tiny_mura)
    index = _index(tiny_mura, verify=True)
    assert _kinds(index)[f"{STUDY}/image3.png"] == "unreadable"
    assert f"{STUDY}/image3.png" not in set(index.table["path"])
    assert len(index.table) == len(tiny_mura.images)


def test_strict_raises_with_counts_and_examples(tiny_mura) -> None:
    _add_junk(tiny_mura)
    with pytest.raises(DataError, match=r"strict(.|\n)*hidden_file: 2(.|\n)*\._image1\.png"):
        _index(tiny_mura, strict=True)


def test_problem_summary(tiny_mura) -> None:
    _add_junk(tiny_mura)
    summary = _index(tiny_mura).problem_summary(max_examples=1)
    assert summary["total"] == 7
    assert summary["counts"]["hidden_file"] == 2
    assert len(summary["examples"]["hidden_file"]) == 1
    assert "hidden_file" in summary["fixes"]


def test_label_contradicting_folder_name_is_a_problem_naming_study(tiny_mura) -> None:
    """No safe guess exists, so the study is left out, reported, and the rest of the dataset is used."""
    study = "MURA-v1.1/train/XR_WRIST/patient00002/study1_negative/"
    csv = tiny_mura.mura_dir / "train_labeled_studies.csv"
    csv.write_text(csv.read_text().replace(f"{study},0", f"{study},1"))
    index = _index(tiny_mura)
    assert _kinds(index) == {study: "label_conflict"}
    assert re.search(r"train_labeled_studies\.csv line \d+: .*patient00002/study1_negative.*labelled 1.*'negative'",
                     index.problems[0].detail)
    assert not index.table["path"].str.startswith(study).any()
    assert len(index.table) == len(tiny_mura.images) - 2
    with pytest.raises(DataError, match="label_conflict"):
        _index(tiny_mura, strict=True)


def test_folder_renamed_against_csv_is_a_problem_naming_study(tiny_mura) -> None:
    old = tiny_mura.root / STUDY
    old.rename(old.with_name("study1_negative"))
    renamed = STUDY.replace("positive", "negative")
    tiny_mura.append_line("train_image_paths.csv", f"{renamed}/image1.png")
    index = _index(tiny_mura, strict=False)
    conflicts = [p for p in index.problems if p.kind == "label_conflict"]
    assert [p.path for p in conflicts] == [f"{renamed}/"]
    assert "disagrees with the label CSV entry" in conflicts[0].detail
    assert not index.table["path"].str.startswith(renamed).any()


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("path\n{lines}", r"train_image_paths\.csv line 1 looks like a header.*delete that line"),
        ("{commas}", r"train_image_paths\.csv: only 0 of \d+ lines have the expected form"),
        ("{foreign}", r"train_image_paths\.csv: only 0 of \d+ lines.*paths starting with MURA-v1\.1/"),
        ("", r"train_image_paths\.csv: the file is empty"),
    ],
)
def test_wrong_csv_names_the_file(tiny_mura, content: str, message: str) -> None:
    csv = tiny_mura.mura_dir / "train_image_paths.csv"
    lines = csv.read_text().splitlines()
    csv.write_text(
        content.format(
            lines="\n".join(lines),
            commas="\n".join(f"{line},1" for line in lines),
            foreign="\n".join(line.replace("MURA-v1.1/", "/data/") for line in lines),
        )
    )
    with pytest.raises(DataError, match=message):
        _index(tiny_mura)


def test_wrong_label_csv_names_the_file(tiny_mura) -> None:
    csv = tiny_mura.mura_dir / "valid_labeled_studies.csv"
    csv.write_text("Path,Label\n" + csv.read_text())
    with pytest.raises(DataError, match=r"valid_labeled_studies\.csv line 1 looks like a header"):
        _index(tiny_mura)


def test_a_few_bad_csv_lines_are_problems_with_line_numbers(tiny_mura) -> None:
    tiny_mura.append_line("train_image_paths.csv", "garbage,line")
    index = _index(tiny_mura)
    (problem,) = index.problems
    assert problem.kind == "bad_csv_line"
    assert "train_image_paths.csv line 11" in problem.detail
    assert len(index.table) == len(tiny_mura.images)


@pytest.mark.parametrize("spelling", ["XR_WRIST", "wrist", "WRIST", "Wrist"])
def test_body_part_filter(tiny_mura, spelling: str) -> None:
    index = _index(tiny_mura, body_parts=[spelling])
    assert set(index.table["body_part"]) == {"XR_WRIST"}
    assert len(index.table) == sum(r["body_part"] == "XR_WRIST" for r in tiny_mura.images)
    assert index.problems == []


def test_unknown_body_part_lists_valid_ones() -> None:
    with pytest.raises(DataError, match=r"unknown body part 'knee'.*elbow.*wrist"):
        normalize_body_parts(["knee"])


def test_single_split_and_missing_split_folder(tiny_mura) -> None:
    assert set(_index(tiny_mura, splits=("valid",)).table["split"]) == {"valid"}
    shutil.rmtree(tiny_mura.mura_dir / "valid")
    with pytest.raises(DataError, match=r"MURA-v1\.1/valid: folder not found.*splits=\('train',\)"):
        _index(tiny_mura)


def test_walk_route_reports_junk_too(tiny_mura) -> None:
    expected = _add_junk(tiny_mura)
    tiny_mura.drop_csvs()
    tiny_mura.write("MURA-v1.1/train/XR_WRIST/README.txt", b"notes")
    tiny_mura.write("MURA-v1.1/train/XR_KNEE/patient00001/study1_positive/image1.png", b"x")
    index = _index(tiny_mura)
    kinds = _kinds(index)
    for path, kind in expected.items():
        if kind in ("hidden_file", "empty_file", "not_image"):
            assert kinds.pop(path) == kind
    assert kinds.pop("MURA-v1.1/train/XR_WRIST/README.txt") == "unexpected_path"
    assert kinds.pop("MURA-v1.1/train/XR_KNEE") == "unexpected_path"
    assert kinds == {}  # no CSVs: nothing can be missing, unlisted or unlabeled
    assert set(index.table["body_part"]) <= {"XR_WRIST", "XR_ELBOW", "XR_HAND", "XR_HUMERUS"}
