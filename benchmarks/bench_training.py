"""Training speed on this machine: bare model steps per precision and memory layout, and the real loop against them.

Part 1, bare steps: forward + BCE on the logit + backward + optimiser step on
random tensors already in memory, per model and mode (fp32 eager,
channels_last, bf16 autocast, bf16 autocast + channels_last; ratio to fp32):

  demo-finetune  the demo's mil_efficientnet_lite0 trained whole at --demo-size (512) px, batch --demo-batch
  demo-head      its cached-features step (train.backbone=cached): the MIL head on stored (B, 112, S/16, S/16)
                 features, batch 32 as in demo_cpu.yaml
  mobilenet_v2, resnet18   from random weights at --size px, batch --batch (scratch_cpu-like)

Part 2, loop vs bare: ``xraylens.training.fit`` (the real Lightning loop: data
module, loader workers, augmentation, metrics, CSV + TensorBoard logging,
checkpoints) on a synthetic dataset of --loop-patients patients, timed from
inside by a callback, against the bare step of the same model, batch, size and
optimiser measured in the same run (before and after the fit, averaged). Epoch 0
(worker start-up) is left out.

  steps       the time Lightning spends from a batch's arrival to the end of its step (hooks, logging, optimiser)
  epoch       + waiting for the loader between steps: the in-epoch training rate
  + val/ckpt  + validation, checkpoints and the history figure at the end of every epoch
  fit()       all training images over the whole call: indexing, set-up (frozen features), every epoch

Loops: scratch-png (scratch_cpu at --loop-size, decoding every PNG), scratch-cache
(the same over the pre-resized cache), demo-cached (demo_cpu: frozen features at
--demo-size computed once, then head epochs) and, not by default, demo-finetune
(demo_cpu fine-tuned whole: slow on a CPU). Goal: the epoch rate within 5% of bare.

Usage: python benchmarks/bench_training.py [--bare demo-finetune demo-head mobilenet_v2 resnet18]
           [--modes fp32 channels_last bf16 bf16+channels_last] [--size 224] [--batch 8]
           [--demo-size 512] [--demo-batch 2] [--loops scratch-png scratch-cache demo-cached]
           [--loop-patients 60] [--loop-epochs 3] [--loop-size 128] [--loop-batch 16] [--repeats 3] [--threads 2]
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import benchkit as kit
import lightning as L
import torch

import xraylens.training as training
from xraylens.config import ExperimentConfig
from xraylens.data.cache import build_cache
from xraylens.models import create_model, head_parameters

BARE = ("demo-finetune", "demo-head", "mobilenet_v2", "resnet18")
DEMO_MODEL = "mil_efficientnet_lite0"
LOOP_RATES = ("steps", "epoch", "+ val/ckpt", "fit()")
DEMO_HEAD_BATCH = 32  # demo_cpu.yaml's train.batch_size


def bare_step(name: str, size: int, batch: int, mode: str, *, head_only: bool = False,
              optimizer: str = "adamw", lr: float = 1e-3) -> Callable[[], int]:
    """A fresh random-weight model's training step in ``mode``; ``head_only``: the MIL head on stored features."""
    torch.manual_seed(0)
    model = create_model(name, pooling="topk" if name.startswith("mil_") else "avg").train()
    if kit.MODES[mode][0]:
        model = model.to(memory_format=torch.channels_last)
    labels = (torch.rand(batch) < 0.5).float()
    if not head_only:
        return kit.train_step(model, list(model.parameters()), torch.randn(batch, 1, size, size), labels,
                              mode=mode, optimizer=optimizer, lr=lr)
    with torch.no_grad():
        shape = model.features(torch.zeros(1, 1, size, size)).shape[1:]  # (K, h, w)
    params = head_parameters(model, name)
    for p in model.parameters():
        p.requires_grad_(False)
    for p in params:
        p.requires_grad_(True)
    return kit.train_step(model.classify_features, params, torch.randn(batch, *shape), labels, mode=mode,
                          optimizer=optimizer, lr=lr)


