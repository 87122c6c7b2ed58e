"""Summary counts equal what the fixture wrote; the CLI prints them as JSON or a table."""

from __future__ import annotations

import json
import statistics

import pytest

from xraylens.cli import main
from xraylens.config import BODY_PARTS
from xraylens.data.mura import index_dataset
from xraylens.data.summary import format_summary, summarize

KEYS = ("images", "studies", "patients", "abnormal_studies")


def test_counts_match_fixture(tiny_mura) -> None:
    summary = summarize(index_dataset(tiny_mura.root, progress=False), progress=False)
    assert summary["source"] == "csv"
    assert set(summary["splits"]) == {"train", "valid"}
    for split, counts in summary["splits"].items():
        for key in KEYS:
            assert counts[key] == tiny_mura.count(split, key), (split, key)
        for part, part_counts in counts["by_body_part"].items():
            assert part in BODY_PARTS
            for key in KEYS:
                assert part_counts[key] == tiny_mura.count(split, key, part), (split, part, key)
    assert summary["total"]["images"] == len(tiny_mura.images)
    assert summary["problems"] == [] and summary["problem_counts"] == {}
    json.dumps(summary)  # JSON-able as it is


def test_image_size_stats_from_headers(tiny_mura) -> None:
    sizes = summarize(index_dataset(tiny_mura.root, progress=False), progress=False)["image_size"]
    heights = [r["height"] for r in tiny_mura.images]
    widths = [r["width"] for r in tiny_mura.images]
    assert sizes["images"] == len(tiny_mura.images)
    assert sizes["height"] == {"min": min(heights), "median": statistics.median(heights), "max": max(heights)}
    assert sizes["width"] == {"min": min(widths), "median": statistics.median(widths), "max": max(widths)}


def test_problems_listed_and_counted(tiny_mura) -> None:
    tiny_mura.write("MURA-v1.1/valid/XR_WRIST/patient11185/study1_positive/._image1.png", b"junk")
    summary = summarize(index_dataset(tiny_mura.root, progress=False), sizes=False, progress=False)
    assert summary["image_size"] is None
    assert summary["problem_counts"] == {"hidden_file": 1}
    assert summary["problems"][0]["path"].endswith("._image1.png")
    text = format_summary(summary)
    assert "hidden_file" in text and "._image1.png" in text


def test_format_summary_is_a_table(tiny_mura) -> None:
    text = format_summary(summarize(index_dataset(tiny_mura.root, progress=False), progress=False))
    lines = text.splitlines()
    wrist = next(line for line in lines if line.startswith("train") and "XR_WRIST" in line)
    assert wrist.split()[2:5] == [str(tiny_mura.count("train", k, "XR_WRIST")) for k in KEYS[:3]]
    assert "problems: none" in text and "median" in text


def test_cli_summary_json(tiny_mura, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["data", "summary", str(tiny_mura.root), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    for split in ("train", "valid"):
        for key in KEYS:
            assert summary["splits"][split][key] == tiny_mura.count(split, key)


def test_cli_summary_body_part_filter(tiny_mura, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["data", "summary", str(tiny_mura.mura_dir), "--json", "--body-part", "wrist"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["total"]["images"] == sum(r["body_part"] == "XR_WRIST" for r in tiny_mura.images)


def test_cli_errors_are_one_line_exit_2(tiny_mura, tmp_path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["data", "summary", str(tmp_path / "nowhere")]) == 2
    assert "no such folder" in capsys.readouterr().err
    tiny_mura.write("MURA-v1.1/train/XR_HAND/patient00004/study1_positive/image9.png", b"")
    assert main(["data", "summary", str(tiny_mura.root), "--strict"]) == 2
    err = capsys.readouterr().err
    assert "strict" in err and "empty_file: 1" in err


def test_summary_of_synth_output_reports_the_exact_generated_counts(tmp_path, capsys):
    """The issue's done criterion: `data summary --json` on `data synth` output equals the manifest."""
    out = tmp_path / "synth"
    assert main(["data", "synth", str(out), "--patients", "12", "--max-side", "96", "--seed", "3"]) == 0
    printed = capsys.readouterr().out
    assert str(out) in printed
    manifest = json.loads((out / "synth_manifest.json").read_text())
    assert main(["data", "summary", str(out), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    for split, made in manifest["splits"].items():
        seen = summary["splits"][split]
        for key in ("images", "studies", "patients", "abnormal_studies"):
            assert seen[key] == made[key], (split, key)
        for part, counts in made["body_parts"].items():
            if counts["images"] == 0:
                assert seen["by_body_part"].get(part, {}).get("images", 0) == 0
                continue
            for key in ("images", "studies", "patients", "abnormal_studies"):
                assert seen["by_body_part"][part][key] == counts[key], (split, part, key)
    # the planted AppleDouble junk is reported, not counted as images
    kinds = [p["kind"] for p in summary["problems"]]
    assert kinds.count("hidden_file") == manifest["junk_files"]
    with pytest.raises(SystemExit):
        main(["data", "synth", str(tmp_path / "other"), "--patients", "0"])


def test_data_synth_quiet_prints_no_progress_bar(tmp_path, capsys) -> None:
    from xraylens.cli import main

    args = ["data", "synth", str(tmp_path / "loud"), "--patients", "3", "--max-side", "64"]
    assert main(args) == 0
    assert "synthetic studies" in capsys.readouterr().err
    assert main(["data", "synth", str(tmp_path / "quiet"), "--patients", "3", "--max-side", "64", "--quiet"]) == 0
    captured = capsys.readouterr()
    assert "synthetic studies" not in captured.err and "wrote synthetic MURA" in captured.out
