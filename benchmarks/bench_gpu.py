"""GPU training speed against what the real loader delivers: does the loader keep the GPU fed?

For each model (default: DenseNet-169 at 320 px, the MURA paper's, and
mil_efficientnet_lite0 at 512 px, the demo's model fine-tuned whole as on GPUs):

  step     training images/s on random tensors already on the device (forward, BCE, backward, optimiser),
           per ``--modes``: fp32, channels_last, bf16 or fp16 autocast + channels_last (fp16 with a grad scaler)
  loader   images/s the package's training loader hands to the device: RadiographDataModule over the
           pre-resized cache of a synthetic dataset written here, with the model's preset augmentation
           (mura_densenet169; demo_cpu with the README's GPU augmentation), ``--workers`` processes,
           pinned memory on CUDA
  fed      training images/s when that loader feeds the step (``--fed-mode``): an epoch without Lightning

Both are compared with the step of the fed mode: fed / step near 1 means the
loader keeps up; loader below step means the GPU waits (more workers, or
lighter augmentation). Steps: median over ``--steps`` timed steps after
``--warmup``; loader and fed: median of 3 runs of at least ``--loader-seconds``
each. Random weights (speed does not depend on them).

On a CUDA machine (a few minutes, most of it writing the synthetic data):
  python benchmarks/bench_gpu.py
  python benchmarks/bench_gpu.py --workers 4 8 16 --batch 64
On a CPU, to check it works (tiny):
  python benchmarks/bench_gpu.py --device cpu --steps 2 --size 128

Usage: python benchmarks/bench_gpu.py [--device cuda] [--models densenet169:320 mil_efficientnet_lite0:512]
           [--size S] [--batch 32] [--steps 20] [--warmup 5] [--modes ...] [--fed-mode bf16+channels_last]
           [--workers 8] [--patients 200] [--loader-seconds 2] [--threads N]
"""

from __future__ import annotations

import argparse
import itertools
import logging
import os
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import benchkit as kit
import lightning as L
import torch

from xraylens.data.cache import build_cache
from xraylens.datamodule import RadiographDataModule, load_training_data
from xraylens.models import create_model

# model -> (preset, overrides): the recipe each model trains with on GPUs
PRESETS = {
    "densenet169": ("mura_densenet169", ()),
    "mil_efficientnet_lite0": ("demo_cpu", ("train.backbone=finetune", "data.augment.rotation_degrees=30",
                                            "data.augment.zoom=0.1")),
}


def build(name: str, mode: str, device: torch.device) -> torch.nn.Module:
    torch.manual_seed(0)
    model = create_model(name, pooling="topk" if name.startswith("mil_") else "avg").to(device).train()
    return model.to(memory_format=torch.channels_last) if kit.MODES[mode][0] else model


def loader_batches(name: str, root: Path, size: int, batch: int, workers: int,
                   device: torch.device) -> Iterator[dict]:
    """The package's training loader over the cache, endlessly (epoch after epoch), pinned on CUDA."""
    preset, overrides = PRESETS.get(name, ("scratch_cpu", ()))
    cfg = kit.bench_config(preset, root, size, *overrides, "model.pretrained=false", "data.cache=auto",
                           f"data.num_workers={workers}", f"train.batch_size={batch}")
    dm = RadiographDataModule(cfg, load_training_data(cfg, progress=False))
    # a Trainer on the device is how the data module knows to pin memory (it reads trainer.strategy)
    dm.trainer = L.Trainer(accelerator="gpu" if device.type == "cuda" else "cpu", devices=1, logger=False,
                           enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False)
    dm.setup()
    loader = dm.train_dataloader()
    return itertools.chain.from_iterable(itertools.repeat(loader))