def bare_for(cfg: ExperimentConfig) -> Callable[[], int]:
    """The bare step matching a training config (model, size, batch, layout, optimiser, cached head or not)."""
    mode = "channels_last" if cfg.train.channels_last else "fp32"
    return bare_step(cfg.model.name, cfg.data.image_size, cfg.train.batch_size, mode,
                     head_only=cfg.train.backbone == "cached", optimizer=cfg.train.optimizer, lr=cfg.train.lr)


# ---------------------------------------------------------------- the real loop, timed from inside


class LoopClock(L.Callback):
    """Clock readings at epoch starts, batch starts and ends, and the end of training."""

    def __init__(self) -> None:
        self.epochs: list[float] = []
        self.batches: list[tuple[int, float, float, int]] = []  # (epoch, start, end, images)
        self.end = 0.0
        self._start = 0.0

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.epochs.append(time.perf_counter())

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any,
                             batch_idx: int) -> None:
        self._start = time.perf_counter()

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        images = len(batch["features"] if "features" in batch else batch["image"])
        self.batches.append((trainer.current_epoch, self._start, time.perf_counter(), images))

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.end = time.perf_counter()

    def rates(self, skip_epochs: int = 1) -> dict[str, float]:
        """Images per second of the steps, the in-epoch loop and whole epochs, from epoch ``skip_epochs`` on."""
        bounds = [*self.epochs, self.end]
        images = steps = in_epoch = whole = 0.0
        for epoch in range(skip_epochs, len(self.epochs)):
            rows = [b for b in self.batches if b[0] == epoch]
            if not rows:
                continue
            images += sum(r[3] for r in rows)
            steps += sum(r[2] - r[1] for r in rows)
            in_epoch += rows[-1][2] - bounds[epoch]
            whole += bounds[epoch + 1] - bounds[epoch]
        if not images:
            raise RuntimeError("no training batches after the skipped epochs: raise --loop-epochs or --loop-patients")
        return {"steps": images / steps, "epoch": images / in_epoch, "+ val/ckpt": images / whole}


@contextlib.contextmanager
def clocked(clock: LoopClock) -> Iterator[None]:
    """``fit`` with ``clock`` among its Trainer's callbacks (fit takes none of its own: wrap its build_trainer)."""
    original = training.build_trainer

    def build(cfg: ExperimentConfig, run_dir: Path, *, progress: bool = True, callbacks=()) -> L.Trainer:
        return original(cfg, run_dir, progress=progress, callbacks=[*callbacks, clock])

    training.build_trainer = build
    try:
        yield
    finally:
        training.build_trainer = original


def loop_configs(args: argparse.Namespace, root: Path) -> dict[str, ExperimentConfig]:
    common = (f"train.epochs={args.loop_epochs}", "train.early_stopping_patience=0", "model.pretrained=false")
    scratch = (*common, f"train.batch_size={args.loop_batch}")
    return {
        "scratch-png": kit.bench_config("scratch_cpu", root, args.loop_size, *scratch, "data.cache=off"),
        "scratch-cache": kit.bench_config("scratch_cpu", root, args.loop_size, *scratch, "data.cache=auto"),
        # bf16 features: only the set-up gets faster (2x); the epochs train the fp32 head on stored maps
        "demo-cached": kit.bench_config("demo_cpu", root, args.demo_size, *common, "train.feature_precision=bf16"),
        "demo-finetune": kit.bench_config("demo_cpu", root, args.demo_size, *common, "train.backbone=finetune",
                                      "train.lr=0.0003", f"train.batch_size={args.demo_batch}"),
    }


