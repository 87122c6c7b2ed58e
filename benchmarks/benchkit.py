"""What the bench_*.py scripts share: timing, the machine they ran on, synthetic data, one training step.

Imported by the scripts beside it (``python benchmarks/bench_x.py`` puts this
folder on ``sys.path``); never by the package. Timing follows
``bench_inference.py``: a warm-up, a call count long enough to time, then the
median images per second of ``repeats`` timed runs.
"""

from __future__ import annotations

import math
import os
import statistics
import subprocess
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

# training/inference precision modes: name -> (channels_last, autocast dtype or None)
MODES: dict[str, tuple[bool, torch.dtype | None]] = {
    "fp32": (False, None),
    "channels_last": (True, None),
    "bf16": (False, torch.bfloat16),
    "bf16+channels_last": (True, torch.bfloat16),
    "fp16+channels_last": (True, torch.float16),
}


def rate(run: Callable[[], int], repeats: int, *, warmup: int = 0, min_seconds: float = 0.2,
         sync: Callable[[], None] = lambda: None) -> float:
    """Median items per second of ``run`` (which returns how many items it processed).

    ``warmup`` untimed calls, then one more whose time sets how many calls make a
    timed run of at least ``min_seconds`` (so a 5 s training step is called once
    per run, a 5 ms one 40 times), then ``repeats`` timed runs. ``sync`` waits for
    queued GPU work before each clock read.
    """
    for _ in range(warmup):
        run()
    sync()
    start = time.perf_counter()
    run()
    sync()
    calls = max(1, math.ceil(min_seconds / max(time.perf_counter() - start, 1e-9)))
    rates = []
    for _ in range(repeats):
        start, items = time.perf_counter(), 0
        for _ in range(calls):
            items += run()
        sync()
        rates.append(items / (time.perf_counter() - start))
    return statistics.median(rates)


def cpu_model() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return "unknown CPU"
    names = [line.split(":", 1)[1].strip() for line in out.splitlines() if line.startswith("Model name")]
    return names[0] if names else "unknown CPU"


def machine(device: str = "cpu") -> str:
    """One line: cores this process may use (nproc), CPU model, load average, torch, threads, OpenMP, GPU."""
    load = " ".join(f"{v:.2f}" for v in os.getloadavg())
    line = (f"{len(os.sched_getaffinity(0))} cores ({cpu_model()}), load {load}, torch {torch.__version__}, "
            f"{torch.get_num_threads()} threads")
    omp = {k: os.environ[k] for k in ("OMP_WAIT_POLICY", "OMP_NUM_THREADS") if k in os.environ}
    if omp:  # OMP_WAIT_POLICY=PASSIVE changes CPU speeds on a shared machine by up to 10x (benchmarks/README.md)
        line += ", " + ", ".join(f"{k}={v}" for k, v in omp.items())
    if device.startswith("cuda") and torch.cuda.is_available():
        line += f", GPU {torch.cuda.get_device_name(torch.device(device))}"
    return line


def load_now() -> str:
    return "load " + " ".join(f"{v:.2f}" for v in os.getloadavg())


def synthetic_data(folder: Path, patients: int, max_side: int, *, workers: int = 2, seed: int = 0) -> Path:
    """A synthetic MURA tree under ``folder`` (the package's generator, no progress bar); returns its root."""
    from xraylens.data.synthetic import generate

    root = folder / f"synth{patients}x{max_side}"
    result = generate(root, patients=patients, max_side=max_side, seed=seed, workers=workers, progress=False)
    print(f"synthetic data: {result.manifest['images']} images of {patients} patients at {max_side} px in {root}",
          flush=True)
    return root


def bench_config(preset: str, root: Path, size: int, *overrides: str):
    """A shipped preset pointed at ``root`` and resized to ``size`` px, plus ``overrides`` (``key=value``)."""
    from xraylens.config import load_config

    return load_config(preset, [f"data.root={root}", f"data.image_size={size}", *overrides])


def step_fn(forward: Callable[[torch.Tensor], torch.Tensor], params: Sequence[nn.Parameter], *, mode: str,
            device_type: str = "cpu", optimizer: str = "adamw", lr: float = 1e-3
            ) -> Callable[[torch.Tensor, torch.Tensor], int]:
    """``step(inputs, labels)``: one bare training step, forward, BCE on the logit, backward, optimiser.

    ``mode`` is a key of :data:`MODES`. The caller puts the model in
    channels_last when the mode asks for it (``to(memory_format=...)`` changes
    the model in place); the input follows here. fp16 uses a gradient scaler.
    """
    channels_last, dtype = MODES[mode]
    kind = torch.optim.AdamW if optimizer == "adamw" else torch.optim.Adam
    opt = kind(params, lr=lr)
    scaler = torch.amp.GradScaler(device_type, enabled=dtype is torch.float16)

    def step(inputs: torch.Tensor, labels: torch.Tensor) -> int:
        x = inputs.contiguous(memory_format=torch.channels_last) if channels_last else inputs.contiguous()
        with torch.autocast(device_type, dtype=dtype or torch.bfloat16, enabled=dtype is not None):
            logits = forward(x).reshape(-1).float()
        loss = F.binary_cross_entropy_with_logits(logits, labels.float())
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()
        opt.zero_grad(set_to_none=True)
        return len(x)

    return step


def train_step(forward: Callable[[torch.Tensor], torch.Tensor], params: Sequence[nn.Parameter],
               inputs: torch.Tensor, labels: torch.Tensor, *, mode: str, optimizer: str = "adamw",
               lr: float = 1e-3) -> Callable[[], int]:
    """:func:`step_fn` on fixed tensors already in place (laid out once, as a loader would hand them over)."""
    step = step_fn(forward, params, mode=mode, device_type=inputs.device.type, optimizer=optimizer, lr=lr)
    if MODES[mode][0]:
        inputs = inputs.contiguous(memory_format=torch.channels_last)
    return lambda: step(inputs, labels)


def markdown_row(row: Sequence[object]) -> str:
    return "| " + " | ".join(str(c) for c in row) + " |"


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    lines = [markdown_row(header), "|" + "|".join("---" for _ in header) + "|", *map(markdown_row, rows)]
    return "\n".join(lines)


def cell(value: float, base: float | None = None, unit: str = "img/s") -> str:
    """``12.3 img/s (1.45x)``: a rate and its ratio to ``base``."""
    text = f"{value:.1f} {unit}" if value >= 10 else f"{value:.2f} {unit}"
    return text if base is None else f"{text} ({value / base:.2f}x)"
