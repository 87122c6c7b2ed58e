"""The synthetic MURA generator: exact layout, reproducibility, honest boxes and no label shortcuts.

The CSVs and folders are parsed here by hand (not with ``xraylens.data.mura``)
so the generator is checked against the released format, not against our
own reader.
"""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from xraylens.config import BODY_PARTS
from xraylens.data.synthetic import GENERATOR_VERSION, SynthResult, generate
from xraylens.data.synthetic.plan import make_plan
from xraylens.data.synthetic.render import render_study

PATIENTS, SIDE, SEED = 16, 160, 3
IMAGE_RE = re.compile(
    r"MURA-v1\.1/(train|valid)/(XR_[A-Z]+)/(patient\d{5})/study(\d+)_(positive|negative)/image(\d+)\.png"
)


@pytest.fixture(scope="module")
def synth(tmp_path_factory: pytest.TempPathFactory) -> SynthResult:
    return generate(
        tmp_path_factory.mktemp("synth") / "out", patients=PATIENTS, max_side=SIDE, seed=SEED, progress=False
    )


def _csv_lines(path: Path) -> list[str]:
    text = path.read_text()
    assert text.endswith("\n") and "\r" not in text, f"{path.name}: lines must end with a plain newline"
    return text.splitlines()


def _tree(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _images(result: SynthResult) -> list[str]:
    return [
        line
        for split in ("train", "valid")
        for line in _csv_lines(result.root / f"MURA-v1.1/{split}_image_paths.csv")
    ]


def test_layout_and_csvs_follow_mura_v11(synth: SynthResult) -> None:
    mura = synth.root / "MURA-v1.1"
    patients: dict[str, set[str]] = {}
    for split in ("train", "valid"):
        images = _csv_lines(mura / f"{split}_image_paths.csv")
        studies = _csv_lines(mura / f"{split}_labeled_studies.csv")
        assert images and studies
        for line in images:  # no header, one relative path per line, every file exists
            match = IMAGE_RE.fullmatch(line)
            assert match, line
            assert match.group(1) == split and match.group(2) in BODY_PARTS
            assert (synth.root / line).is_file()
            patients.setdefault(split, set()).add(match.group(3))
        listed = {line.rsplit("/", 1)[0] + "/" for line in images}
        seen = set()
        for line in studies:
            path, label = line.rsplit(",", 1)
            assert (
                path.endswith("/") and path.startswith(f"MURA-v1.1/{split}/") and (synth.root / path).is_dir()
            )
            assert label == ("1" if path.endswith("_positive/") else "0")
            numbers = sorted(int(p.name[5:-4]) for p in (synth.root / path).glob("image*.png"))
            assert numbers == list(range(1, len(numbers) + 1)), f"{path}: images numbered {numbers}"
            seen.add(path)
        assert seen == listed  # every study has images, every image has a labelled study
        on_disk = {
            p.relative_to(synth.root).as_posix()
            for p in (mura / split).rglob("*.png")
            if not p.name.startswith("._")
        }
        assert on_disk == set(images)
    assert not patients["train"] & patients["valid"], "a patient must not be in both splits"
    assert 0.1 <= len(patients["valid"]) / (len(patients["train"]) + len(patients["valid"])) <= 0.3


def test_manifest_counts_equal_what_is_on_disk(synth: SynthResult) -> None:
    manifest = json.loads((synth.root / "synth_manifest.json").read_text())
    assert manifest == synth.manifest
    assert (manifest["seed"], manifest["patients"], manifest["max_side"]) == (SEED, PATIENTS, SIDE)
    assert manifest["generator_version"] == GENERATOR_VERSION
    for split in ("train", "valid"):
        rows = [IMAGE_RE.fullmatch(p).groups() for p in _images(synth) if p.split("/")[1] == split]
        for part in (None, *BODY_PARTS):
            mine = [r for r in rows if part in (None, r[1])]
            want = (
                manifest["splits"][split] if part is None else manifest["splits"][split]["body_parts"][part]
            )
            assert want["images"] == len(mine)
            assert want["studies"] == len({r[1:4] for r in mine})
            assert want["patients"] == len({r[2] for r in mine})
            assert want["abnormal_studies"] == len({r[1:4] for r in mine if r[4] == "positive"})
    junk = list((synth.root / "MURA-v1.1").rglob("._*"))
    assert manifest["junk_files"] == len(junk) >= 1
    stored = [Image.open(synth.root / p) for p in _images(synth)]
    assert manifest["storage"]["rgb"] == sum(im.mode == "RGB" for im in stored)
    assert manifest["storage"]["gray16"] == sum(im.mode.startswith("I") for im in stored)


def test_junk_files_are_appledouble_stubs_not_listed(synth: SynthResult) -> None:
    assert not any("._" in line for line in _images(synth))
    for junk in (synth.root / "MURA-v1.1").rglob("._*"):
        assert re.fullmatch(r"\._image\d+\.png", junk.name)
        assert (junk.parent / junk.name[2:]).is_file()  # next to the real image, as macOS leaves them
        assert not junk.read_bytes().startswith(b"\x89PNG") and 0 < junk.stat().st_size < 100


def test_images_vary_in_size_and_keep_the_max_side(synth: SynthResult) -> None:
    sizes = [Image.open(synth.root / p).size for p in _images(synth)]
    assert all(max(s) == SIDE and min(s) >= 0.6 * SIDE - 1 for s in sizes)
    assert len(set(sizes)) >= 5
    assert any(w > h for w, h in sizes) and any(h > w for w, h in sizes)


def test_boxes_only_on_abnormal_images_inside_bounds(synth: SynthResult) -> None:
    boxes = pd.read_csv(synth.root / "boxes.csv")
    assert list(boxes.columns) == ["path", "x0", "y0", "x1", "y1", "kind"]
    assert boxes.equals(synth.boxes.astype(boxes.dtypes))
    assert set(boxes.kind) <= {"fracture", "hardware", "lesion"}
    assert set(boxes.path) <= set(_images(synth))
    assert all("_positive/" in p for p in boxes.path)
    for row in boxes.itertuples():
        w, h = Image.open(synth.root / row.path).size
        assert 0 <= row.x0 < row.x1 <= w and 0 <= row.y0 < row.y1 <= h, row
    positive = {p.rsplit("/", 1)[0] for p in _images(synth) if "_positive/" in p}
    assert positive == {p.rsplit("/", 1)[0] for p in boxes.path}, (
        "every abnormal study shows a finding somewhere"
    )


def test_about_forty_percent_of_studies_are_abnormal(synth: SynthResult) -> None:
    plan = make_plan(3000, seed=11)
    assert 0.37 <= np.mean([s.label for s in plan]) <= 0.43
    assert 0.15 <= synth.manifest["abnormal_studies"] / synth.manifest["studies"] <= 0.7


def test_same_seed_gives_the_same_bytes_and_another_seed_does_not(synth: SynthResult, tmp_path: Path) -> None:
    again = generate(tmp_path / "again", patients=PATIENTS, max_side=SIDE, seed=SEED, progress=False)
    assert _tree(again.root) == _tree(synth.root)
    other = generate(tmp_path / "other", patients=6, max_side=SIDE, seed=SEED + 1, progress=False)
    mine = _tree(synth.root)
    assert any(mine.get(k) != v for k, v in _tree(other.root).items() if k.endswith(".png"))


def test_two_workers_write_what_one_worker_writes(synth: SynthResult, tmp_path: Path) -> None:
    parallel = generate(
        tmp_path / "par", patients=PATIENTS, max_side=SIDE, seed=SEED, workers=2, progress=False
    )
    assert _tree(parallel.root) == _tree(synth.root)


def test_rerun_rewrites_identically_and_foreign_folders_are_refused(tmp_path: Path) -> None:
    out = tmp_path / "data"
    generate(out, patients=3, max_side=128, seed=1, progress=False)
    before = _tree(out)
    generate(out, patients=3, max_side=128, seed=1, progress=False)
    assert _tree(out) == before
    with pytest.raises(FileExistsError, match="other settings"):
        generate(out, patients=4, max_side=128, seed=1, progress=False)
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep me")
    with pytest.raises(FileExistsError, match="not written by the synthetic generator"):
        generate(foreign, patients=3, max_side=128, seed=1, progress=False)
    assert sorted(p.name for p in foreign.iterdir()) == ["notes.txt"]


def _abnormal_studies(n: int):
    return [s for s in make_plan(40, seed=5) if s.label][:n]


def test_fracture_lines_are_darker_than_the_bone_they_cross() -> None:
    """Along a fracture the film is darker than the same study drawn without its findings.

    The darkest few percent of each fracture box (the line) are compared; the
    box mean is not used because a displaced fragment also brightens where the
    ends overlap.
    """
    darkest = []
    for study in _abnormal_studies(14):
        views, _ = render_study(5, study, 256)
        clean, _ = render_study(5, study, 256, draw_findings=False)
        for view, twin in zip(views, clean, strict=True):
            for x0, y0, x1, y1, kind in view.boxes:
                if kind == "fracture":
                    darkest.append(np.percentile(view.image[y0:y1, x0:x1] - twin.image[y0:y1, x0:x1], 5))
    assert len(darkest) >= 8
    assert np.mean(np.array(darkest) < -0.01) >= 0.7 and np.median(darkest) < -0.04


def test_abnormal_film_is_its_normal_twin_plus_local_findings() -> None:
    """No shortcut: size, storage, markers, exposure and noise do not depend on the label."""
    for study in _abnormal_studies(6):
        views, _ = render_study(5, study, 192)
        twins, _ = render_study(5, dataclasses.replace(study, label=0), 192)
        assert [v.storage for v in views] == [t.storage for t in twins]
        assert all(not t.boxes for t in twins)
        for view, twin in zip(views, twins, strict=True):
            assert view.image.shape == twin.image.shape
            changed = np.abs(view.image - twin.image) > 2 / 255
            assert changed.mean() < 0.06, f"{study.folder}: {changed.mean():.3f} of the film changed"
            inside = np.zeros_like(changed)
            for x0, y0, x1, y1, _ in view.boxes:
                inside[y0:y1, x0:x1] = True
            if view.boxes:
                assert changed[inside].mean() > changed[~inside].mean()


def test_easy_difficulty_changes_only_the_findings(synth: SynthResult, tmp_path: Path) -> None:
    """`--difficulty easy`: same dataset, obvious findings; normal studies are byte-identical (no shortcut)."""
    from xraylens.cli import main

    out = tmp_path / "easy"
    args = ["data", "synth", str(out), "--patients", str(PATIENTS), "--max-side", str(SIDE)]
    assert main([*args, "--seed", str(SEED), "--difficulty", "easy"]) == 0
    manifest = json.loads((out / "synth_manifest.json").read_text())
    assert synth.manifest["difficulty"] == "realistic" and manifest["difficulty"] == "easy"
    easy, real = _tree(out), _tree(synth.root)
    assert easy.keys() == real.keys()
    for name in real:
        if name.endswith(".csv") and name != "boxes.csv" or "_negative/" in name:
            assert easy[name] == real[name], f"{name} changed with the difficulty"
    positives = [n for n in real if "_positive/" in n and n.endswith(".png")]
    assert positives and any(easy[n] != real[n] for n in positives)
    # every view of an abnormal study shows a finding, and the film changes only around it
    boxes = pd.read_csv(out / "boxes.csv")
    assert set(boxes["path"]) == {n for n in positives if "/._" not in n}
    for study in [s for s in make_plan(PATIENTS, SEED) if s.label][:6]:
        views, _ = render_study(SEED, study, SIDE, difficulty="easy")
        twins, _ = render_study(SEED, dataclasses.replace(study, label=0), SIDE, difficulty="easy")
        for view, twin in zip(views, twins, strict=True):
            assert view.boxes, f"{study.folder}: an easy abnormal view without a finding"
            # a displaced fragment moves as a whole, so the bone beyond the box may shift a little
            changed = np.abs(view.image - twin.image) > 2 / 255
            assert changed.mean() < 0.08, f"{study.folder}: {changed.mean():.3f} of the film changed"
            inside = np.zeros_like(changed)
            for x0, y0, x1, y1, _ in view.boxes:
                inside[y0:y1, x0:x1] = True
            assert changed[inside].mean() > 2 * changed[~inside].mean(), study.folder
    # another difficulty is another dataset: never written over, and unknown values are refused
    with pytest.raises(FileExistsError, match="difficulty easy -> realistic"):
        generate(out, patients=PATIENTS, max_side=SIDE, seed=SEED, progress=False)
    with pytest.raises(ValueError, match="realistic, easy"):
        generate(tmp_path / "x", patients=2, max_side=SIDE, difficulty="hard", progress=False)
    with pytest.raises(SystemExit):  # argparse: invalid choice, listing the valid ones
        main([*args, "--difficulty", "hard"])


def test_findings_restricts_the_kinds_and_leaves_normal_studies_alone(synth: SynthResult, tmp_path: Path) -> None:
    """`--findings hardware` (the demo's data): only hardware is drawn; normal studies are byte-identical."""
    from xraylens.cli import main

    assert synth.manifest["findings"] == ["fracture", "hardware", "lesion"]
    assert set(synth.boxes["kind"]) > {"hardware"}  # the default draws the other kinds too
    out = tmp_path / "hw"
    args = ["data", "synth", str(out), "--patients", str(PATIENTS), "--max-side", str(SIDE), "--seed", str(SEED)]
    assert main([*args, "--findings", "hardware"]) == 0
    manifest = json.loads((out / "synth_manifest.json").read_text())
    assert manifest["findings"] == ["hardware"] and manifest["abnormal_studies"] == synth.manifest["abnormal_studies"]
    boxes = pd.read_csv(out / "boxes.csv")
    assert len(boxes) > 0 and set(boxes["kind"]) == {"hardware"}
    hw, full = _tree(out), _tree(synth.root)
    assert hw.keys() == full.keys()
    for name in full:
        if "_negative/" in name:
            assert hw[name] == full[name], f"{name} changed with the finding kinds"
    # other kinds are another dataset: never written over; unknown kinds are refused by name
    with pytest.raises(FileExistsError, match=r"findings \['hardware'\] -> \['fracture', 'hardware', 'lesion'\]"):
        generate(out, patients=PATIENTS, max_side=SIDE, seed=SEED, progress=False)
    with pytest.raises(ValueError, match="fracture, hardware, lesion; got bone"):
        generate(tmp_path / "x", patients=2, max_side=SIDE, findings=("bone",), progress=False)
    with pytest.raises(SystemExit):
        main([*args, "--findings", "bone"])


def test_is_finished_recognises_exactly_the_dataset_generate_would_write(synth: SynthResult, tmp_path: Path) -> None:
    from xraylens.data.synthetic.writer import is_finished

    same = {"patients": PATIENTS, "max_side": SIDE, "seed": SEED}
    assert is_finished(synth.root, **same)
    assert is_finished(synth.root, **same, findings=["lesion", "fracture", "hardware"])  # order is not a setting
    assert not is_finished(synth.root, **{**same, "patients": PATIENTS + 1})
    assert not is_finished(synth.root, **same, findings=("hardware",))
    assert not is_finished(synth.root, **same, difficulty="easy")
    assert not is_finished(tmp_path / "nothing", **same)


def test_easy_lesions_are_larger_deeper_and_still_focal() -> None:
    """Generator 1.1 drew every easy lesion wider than its bone (a uniformly pale shaft, no edge to see);
    from 1.2 an easy lesion is the realistic one made larger and deeper, but it keeps a margin."""
    from xraylens.data.synthetic.findings import (
        EASY_LESION_ACROSS,
        EASY_LESION_ALONG,
        Lesion,
        make_obvious,
        sample_findings,
    )

    pairs = []
    for seed in range(300):
        for f in sample_findings(np.random.default_rng(seed), "XR_HUMERUS", 2, kinds=("lesion",)):
            if isinstance(f, Lesion):
                pairs.append((f, make_obvious(f)))
    assert len(pairs) > 200
    for real, easy in pairs:
        assert easy.along >= real.along and easy.across >= real.across and easy.depth >= 0.93
        assert easy.along <= max(real.along, EASY_LESION_ALONG) and easy.across <= max(real.across, EASY_LESION_ACROSS)
        assert easy.across < 1.0  # inside the bone's outline: the lesion has an edge across the shaft
    assert np.mean([e.along > r.along for r, e in pairs]) > 0.9