def run_loop(cfg: ExperimentConfig, out: Path) -> dict[str, float]:
    clock = LoopClock()
    start = time.perf_counter()
    with clocked(clock):
        training.fit(cfg, out, progress=False)
    wall = time.perf_counter() - start
    rates = clock.rates()
    rates["fit()"] = sum(b[3] for b in clock.batches) / wall
    return rates


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bare", nargs="*", choices=BARE, default=list(BARE), help="part 1 rows (none: skip)")
    parser.add_argument("--modes", nargs="+", choices=[m for m in kit.MODES if not m.startswith("fp16")],
                        default=["fp32", "channels_last", "bf16", "bf16+channels_last"])
    parser.add_argument("--size", type=int, default=224, help="mobilenet_v2/resnet18 input side (default 224)")
    parser.add_argument("--batch", type=int, default=8, help="mobilenet_v2/resnet18 batch (default 8)")
    parser.add_argument("--demo-size", type=int, default=512, help="the demo model's input side (default 512)")
    parser.add_argument("--demo-batch", type=int, default=2, help="batch of the demo model trained whole (default 2)")
    parser.add_argument("--loops", nargs="*", default=["scratch-png", "scratch-cache", "demo-cached"],
                        choices=["scratch-png", "scratch-cache", "demo-cached", "demo-finetune"],
                        help="part 2 rows (none: skip)")
    parser.add_argument("--loop-patients", type=int, default=60)
    parser.add_argument("--loop-epochs", type=int, default=3, help="epochs per fit(); the first is not timed")
    parser.add_argument("--loop-size", type=int, default=128, help="scratch loops' data.image_size (default 128)")
    parser.add_argument("--loop-batch", type=int, default=16, help="scratch loops' batch (default 16)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2, help="torch intra-op threads (default 2)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    for name in ("xraylens", "lightning.pytorch"):  # Lightning sets its own INFO level on import
        logging.getLogger(name).setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", message=".*smaller than the logging interval")  # tiny benchmark epochs
    print(f"machine: {kit.machine()}", flush=True)
    if args.bare:
        print(f"\n## bare training steps: images/s, median of {args.repeats}; ratio = mode / fp32", flush=True)
        rows = []
        for spec in args.bare:
            name, size, batch = {"demo-finetune": (DEMO_MODEL, args.demo_size, args.demo_batch),
                                 "demo-head": (DEMO_MODEL, args.demo_size, DEMO_HEAD_BATCH)}.get(
                                     spec, (spec, args.size, args.batch))
            rates = {mode: kit.rate(bare_step(name, size, batch, mode, head_only=spec == "demo-head"), args.repeats)
                     for mode in args.modes}
            base = rates[args.modes[0]]
            rows.append([spec, size, batch, *(kit.cell(r, base) for r in rates.values())])
            print(kit.markdown_row(rows[-1]), flush=True)
        print(kit.markdown_table(["row", "size", "batch", *args.modes], rows))
    if args.loops:
        print(f"\n## the real loop (fit) vs the bare step: images/s; ratio = loop / bare ({kit.load_now()})",
              flush=True)
        rows = []
        with tempfile.TemporaryDirectory(prefix="bench_training.") as tmp:
            root = kit.synthetic_data(Path(tmp), args.loop_patients, max(args.demo_size, args.loop_size))
            configs = loop_configs(args, root)
            for name in args.loops:
                cfg = configs[name]
                if cfg.data.cache == "auto" and cfg.train.backbone != "cached":
                    build_cache(root, cfg.data.image_size, workers=2, progress=False)
                step = bare_for(cfg)
                before = kit.rate(step, args.repeats)
                loop = run_loop(cfg, Path(tmp) / f"run-{name}")
                bare = (before + kit.rate(step, args.repeats)) / 2  # before and after: the machine's load drifts
                rows.append([name, f"{cfg.model.name} {cfg.data.image_size}px b{cfg.train.batch_size}",
                             cfg.data.num_workers, kit.cell(bare), *(kit.cell(r, bare) for r in loop.values())])
                print(kit.markdown_row(rows[-1]), flush=True)
        print(kit.markdown_table(["loop", "model", "workers", "bare step", *LOOP_RATES], rows))
    print(f"\n{kit.load_now()} at the end")


if __name__ == "__main__":
    main()
