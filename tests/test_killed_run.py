"""Runs that survive: SIGKILL mid-epoch then `--resume` gives the uninterrupted result; a full disk loses nothing.

One tiny deterministic recipe (``train.deterministic=true``, a step checkpoint
every 2 optimiser steps, resnet18 at 32 px, 24 blob patients: 7 steps an
epoch, 2 epochs) is trained three ways: uninterrupted here; in a subprocess
that is SIGKILLed in the middle of epoch 1, right after the step-8 checkpoint,
then resumed with ``xraylens train --resume``; and here again with the disk
"filling up" during a later checkpoint. Tolerance: the resumed run's metrics
and final weights must equal the uninterrupted run's to 1e-6 (measured: they
are identical to the bit, on one process with data.num_workers=0).
"""

from __future__ import annotations

import errno
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import torch

from xraylens.config import load_config

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("one_torch_thread")]

OVERRIDES = ["data.image_size=32", "data.num_workers=0", "data.val_fraction=0.25", "model.name=resnet18",
             "train.batch_size=4", "train.lr=0.001", "train.log_every_n_steps=1", "train.early_stopping_patience=0",
             "train.epochs=2", "train.deterministic=true", "train.checkpoint_every_n_steps=2"]
TOLERANCE = 1e-6
KILL_AT_STEP = 8  # epoch 0 has 7 steps: step 8 is the first of epoch 1, and a step checkpoint was just written


def cfg_for(root: Path):
    return load_config("scratch_cpu", [f"data.root={root}", *OVERRIDES])


@pytest.fixture(scope="module")
def blob_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from test_training import write_blob_mura

    return write_blob_mura(tmp_path_factory.mktemp("blob") / "mura", patients=24, side=32)


@pytest.fixture(scope="module")
def uninterrupted(blob_root: Path, tmp_path_factory: pytest.TempPathFactory):
    from xraylens.training import fit

    before = torch.get_num_threads()
    torch.set_num_threads(1)  # as the killed run: sums over other thread counts round differently
    try:
        return fit(cfg_for(blob_root), tmp_path_factory.mktemp("runs") / "whole", progress=False)
    finally:
        torch.set_num_threads(before)


_KILLED_RUN = """
import sys, time
from pathlib import Path
import lightning as L, torch
from xraylens.config import load_config
from xraylens.training import fit

root, run, marker, step = Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3]), int(sys.argv[4])
overrides = sys.argv[5:]
torch.set_num_threads(1)

class StallAfterStep(L.Callback):
    # Hold the run at the start of a batch (mid-epoch) until the test kills it: a deterministic place to die.
    def on_train_batch_start(self, trainer, module, batch, batch_idx):
        if trainer.global_step == step:
            marker.touch()
            time.sleep(600)

fit(load_config("scratch_cpu", [f"data.root={root}", *overrides]), run, progress=False,
    callbacks=[StallAfterStep()])
"""


def _kill_mid_epoch(root: Path, run: Path, tmp_path: Path) -> None:
    marker = tmp_path / "stalled"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    command = [sys.executable, "-c", _KILLED_RUN, str(root), str(run), str(marker), str(KILL_AT_STEP), *OVERRIDES]
    proc = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 240
        while not marker.exists():
            assert proc.poll() is None, f"the run ended before it could be killed:\n{proc.stderr.read()[-3000:]}"
            assert time.monotonic() < deadline, "the run never reached the kill point"
            time.sleep(0.1)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == -signal.SIGKILL


