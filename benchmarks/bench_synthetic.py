"""Synthetic MURA generator speed: images per second on one core, at 256 and 512 px.

Prints per size (median of 3 runs):
  render  - drawing + PNG encoding, in memory (the generator's own cost), wall clock
  cpu     - the same per CPU-second of this process (stable on a shared machine)
  write   - ``generate(..., workers=1)`` end to end, including atomic, fsync'ed writes

Usage: python benchmarks/bench_synthetic.py [--patients 40] [--sizes 256 512]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from xraylens.data.synthetic import generate
from xraylens.data.synthetic.acquisition import encode
from xraylens.data.synthetic.plan import make_plan
from xraylens.data.synthetic.render import render_study


def render_rate(patients: int, max_side: int, seed: int) -> tuple[float, float]:
    """(images per wall second, images per CPU second)."""
    plan = make_plan(patients, seed)
    start, cpu, count = time.perf_counter(), time.process_time(), 0
    for study in plan:
        views, _ = render_study(seed, study, max_side)
        for view in views:
            encode(view.image, view.storage)
            count += 1
    return count / (time.perf_counter() - start), count / (time.process_time() - cpu)


def write_rate(patients: int, max_side: int, seed: int) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        result = generate(
            Path(tmp) / "synth", patients=patients, max_side=max_side, seed=seed, progress=False
        )
        return result.manifest["images"] / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--patients", type=int, default=40)
    parser.add_argument("--sizes", type=int, nargs="+", default=[256, 512])
    args = parser.parse_args()
    render_rate(4, 128, seed=99)  # warm the per-process caches (unit anatomy, noise bank)
    for size in args.sizes:
        rates = [render_rate(args.patients, size, seed=s) for s in range(3)]
        render, cpu = statistics.median(r[0] for r in rates), statistics.median(r[1] for r in rates)
        write = statistics.median(write_rate(args.patients, size, seed=s) for s in range(3))
        print(
            f"max_side {size}: render {render:6.1f} img/s   cpu {cpu:6.1f} img/cpu-s   write {write:6.1f} img/s"
            "   (median of 3, one process)"
        )


if __name__ == "__main__":
    main()
