"""Reruns never overwrite silently: every command refuses an earlier run's output unless --overwrite is given.

With --overwrite the earlier run's own files are removed first, so the folder
holds one run's results, never a mixture; files the command does not write are
left alone.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from xraylens.cli import main

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from model_helpers import tiny_checkpoint

    return tiny_checkpoint(tmp_path_factory.mktemp("ckpt") / "m.ckpt")


def _refused_then_replaced(argv: list[str], out: Path, capsys, written: str, stale: str | None = None) -> None:
    assert main(argv) == 0, capsys.readouterr().err
    first = (out / written).stat().st_mtime_ns if out.is_dir() else out.stat().st_mtime_ns
    if stale is not None:
        (out / stale).write_text("from an older run")
    (out.parent / "keep.txt").write_text("not ours")
    capsys.readouterr()
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert str(out) in err and "--overwrite" in err and len(err.splitlines()) == 1, err
    unchanged = (out / written).stat().st_mtime_ns if out.is_dir() else out.stat().st_mtime_ns
    assert unchanged == first  # refused before touching anything
    assert main([*argv, "--overwrite"]) == 0
    if stale is not None:
        assert not (out / stale).exists()  # the earlier run's file that this run did not write is gone
    assert (out.parent / "keep.txt").exists()


def test_evaluate(tiny_mura, checkpoint: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "eval"
    argv = ["evaluate", str(checkpoint), "--data", str(tiny_mura.root), "--out", str(out), "--bootstrap", "0",
            "--quiet"]
    _refused_then_replaced(argv, out, capsys, "metrics.json", stale="per_kind.md")


def test_explain_and_explain_eval(tiny_mura, checkpoint: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "explain"
    argv = ["explain", str(checkpoint), "--data", str(tiny_mura.root), "--out", str(out), "--quiet"]
    _refused_then_replaced(argv, out, capsys, "explanations.csv", stale="skipped.csv")
    boxes = tmp_path / "boxes.csv"
    pd.DataFrame([{"path": r["path"], "x0": 0, "y0": 0, "x1": 4, "y1": 4, "kind": "fracture"}
                  for r in tiny_mura.images if r["split"] == "valid" and r["label"] == 1]).to_csv(boxes, index=False)
    out = tmp_path / "xeval"
    argv = ["explain-eval", str(checkpoint), "--data", str(tiny_mura.root), "--boxes", str(boxes), "--out",
            str(out), "--methods", "gradcam", "--faithfulness-images", "0", "--sanity-images", "0", "--quiet"]
    _refused_then_replaced(argv, out, capsys, "localization.json", stale="sanity.png")


def test_export_and_predict_out(checkpoint: Path, tmp_path: Path, capsys) -> None:
    from xraylens.output_dir import claim_output_file

    out = tmp_path / "m.onnx"
    out.write_bytes(b"an earlier export")  # exporting twice costs ~20 s here: the refusal comes first
    assert main(["export", str(checkpoint), "--out", str(out), "--no-check"]) == 2
    err = capsys.readouterr().err
    assert str(out) in err and "--overwrite" in err and out.read_bytes() == b"an earlier export"
    assert claim_output_file(out, overwrite=True, what="ONNX export") == out
    image = tmp_path / "x.png"
    Image.fromarray(np.zeros((20, 20), np.uint8)).save(image)
    out = tmp_path / "preds.csv"
    _refused_then_replaced(["predict", str(checkpoint), str(image), "--out", str(out), "--no-progress"], out,
                           capsys, ".")


def test_train_refuses_an_earlier_run_and_overwrite_clears_only_its_files(tmp_path: Path, capsys) -> None:
    from xraylens.training import RUN_OUTPUTS, _check_fresh

    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    (run / "checkpoints" / "last.ckpt").write_bytes(b"an earlier run")
    (run / "metrics.csv").write_text("epoch\n0\n")
    (run / "notes.md").write_text("mine")
    assert main(["train", "--data", str(tmp_path), "--out", str(run), "--config", "scratch_cpu", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "already holds a training run" in err and "--resume" in err and "--overwrite" in err
    assert (run / "checkpoints" / "last.ckpt").read_bytes() == b"an earlier run"
    _check_fresh(run, overwrite=True)
    assert sorted(p.name for p in run.iterdir()) == ["notes.md"]
    assert "checkpoints" in RUN_OUTPUTS and "tensorboard" in RUN_OUTPUTS