def test_a_run_killed_mid_epoch_resumes_to_the_uninterrupted_result(blob_root: Path, uninterrupted,
                                                                     tmp_path: Path) -> None:
    from xraylens.cli import main

    run = tmp_path / "killed"
    _kill_mid_epoch(blob_root, run, tmp_path)
    last = run / "checkpoints" / "last.ckpt"
    saved = torch.load(last, weights_only=True)
    assert (saved["global_step"], saved["epoch"]) == (KILL_AT_STEP, 1)  # mid-epoch 1, not an epoch end
    assert saved["loops"]["fit_loop"]["state_dict"]["combined_loader"] == [{"epoch": 1, "batches": 1}]
    assert not list(run.rglob("*.tmp"))

    assert main(["train", "--out", str(run), "--resume", str(last), "--quiet"]) == 0

    whole = pd.read_csv(uninterrupted.run_dir / "metrics.csv")
    resumed = pd.read_csv(run / "metrics.csv")
    assert resumed["epoch"].tolist() == whole["epoch"].tolist() == [0, 1]
    pd.testing.assert_frame_equal(resumed, whole, check_exact=False, rtol=0, atol=TOLERANCE)
    a = torch.load(uninterrupted.last_checkpoint, weights_only=True)
    b = torch.load(last, weights_only=True)
    assert a["global_step"] == b["global_step"] == 14
    for name, tensor in a["state_dict"].items():
        torch.testing.assert_close(b["state_dict"][name], tensor, rtol=0, atol=TOLERANCE, msg=name)


class _DiskFillsUp:
    """``open`` for the atomic writer: from the ``fail_at``-th checkpoint on, writes stop with ENOSPC midway."""

    def __init__(self, fail_at: int) -> None:
        self.fail_at, self.opened = fail_at, 0

    def __call__(self, file, mode="r", *args, **kwargs):
        handle = open(file, mode, *args, **kwargs)  # noqa: SIM115 - returned to the caller, who closes it
        if mode == "wb" and ".ckpt." in Path(file).name:
            self.opened += 1
            if self.opened >= self.fail_at:
                return _FullDisk(handle)
        return handle


class _FullDisk:
    def __init__(self, handle) -> None:
        self.handle, self.written = handle, 0

    def write(self, data) -> int:
        if self.written > 4096:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        self.written += len(data)
        return self.handle.write(data)

    def __getattr__(self, name):
        return getattr(self.handle, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.handle.close()


def test_a_full_disk_names_the_file_and_keeps_the_last_good_checkpoint(blob_root: Path, uninterrupted,
                                                                      tmp_path: Path, monkeypatch) -> None:
    from xraylens.atomic import AtomicWriteError
    from xraylens.models import load_checkpoint
    from xraylens.training import fit

    run = tmp_path / "full"
    # checkpoint writes in order: last.ckpt at steps 2, 4, 6, then at the end of epoch 0 (step 7) the top-k
    # file and last.ckpt: the 5th write, last.ckpt at the epoch's end, is the one the full disk cuts short
    monkeypatch.setattr("xraylens.atomic.open", _DiskFillsUp(fail_at=5), raising=False)
    with pytest.raises(AtomicWriteError) as caught:
        fit(cfg_for(blob_root), run, progress=False)
    message = str(caught.value)
    assert "No space left on device" in message and "disk is full" in message and "is intact" in message
    assert str(run / "checkpoints") in message  # the file that could not be written, by its path
    monkeypatch.undo()
    assert not list(run.rglob("*.tmp")) and not list(run.rglob(".*.ckpt.*"))  # no half-written file left
    last = run / "checkpoints" / "last.ckpt"
    good = torch.load(last, weights_only=True)
    assert good["global_step"] == 6  # the last checkpoint that was written whole, unharmed
    assert load_checkpoint(last).meta.model.name == "resnet18"


def test_cli_reports_a_full_disk_in_one_line(tmp_path: Path, monkeypatch, capsys) -> None:
    from xraylens.cli import main

    def no_space(*args, **kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr("xraylens.atomic.os.fsync", no_space)
    (tmp_path / "data").mkdir()
    assert main(["data", "synth", str(tmp_path / "data" / "synth"), "--patients", "2", "--max-side", "64",
                 "--quiet"]) != 0
    err = capsys.readouterr().err.strip()
    assert err.startswith("xraylens data: error: cannot write ") and len(err.splitlines()) == 1
    assert "No space left on device" in err
