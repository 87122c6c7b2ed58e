"""Training end to end on tiny data: it learns, resumes, runs as 2 CPU processes (DDP), and its checkpoints load.

Two tiny datasets, each built once per module:

* ``blob_root``: MURA-layout images where every abnormal image carries a bright
  disc. Any working training loop learns it within a few epochs, so the
  learning test fails only when the loop is broken (labels, loss, optimiser),
  never because the built-in generator became harder.
* ``synth_root``: the built-in generator (``xraylens.data.synthetic``), with one
  training PNG truncated so every run meets an unreadable file mid-epoch. Its
  findings are 1-2 px lines at 128 px, too subtle to learn in seconds, so the
  tests on it check mechanics (checkpoints, freezing, DDP metrics), not accuracy.

Configs are the shipped ``scratch_cpu`` preset shrunk with overrides.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from copy import deepcopy
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from xraylens.config import ExperimentConfig, load_config
from xraylens.runfolder import METRIC_COLUMNS

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("one_torch_thread")]
SIZE = 48  # network input side



def tiny_cfg(root: Path, *overrides: str) -> ExperimentConfig:
    return load_config("scratch_cpu", [
        f"data.root={root}", f"data.image_size={SIZE}", "data.num_workers=0", "data.val_fraction=0.25",
        "model.name=resnet18", "train.batch_size=8", "train.lr=0.001", "train.log_every_n_steps=1",
        "train.early_stopping_patience=0", *overrides,
    ])


# ---------------------------------------------------------------- data


def write_blob_mura(root: Path, patients: int = 48, side: int = 48, seed: int = 0) -> Path:
    """A MURA v1.1 tree in which abnormal images show a bright disc (an 'implant') on a noisy 'bone'."""
    rng = np.random.default_rng(seed)
    parts = ("XR_WRIST", "XR_HAND", "XR_ELBOW")
    images: dict[str, list[str]] = {"train": [], "valid": []}
    studies: dict[str, list[str]] = {"train": [], "valid": []}
    for p in range(patients):
        split = "valid" if p % 6 == 5 else "train"
        label = int(rng.random() < 0.5)
        folder = f"MURA-v1.1/{split}/{parts[p % 3]}/patient{p + 1:05d}/study1_{'positive' if label else 'negative'}/"
        (root / folder).mkdir(parents=True, exist_ok=True)
        for view in (1, 2):
            h, w = side, int(rng.integers(side * 3 // 4, side + 1))
            img = rng.normal(0.3, 0.05, (h, w))
            img[:, w // 3 : 2 * w // 3] += 0.25
            if label:
                cy, cx, r = rng.integers(8, h - 8), rng.integers(8, w - 8), rng.uniform(3, 5)
                yy, xx = np.mgrid[:h, :w]
                img[(yy - cy) ** 2 + (xx - cx) ** 2 <= r * r] = 1.0
            Image.fromarray((np.clip(img, 0, 1) * 255).astype(np.uint8)).save(root / folder / f"image{view}.png")
            images[split].append(f"{folder}image{view}.png")
        studies[split].append(f"{folder},{label}")
    for split in images:
        (root / "MURA-v1.1" / f"{split}_image_paths.csv").write_text("\n".join(images[split]) + "\n")
        (root / "MURA-v1.1" / f"{split}_labeled_studies.csv").write_text("\n".join(studies[split]) + "\n")
    return root


@pytest.fixture(scope="module")
def blob_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_blob_mura(tmp_path_factory.mktemp("blob") / "mura")


@pytest.fixture(scope="module")
def synth_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from xraylens.data.synthetic import generate

    root = generate(tmp_path_factory.mktemp("synth") / "synth", patients=40, max_side=128, seed=3,
                    workers=1, progress=False).root
    victim = sorted((root / "MURA-v1.1" / "train").glob("XR_*/patient*/study*/image1.png"))[-1]
    data = victim.read_bytes()
    victim.write_bytes(data[: len(data) // 2])  # PNG magic intact: indexed, then unreadable mid-epoch
    return root


# ---------------------------------------------------------------- learning and the run folder


@pytest.fixture(scope="module")
def learned(blob_root: Path, tmp_path_factory: pytest.TempPathFactory):
    from xraylens.training import fit

    cfg = tiny_cfg(blob_root, "train.epochs=3")
    return cfg, fit(cfg, tmp_path_factory.mktemp("runs") / "blob", progress=False)


def test_training_learns(learned) -> None:
    _, result = learned
    table = pd.read_csv(result.run_dir / "metrics.csv")
    assert table["train_loss"].iloc[-1] < table["train_loss"].iloc[0]
    # Measured: resnet18 reaches validation AUROC 1.0 on this set by epoch 1; 0.8 leaves room for noise.
    assert table["val_auroc"].max() > 0.8
    assert result.best_val_loss == pytest.approx(table["val_loss"].min(), rel=1e-5)


def test_run_folder_holds_config_metrics_plot_logs_and_checkpoints(learned) -> None:
    cfg, result = learned
    run = result.run_dir
    assert load_config(run / "config.yaml") == cfg
    table = pd.read_csv(run / "metrics.csv")
    assert tuple(table.columns) == METRIC_COLUMNS
    assert table["epoch"].tolist() == list(range(cfg.train.epochs)) and result.epochs_run == cfg.train.epochs
    assert table.notna().all().all()
    assert table["lr"].iloc[0] == pytest.approx(cfg.train.lr)
    assert (run / "training_history.png").stat().st_size > 1000
    assert list((run / "tensorboard").rglob("events.out.tfevents.*"))
    checkpoints = run / "checkpoints"
    top_k = sorted(checkpoints.glob("epoch*.ckpt"))
    assert 1 <= len(top_k) <= cfg.train.save_top_k
    assert result.last_checkpoint == checkpoints / "last.ckpt" and result.best_checkpoint == checkpoints / "best.ckpt"
    lowest = min(top_k, key=lambda p: float(p.stem.split("val_loss")[1]))
    assert (checkpoints / "best.ckpt").read_bytes() == lowest.read_bytes()
    assert not list(run.rglob("*.tmp"))


def test_resume_continues_the_epoch_count_and_optimizer_state(learned, tmp_path: Path) -> None:
    from xraylens.training import fit

    cfg, first = learned
    run = tmp_path / "run"
    shutil.copytree(first.run_dir, run)
    before = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)
    longer = tiny_cfg(Path(cfg.data.root), f"train.epochs={cfg.train.epochs + 1}")
    result = fit(longer, run, resume=run / "checkpoints" / "last.ckpt", progress=False)
    after = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)
    steps_per_epoch = before["global_step"] // cfg.train.epochs
    assert after["epoch"] == before["epoch"] + 1 == cfg.train.epochs
    assert after["global_step"] == before["global_step"] + steps_per_epoch
    # Adam's step counter went on from the restored state instead of starting again at 0.
    assert int(after["optimizer_states"][0]["state"][0]["step"]) == after["global_step"]
    table = pd.read_csv(run / "metrics.csv")
    assert table["epoch"].tolist() == list(range(cfg.train.epochs + 1)) and result.epochs_run == cfg.train.epochs + 1
    old = pd.read_csv(first.run_dir / "metrics.csv")
    pd.testing.assert_frame_equal(table.iloc[: len(old)].reset_index(drop=True), old)
    assert len(list((run / "tensorboard").iterdir())) == 2  # one version per start


def test_a_finished_run_is_never_overwritten(learned) -> None:
    from xraylens.training import RunExistsError, fit

    cfg, result = learned
    with pytest.raises(RunExistsError, match="--resume"):
        fit(cfg, result.run_dir, progress=False)


# ---------------------------------------------------------------- checkpoints and the frozen backbone


def test_checkpoint_describes_itself_and_reproduces_the_trained_net(synth_root: Path, tmp_path: Path) -> None:
    """Also the seed's recipe: epoch 0 trains only the head, epoch 1 everything at lr * finetune_lr_factor."""
    from xraylens.data.preprocess import Preprocessing
    from xraylens.datamodule import RadiographDataModule, load_training_data, loss_weights
    from xraylens.models import backbone_parameters, create_model_from_config, head_layer, load_checkpoint
    from xraylens.runfolder import build_trainer
    from xraylens.training import RadiographClassifier

    cfg = tiny_cfg(synth_root, "train.epochs=2", "train.freeze_backbone_epochs=1", "train.finetune_lr_factor=0.1",
                   "train.limit_train_batches=3", "train.limit_val_batches=2", "train.save_top_k=2")
    data = load_training_data(cfg, progress=False)
    net = create_model_from_config(cfg.model)
    initial = deepcopy(net.state_dict())
    module = RadiographClassifier(net, cfg, loss_weights(data.train), data.summary())
    trainer = build_trainer(cfg, tmp_path, progress=False)
    trainer.fit(module, datamodule=RadiographDataModule(cfg, data))

    name = cfg.model.name
    head_names = {n for n, p in net.named_parameters() if any(p is q for q in head_layer(net, name).parameters())}
    backbone_names = {n for n, p in net.named_parameters() if any(p is q for q in backbone_parameters(net, name))}
    frozen = torch.load(next((tmp_path / "checkpoints").glob("epoch000-*.ckpt")), weights_only=True)
    tuned = torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=True)
    assert all(torch.equal(frozen["state_dict"][f"net.{n}"], initial[n]) for n in backbone_names)
    assert not all(torch.equal(frozen["state_dict"][f"net.{n}"], initial[n]) for n in head_names)
    assert not all(torch.equal(tuned["state_dict"][f"net.{n}"], initial[n]) for n in backbone_names)
    assert [g["lr"] for g in frozen["optimizer_states"][0]["param_groups"]] == [cfg.train.lr, 0.0]
    assert [g["lr"] for g in tuned["optimizer_states"][0]["param_groups"]] == pytest.approx([cfg.train.lr * 0.1] * 2)

    loaded = load_checkpoint(tmp_path / "checkpoints" / "last.ckpt")  # torch.load(weights_only=True) inside
    assert loaded.meta.model == cfg.model
    assert loaded.meta.preprocessing == Preprocessing.for_channels(SIZE, 1)
    assert loaded.meta.experiment["train"]["freeze_backbone_epochs"] == 1
    summary = loaded.meta.summary
    assert summary["epochs"] == 2 and summary["train_images"] == len(data.train)
    assert summary["val_images"] == len(data.val) and summary["data_root"] == str(data.root)
    assert summary["best_val_loss"] is not None
    x = torch.randn(4, 1, SIZE, SIZE)
    module.net.eval()
    with torch.no_grad():
        torch.testing.assert_close(loaded.model(x), module.net(x.contiguous(memory_format=torch.channels_last)),
                                   rtol=1e-4, atol=1e-5)


