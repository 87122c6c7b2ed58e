"""The demo end to end: wall time per stage of ``xraylens demo --quick`` (or the full demo with ``--full``).

Runs the real command ``--repeats`` times, each into a fresh temporary folder
(a rerun into the same folder would reuse the finished stages), and reads the
per-stage seconds the demo records in ``OUT/demo_summary.json`` (data, train,
evaluate, explain-eval, explain). ``rest`` is the command's wall time minus
the stages: interpreter start-up, imports, config checks and the final
report.md / report.html. Prints the median, min and max of each stage and its
share of the median total.

Usage: python benchmarks/bench_demo.py [--full] [--repeats 1] [--keep DIR] [-- EXTRA DEMO ARGS]
  e.g. python benchmarks/bench_demo.py --repeats 3
       python benchmarks/bench_demo.py -- --set train.feature_precision=bf16
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchkit import load_now, machine, markdown_table


def xraylens_command() -> str:
    """The ``xraylens`` console script of this interpreter's environment (else the one on PATH)."""
    beside = Path(sys.executable).with_name("xraylens")
    found = str(beside) if beside.is_file() else shutil.which("xraylens")
    if found is None:
        raise SystemExit("no `xraylens` command: install the package (pip install -e .) in this environment")
    return found


def run_once(out: Path, full: bool, extra: list[str]) -> dict[str, float]:
    """One demo run into ``out``: its stages' seconds plus ``rest`` and ``total`` (the command's wall time)."""
    command = [xraylens_command(), "demo", "--out", str(out), "--no-progress",
               *([] if full else ["--quick"]), *extra]
    start = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed ({done.returncode}):\n{done.stderr[-4000:]}")
    seconds = json.loads((out / "demo_summary.json").read_text())["seconds"]
    return {**seconds, "rest": wall - sum(seconds.values()), "total": wall}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--full", action="store_true", help="the full demo (default: --quick)")
    parser.add_argument("--repeats", type=int, default=1, help="demo runs, each from scratch (default 1)")
    parser.add_argument("--keep", metavar="DIR", help="keep the last run's output folder here")
    parser.add_argument("extra", nargs="*", help="after --: more `xraylens demo` arguments")
    args = parser.parse_args()
    print(f"machine: {machine()}")
    command = " ".join(["xraylens demo", *([] if args.full else ["--quick"]), *args.extra])
    print(f"{command}: {args.repeats} run(s); seconds per stage", flush=True)
    runs = []
    with tempfile.TemporaryDirectory(prefix="bench_demo.") as tmp:
        for i in range(args.repeats):
            out = Path(tmp) / f"demo{i}"
            runs.append(run_once(out, args.full, args.extra))
            print(f"run {i + 1}: " + ", ".join(f"{k} {v:.1f} s" for k, v in runs[-1].items())
                  + f" ({load_now()})", flush=True)
        if args.keep:
            shutil.copytree(out, args.keep, dirs_exist_ok=True)
    total = statistics.median(r["total"] for r in runs)
    rows = []
    for stage in runs[0]:
        values = [r[stage] for r in runs]
        median = statistics.median(values)
        rows.append([stage, f"{median:.1f}", f"{min(values):.1f}", f"{max(values):.1f}", f"{median / total:.0%}"])
    print()
    print(markdown_table(["stage", "median s", "min s", "max s", "share of total"], rows))
    print(f"\n{load_now()} at the end")


if __name__ == "__main__":
    main()
