"""The README's main command, end to end at the smallest size that still exercises every stage."""

import json

import pytest

from xraylens.cli import main

pytestmark = pytest.mark.slow


def test_demo_writes_every_output_and_reruns_without_retraining(tmp_path, capsys):
    out = tmp_path / "demo"
    args = ["demo", "--out", str(out), "--patients", "24", "--max-side", "128", "--workers", "1", "--fast",
            "--no-progress", "--set", "data.image_size=64", "--set", "train.epochs=1",
            "--set", "data.num_workers=0"]
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "study-level AUROC" in printed and "not a medical device" in printed
    assert f"report:     {out / 'report.html'}" in printed and f"xraylens serve {out}" in printed
    assert len(printed.strip().splitlines()) <= 15

    for rel in ["data/boxes.csv", "data/synth_manifest.json", "run/config.yaml", "run/metrics.csv",
                "run/training_history.png", "run/checkpoints/best.ckpt", "run/checkpoints/last.ckpt",
                "eval/metrics.json", "eval/per_body_part.md", "eval/roc.png", "eval/sample_predictions.png",
                "explain_eval/localization.json", "explain_eval/report.md",
                "heatmaps/explanations.csv", "heatmaps/boxes.json", "demo_summary.json", "report.md", "report.html"]:
        assert (out / rel).is_file(), rel
    manifest = json.loads((out / "data/synth_manifest.json").read_text())
    assert manifest["findings"] == ["fracture", "hardware", "lesion"] and manifest["difficulty"] == "easy"
    summary = json.loads((out / "demo_summary.json").read_text())
    assert set(summary["seconds"]) == {"data", "train", "evaluate", "explain-eval", "explain"}
    assert summary["report_html"] == str(out / "report.html") and summary["report_md"] == str(out / "report.md")
    html = (out / "report.html").read_text()
    assert html.count("<img ") >= 9 and html.count('<img src="data:image/png;base64,') == html.count("<img ")
    assert "](run/training_history.png)" in (out / "report.md").read_text()
    assert list((out / "heatmaps").rglob("*_overlay.png"))

    # A rerun reuses the data and the finished run: the checkpoint is not rewritten.
    stamp = (out / "run/checkpoints/best.ckpt").stat().st_mtime_ns
    assert main(args) == 0
    assert (out / "run/checkpoints/best.ckpt").stat().st_mtime_ns == stamp

    # Different training settings into the same folder are refused, not mixed in.
    assert main([*args, "--set", "train.lr=0.5"]) == 2
    assert "other settings" in capsys.readouterr().err
    # So is other synthetic data: the dataset in the folder is never rewritten with other findings.
    assert main([*args, "--findings", "hardware"]) == 2
    assert "findings ['fracture', 'hardware', 'lesion'] -> ['hardware']" in capsys.readouterr().err
