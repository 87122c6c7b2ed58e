"""Inference throughput of one checkpoint: torch eager, torch channels_last, and ONNX Runtime.

For each model, input size and batch size, prints images per second (median of
``--repeats`` timed runs after a warm-up) and each engine's ratio to plain
torch eager. Ratios come from one run on one machine, so they hold even when
the machine is shared; absolute numbers do not. Random weights: speed does not
depend on them.

Usage: python benchmarks/bench_inference.py [--models mobilenet_v2 resnet18] [--sizes 128 224]
                                            [--batches 1 16] [--repeats 7] [--threads 2]
"""

from __future__ import annotations

import argparse
import copy
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from xraylens.config import ModelConfig
from xraylens.data.preprocess import Preprocessing
from xraylens.export import OnnxEngine, export_onnx
from xraylens.inference import TorchEngine
from xraylens.models import CheckpointMeta, create_model, save_checkpoint


def images_per_second(run: Callable[[np.ndarray], object], batch: np.ndarray, repeats: int) -> float:
    """Median over ``repeats`` runs, each long enough (>= 0.2 s) to time reliably."""
    run(batch)  # warm-up: allocator, ONNX Runtime's first-run optimisations
    start, calls = time.perf_counter(), 0
    while time.perf_counter() - start < 0.2:
        run(batch)
        calls += 1
    rates = []
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(calls):
            run(batch)
        rates.append(calls * len(batch) / (time.perf_counter() - start))
    return statistics.median(rates)


def engines(name: str, size: int, folder: Path) -> dict[str, Callable[[np.ndarray], object]]:
    torch.manual_seed(0)
    model = create_model(name).eval()
    meta = CheckpointMeta(model=ModelConfig(name=name), preprocessing=Preprocessing.for_channels(size, 1))
    checkpoint = save_checkpoint(folder / f"{name}-{size}.ckpt", model, meta)
    onnx_path = export_onnx(checkpoint, folder / f"{name}-{size}.onnx").path
    last_model = copy.deepcopy(model).to(memory_format=torch.channels_last)

    def last(batch: np.ndarray) -> object:
        x = torch.from_numpy(batch).contiguous(memory_format=torch.channels_last)
        with torch.inference_mode():
            return last_model(x)

    return {"torch eager": TorchEngine(model, name).logits, "torch channels_last": last,
            "onnxruntime": OnnxEngine(onnx_path).logits}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["mobilenet_v2", "resnet18"])
    parser.add_argument("--sizes", nargs="+", type=int, default=[128, 224])
    parser.add_argument("--batches", nargs="+", type=int, default=[1, 16])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--threads", type=int, default=2, help="torch intra-op threads (default 2)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {args.threads} threads; images/s, median of {args.repeats}; "
          "ratio = engine / torch eager")
    print(f"{'model':14s} {'size':>4s} {'batch':>5s}  " + "  ".join(f"{e:>26s}" for e in
          ("torch eager", "torch channels_last", "onnxruntime")))
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.models:
            for size in args.sizes:
                runs = engines(name, size, Path(tmp))
                for batch_size in args.batches:
                    batch = rng.standard_normal((batch_size, 1, size, size)).astype(np.float32)
                    rates = {engine: images_per_second(run, batch, args.repeats) for engine, run in runs.items()}
                    base = rates["torch eager"]
                    cells = [f"{rate:8.1f} img/s ({rate / base:4.2f}x)" for rate in rates.values()]
                    print(f"{name:14s} {size:4d} {batch_size:5d}  " + "  ".join(f"{c:>26s}" for c in cells),
                          flush=True)


if __name__ == "__main__":
    main()