@pytest.mark.filterwarnings("ignore:.*reference is not registered on the model")  # a bare module, no Trainer
def test_unreadable_images_are_left_out_of_loss_and_metrics() -> None:
    import torch.nn.functional as F

    from xraylens.config import BODY_PARTS
    from xraylens.models import create_model_from_config
    from xraylens.training import RadiographClassifier

    cfg = load_config("scratch_cpu", ["model.name=resnet18", "train.channels_last=false"])
    weights = {"XR_WRIST": [0.25, 0.75]}
    module = RadiographClassifier(create_model_from_config(cfg.model), cfg, weights)
    module.eval()
    batch = {
        "image": torch.randn(4, 1, 32, 32),
        "label": torch.tensor([1.0, 0.0, 0.0, 1.0]),
        "ok": torch.tensor([True, False, True, False]),
        "part": torch.full((4,), BODY_PARTS.index("XR_WRIST")),
    }
    loss = module._step(batch, "val")
    with torch.no_grad():
        logits = module.net(batch["image"]).squeeze(1)
    per_image = F.binary_cross_entropy_with_logits(logits, batch["label"], reduction="none")
    expected = (0.75 * per_image[0] + 0.25 * per_image[2]) / 2  # abnormal weight, normal weight; 2 readable
    torch.testing.assert_close(loss, expected, rtol=1e-5, atol=1e-6)
    assert sum(len(t) for t in module.val_auroc.target) == 2

    nothing = dict(batch, ok=torch.zeros(4, dtype=torch.bool))
    module.train()
    empty = module._step(nothing, "train")
    assert empty.item() == 0.0
    empty.backward()  # no crash, and DDP would still see a gradient for every parameter
    assert all(p.grad is not None for p in module.parameters())