def feed_rates(name: str, root: Path, size: int, batch: int, workers: int, device: torch.device, mode: str,
               warmup: int, seconds: float, sync: Callable[[], None]) -> tuple[float, float]:
    """(images/s the loader hands to the device, training images/s with that loader feeding the step)."""
    batches = loader_batches(name, root, size, batch, workers, device)

    def fetch() -> int:
        b = next(batches)
        b["image"].to(device, non_blocking=True)
        return len(b["image"])

    model = build(name, mode, device)
    step = kit.step_fn(model, list(model.parameters()), mode=mode, device_type=device.type)

    def fed() -> int:
        b = next(batches)
        return step(b["image"].to(device, non_blocking=True), b["label"].to(device, non_blocking=True))

    return (kit.rate(fetch, 3, warmup=warmup, min_seconds=seconds, sync=sync),
            kit.rate(fed, 3, warmup=warmup, min_seconds=seconds, sync=sync))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--models", nargs="+", default=["densenet169:320", "mil_efficientnet_lite0:512"],
                        metavar="NAME:SIZE")
    parser.add_argument("--size", type=int, help="one input side for every model (e.g. 128 for a CPU check)")
    parser.add_argument("--batch", type=int, help="batch size (default 32 on CUDA, 8 on CPU)")
    parser.add_argument("--steps", type=int, default=20, help="timed training steps per mode (default 20)")
    parser.add_argument("--warmup", type=int, help="untimed steps first (default 5 on CUDA, 1 on CPU)")
    parser.add_argument("--modes", nargs="+", choices=list(kit.MODES),
                        help="default: all on CUDA; fp32, channels_last, bf16+channels_last on CPU")
    parser.add_argument("--fed-mode", choices=list(kit.MODES),
                        help="mode of the loader-fed run (default bf16+channels_last on CUDA, channels_last on CPU)")
    parser.add_argument("--workers", nargs="+", type=int, default=[min(8, len(os.sched_getaffinity(0)))],
                        help="loader processes to try (default min(8, cores))")
    parser.add_argument("--patients", type=int, help="synthetic patients (default 200 on CUDA, 30 on CPU)")
    parser.add_argument("--loader-seconds", type=float, default=2.0, help="least time per loader/fed run")
    parser.add_argument("--threads", type=int, help="torch intra-op threads (default: torch's)")
    args = parser.parse_args()
    device = torch.device(args.device)
    cuda = device.type == "cuda"
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.backends.cudnn.benchmark = True
    batch = args.batch or (32 if cuda else 8)
    warmup = args.warmup if args.warmup is not None else (5 if cuda else 1)
    modes = args.modes or (list(kit.MODES) if cuda else ["fp32", "channels_last", "bf16+channels_last"])
    fed_mode = args.fed_mode or ("bf16+channels_last" if cuda else "channels_last")
    specs = [(s.split(":")[0], args.size or int(s.split(":")[1])) for s in args.models]
    for name in ("xraylens", "lightning.pytorch"):
        logging.getLogger(name).setLevel(logging.ERROR)
    sync: Callable[[], None] = (lambda: torch.cuda.synchronize(device)) if cuda else (lambda: None)
    print(f"machine: {kit.machine(str(device))}")
    print(f"device {device}, batch {batch}; images/s (ratio to the first mode / to the fed mode's step)", flush=True)

    step_rows = []
    steps: dict[str, dict[str, float]] = {}
    for name, size in specs:
        rates = {}
        for mode in modes:
            model = build(name, mode, device)
            x, y = torch.randn(batch, 1, size, size, device=device), (torch.rand(batch, device=device) < 0.5).float()
            step = kit.step_fn(model, list(model.parameters()), mode=mode, device_type=device.type)
            if cuda:
                torch.cuda.reset_peak_memory_stats(device)
            rates[mode] = kit.rate(lambda step=step, x=x, y=y: step(x, y), args.steps, warmup=warmup,
                                   min_seconds=0, sync=sync)
            memory = f"{torch.cuda.max_memory_allocated(device) / 2**30:.1f} GiB" if cuda else "-"
            step_rows.append([name, size, mode, kit.cell(rates[mode], rates[modes[0]]), memory])
            print(kit.markdown_row(step_rows[-1]), flush=True)
            del model, step, x, y
        steps[name] = rates

    with tempfile.TemporaryDirectory(prefix="bench_gpu.") as tmp:
        cores = len(os.sched_getaffinity(0))
        root = kit.synthetic_data(Path(tmp), args.patients or (200 if cuda else 30),
                                  max(s for _, s in specs), workers=cores)
        for size in sorted({s for _, s in specs}):
            build_cache(root, size, workers=cores, progress=False)
        feed_rows = []
        feed_header = ["model", "size", "workers", f"step ({fed_mode})", "loader", "fed", "fed within 5%"]
        for name, size in specs:
            for workers in args.workers:
                loader, fed = feed_rates(name, root, size, batch, workers, device, fed_mode, warmup,
                                         args.loader_seconds, sync)
                base = steps[name].get(fed_mode, max(steps[name].values()))  # the same mode's bare step
                feed_rows.append([name, size, workers, kit.cell(base), kit.cell(loader, base),
                                  kit.cell(fed, base), "yes" if fed >= 0.95 * base else "no"])
                print(kit.markdown_row(feed_rows[-1]), flush=True)
    print("\n## training steps on tensors already on the device")
    print(kit.markdown_table(["model", "size", "mode", "step", "peak memory"], step_rows))
    print(f"\n## the real loader (cache, augmentation, workers) against the {fed_mode} step")
    print(kit.markdown_table(feed_header, feed_rows))
    print(f"\n{kit.load_now()} at the end")


if __name__ == "__main__":
    main()
