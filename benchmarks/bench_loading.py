"""Training data loading: the pre-resized cache vs decoding and resizing every PNG every epoch.

Writes its own synthetic MURA tree (``--patients`` at ``--max-side`` px) into a
temporary folder and, per image size, builds the cache (``xraylens data cache``).
Then, for each loader worker count, times whole epochs of the real training
loader (``RadiographDataModule.train_dataloader``: shuffled, augmented as
``--config`` says) reading

  png        every PNG decoded and letterboxed every epoch (``data.cache=off``, the seed's way)
  cache      the memory-mapped squares (``data.cache=auto`` with the cache built), same augmentation
  cache, no aug   the cache with augmentation switched off: what the augmentation itself costs

and prints training images per second (median of ``--repeats`` timed runs after
a warm-up epoch, which also starts the workers) with each source's ratio to
png, the cache build's own rate, and after how many epochs the build has paid
for itself. Ratios come from one run, so they hold on a shared machine.

Usage: python benchmarks/bench_loading.py [--patients 40] [--max-side 512] [--sizes 128 512]
                                          [--workers 0 2] [--batch-size 16] [--repeats 5]
                                          [--config scratch_cpu] [--threads 2]
"""

from __future__ import annotations

import argparse
import gc
import logging
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import benchkit as kit
import torch

from xraylens.data.cache import build_cache
from xraylens.datamodule import RadiographDataModule, load_training_data

NO_AUGMENT = ("data.augment.rotation_degrees=0", "data.augment.zoom=0", "data.augment.hflip=false",
              "data.augment.brightness=0", "data.augment.contrast=0")
SOURCES = {"png": ("data.cache=off",), "cache": ("data.cache=auto",),
           "cache, no aug": ("data.cache=auto", *NO_AUGMENT)}
HEADER = ["size", "workers", *SOURCES, "cache build (2 proc.)", "cache pays back after"]


def epoch_runner(cfg) -> tuple[Callable[[], int], object]:
    """One call = one epoch of the training loader; returns the images it delivered."""
    dm = RadiographDataModule(cfg, load_training_data(cfg, progress=False))
    dm.setup()
    loader = dm.train_dataloader()

    def epoch() -> int:
        return sum(len(batch["image"]) for batch in loader)

    return epoch, loader


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--patients", type=int, default=40)
    parser.add_argument("--max-side", type=int, default=512, help="synthetic images' long side (default 512)")
    parser.add_argument("--sizes", nargs="+", type=int, default=[128, 512], help="data.image_size values")
    parser.add_argument("--workers", nargs="+", type=int, default=[0, 2], help="data.num_workers values")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--config", default="scratch_cpu", help="preset whose augmentation is used")
    parser.add_argument("--threads", type=int, default=2, help="torch intra-op threads of the main process")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    logging.getLogger("xraylens").setLevel(logging.ERROR)  # the synthetic junk files are reported on every index
    print(f"machine: {kit.machine()}")
    print(f"training loader, {args.config} augmentation, batch {args.batch_size}; images/s, median of "
          f"{args.repeats}; ratio = source / png", flush=True)
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench_loading.") as tmp:
        root = kit.synthetic_data(Path(tmp), args.patients, args.max_side)
        for size in args.sizes:
            start = time.perf_counter()
            cache = build_cache(root, size, workers=2, progress=False)
            build_s = time.perf_counter() - start
            cached_images = len((cache / "index.csv").read_text().splitlines()) - 1
            for workers in args.workers:
                rates: dict[str, float] = {}
                for source, overrides in SOURCES.items():
                    cfg = kit.bench_config(args.config, root, size, f"data.num_workers={workers}",
                                           f"train.batch_size={args.batch_size}", *overrides)
                    epoch, loader = epoch_runner(cfg)
                    per_epoch = epoch()  # warm-up: starts the workers, fills the page cache
                    rates[source] = kit.rate(epoch, args.repeats)
                    del epoch, loader
                    gc.collect()  # shuts the persistent workers down before the next loader starts its own
                saved = per_epoch / rates["png"] - per_epoch / rates["cache"]  # seconds per epoch
                payback = f"{build_s / saved:.1f} epochs" if saved > 0 else "never"
                rows.append([size, workers, *(kit.cell(r, rates["png"]) for r in rates.values()),
                             f"{cached_images / build_s:.0f} img/s ({build_s:.1f} s)", payback])
                print(kit.markdown_row(rows[-1]), flush=True)
    print()
    print(kit.markdown_table(HEADER, rows))
    print(f"\n{kit.load_now()} at the end")


if __name__ == "__main__":
    main()