def test_loss_weights_follow_the_mura_paper() -> None:
    from xraylens.datamodule import loss_weights

    table = pd.DataFrame({"body_part": ["XR_WRIST"] * 4 + ["XR_HAND"] * 2,
                          "label": [1, 0, 0, 0, 1, 1]})
    weights = loss_weights(table)
    assert weights["XR_WRIST"] == pytest.approx([0.25, 0.75])  # [w_normal = A/(A+N), w_abnormal = N/(A+N)]
    assert weights["XR_HAND"] == [0.5, 0.5]  # one class only: the formula would zero it out
    assert weights["XR_ELBOW"] == [1.0, 1.0]  # absent part
    assert set(loss_weights(table, weighted=False)["XR_WRIST"]) == {1.0}


# ---------------------------------------------------------------- the CLI, DDP included


def _xraylens() -> str:
    script = Path(sys.executable).with_name("xraylens")
    return str(script) if script.exists() else shutil.which("xraylens") or "xraylens"


def test_ddp_on_two_cpu_processes_via_the_cli(synth_root: Path, tmp_path: Path) -> None:
    """Also: validation metrics are over every rank's images, exactly once each (no per-rank averages)."""
    run = tmp_path / "ddp"
    command = [
        _xraylens(), "train", "--data", str(synth_root), "--out", str(run), "--config", "scratch_cpu",
        "--set", "train.epochs=1", f"data.image_size={SIZE}", "data.num_workers=0", "data.val_fraction=0.3",
        "model.name=resnet18", "train.batch_size=8", "train.limit_train_batches=3",
        "--accelerator", "cpu", "--devices", "2", "--strategy", "ddp", "--quiet",
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    done = subprocess.run(command, capture_output=True, text=True, timeout=240, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    assert (run / "checkpoints" / "best.ckpt").is_file()
    assert f"best checkpoint: {run / 'checkpoints' / 'best.ckpt'}" in done.stdout
    row = pd.read_csv(run / "metrics.csv").iloc[-1]
    loss, auroc, n = _single_process_validation(run / "checkpoints" / "best.ckpt")
    # An odd count of readable images is where a padding sampler would count one twice.
    assert n % 2 == 1
    assert row["val_loss"] == pytest.approx(loss, rel=1e-4)
    assert row["val_auroc"] == pytest.approx(auroc, abs=1e-4)


def _single_process_validation(checkpoint: Path) -> tuple[float, float, int]:
    """Weighted validation loss and AUROC of a checkpoint, recomputed here in one process."""
    import torch.nn.functional as F
    from sklearn.metrics import roc_auc_score

    from xraylens.config import BODY_PARTS, ExperimentConfig, from_dict
    from xraylens.data.dataset import RadiographDataset
    from xraylens.datamodule import load_training_data
    from xraylens.models import load_checkpoint

    raw = torch.load(checkpoint, weights_only=True)
    cfg = from_dict(ExperimentConfig, raw["xraylens"]["experiment"])
    weights = raw["hyper_parameters"]["loss_weights"]
    loaded = load_checkpoint(checkpoint)
    val = load_training_data(cfg, progress=False).val
    dataset = RadiographDataset(val, loaded.meta.preprocessing)
    samples = [dataset[i] for i in range(len(dataset))]
    kept = [(s, part) for s, part in zip(samples, val["body_part"], strict=True) if s["ok"]]
    x = torch.stack([s["image"] for s, _ in kept])
    y = torch.stack([s["label"] for s, _ in kept])
    with torch.no_grad():
        logits = loaded.model(x).squeeze(1)
    w = torch.tensor([weights.get(part, [1.0, 1.0])[int(s["label"])] for s, part in kept])
    loss = (F.binary_cross_entropy_with_logits(logits, y, reduction="none") * w).mean()
    assert set(weights) <= set(BODY_PARTS)
    return float(loss), float(roc_auc_score(y.numpy(), logits.numpy())), len(kept)


def test_cli_reports_weight_and_data_problems_in_one_line(blob_root: Path, tmp_path: Path, capsys) -> None:
    from xraylens.cli import main

    code = main(["train", "--data", str(blob_root), "--out", str(tmp_path / "a"), "--config", "scratch_cpu",
                 "--weights", str(tmp_path / "missing.pth"), "--quiet"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1
    assert "missing.pth" in err and err.startswith("xraylens train: error:")

    code = main(["train", "--data", str(tmp_path / "nowhere"), "--out", str(tmp_path / "b"), "--quiet"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "nowhere" in err and len(err.splitlines()) == 1
