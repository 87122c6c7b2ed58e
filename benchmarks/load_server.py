"""Load test of `xraylens serve` on loopback: many uploads at once, errors, latency, throughput, server memory.

Not part of CI. It writes a tiny checkpoint (random MobileNetV2 weights; the
speed and memory of a request do not depend on what the weights learned), for
the ONNX engine also its export, starts ``xraylens serve`` on 127.0.0.1 in a
subprocess, and sends ``--requests`` uploads of one synthetic radiograph,
``--concurrency`` at a time, to ``/api/predict``. Reported per engine: errors
(must be 0), latency p50/p90/p99, throughput, and the server's resident memory
(from /proc: after loading the model, after a warm-up of one round of
``--concurrency`` requests, its peak (VmHWM) and after the load).

    python benchmarks/load_server.py                          # torch and onnx, 500 requests, 32 at a time
    python benchmarks/load_server.py --engines torch --max-concurrent 1 4

The torch engine answers with a heatmap (a CAM per request); the ONNX one runs
the exported model alone, so it has none (with ``--onnx`` beside a .ckpt the
heatmaps would come from torch again).
"""

from __future__ import annotations

import argparse
import io
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from benchkit import machine  # noqa: E402


def tiny_checkpoint(folder: Path, size: int) -> Path:
    from xraylens.config import ModelConfig
    from xraylens.data.preprocess import Preprocessing
    from xraylens.models import CheckpointMeta, create_model, save_checkpoint

    meta = CheckpointMeta(model=ModelConfig(name="mobilenet_v2"), preprocessing=Preprocessing.for_channels(size, 1))
    return save_checkpoint(folder / "tiny.ckpt", create_model("mobilenet_v2"), meta)


def upload(side: int) -> bytes:
    from PIL import Image

    from xraylens.export import synthetic_radiograph

    image = synthetic_radiograph(np.random.default_rng(0), side, side * 4 // 5)
    buffer = io.BytesIO()
    Image.fromarray((image * 255).astype(np.uint8)).save(buffer, "PNG")
    return buffer.getvalue()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rss_mb(pid: int, field: str = "VmRSS") -> float:
    with open(f"/proc/{pid}/status") as handle:
        for line in handle:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    raise RuntimeError(f"{field} not in /proc/{pid}/status")


class Server:
    """``xraylens serve`` in a subprocess on 127.0.0.1, stopped on exit."""

    def __init__(self, model: Path, max_concurrent: int, max_queue: int) -> None:
        self.port = free_port()
        command = [sys.executable, "-m", "xraylens.cli", "serve", str(model), "--host", "127.0.0.1", "--port",
                   str(self.port), "--max-concurrent", str(max_concurrent), "--max-queue", str(max_queue)]
        self.proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        self.url = f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> Server:
        import httpx

        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"the server exited:\n{self.proc.stderr.read()[-3000:]}")
            try:
                if httpx.get(f"{self.url}/api/health", timeout=2).status_code == 200:
                    return self
            except httpx.TransportError:
                pass
            time.sleep(0.3)
        raise RuntimeError("the server did not answer /api/health within 180 s")

    def __exit__(self, *exc) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def hammer(url: str, data: bytes, requests: int, concurrency: int, timeout: float) -> tuple[list[float], list[str]]:
    """Latencies (s) of the successful requests and one line per failed one."""
    import httpx

    latencies: list[float] = []
    errors: list[str] = []
    lock = threading.Lock()
    with httpx.Client(timeout=timeout, limits=httpx.Limits(max_connections=concurrency)) as client:
        def one(i: int) -> None:
            started = time.perf_counter()
            try:
                response = client.post(f"{url}/api/predict", files={"file": (f"x{i}.png", data, "image/png")})
                ok = response.status_code == 200 and "probability" in response.json()
                problem = None if ok else f"{response.status_code}: {response.text[:120]}"
            except httpx.HTTPError as exc:
                problem = f"{type(exc).__name__}: {exc}"
            with lock:
                if problem is None:
                    latencies.append(time.perf_counter() - started)
                else:
                    errors.append(problem)

        with ThreadPoolExecutor(max_workers=concurrency) as pool:
            list(pool.map(one, range(requests)))
    return latencies, errors


def run(engine: str, model: Path, data: bytes, args: argparse.Namespace, max_concurrent: int) -> dict:
    with Server(model, max_concurrent, args.max_queue) as server:
        pid = server.proc.pid
        idle = rss_mb(pid)
        hammer(server.url, data, args.concurrency, args.concurrency, args.timeout)  # warm-up: one round
        warm = rss_mb(pid)
        sampled = [warm]
        done = threading.Event()

        def sample() -> None:
            while not done.wait(0.05):
                sampled.append(rss_mb(pid))

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        started = time.perf_counter()
        latencies, errors = hammer(server.url, data, args.requests, args.concurrency, args.timeout)
        seconds = time.perf_counter() - started
        done.set()
        sampler.join()
        after = rss_mb(pid)
        peak = rss_mb(pid, "VmHWM")  # the kernel's high-water mark: warm-up and load, whatever the sampling missed
    q = np.quantile(latencies, [0.5, 0.9, 0.99]) * 1000 if latencies else [float("nan")] * 3
    return {"engine": engine, "max_concurrent": max_concurrent, "requests": args.requests, "errors": len(errors),
            "first_errors": errors[:3], "p50": q[0], "p90": q[1], "p99": q[2], "rps": len(latencies) / seconds,
            "seconds": seconds, "idle": idle, "warm": warm, "peak": peak, "peak_during_load": max(sampled),
            "after": after, "mean_latency": statistics.fmean(latencies) if latencies else float("nan")}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--engines", nargs="+", choices=("torch", "onnx"), default=["torch", "onnx"])
    parser.add_argument("--requests", type=int, default=500)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--max-concurrent", type=int, nargs="+", default=[2],
                        help="the server's --max-concurrent values to measure (default: 2, its default)")
    parser.add_argument("--max-queue", type=int, default=32, help="the server's --max-queue (default: 32)")
    parser.add_argument("--size", type=int, default=128, help="the model's input side in px (default: 128)")
    parser.add_argument("--image-side", type=int, default=512, help="the uploaded PNG's long side (default: 512)")
    parser.add_argument("--timeout", type=float, default=120.0, help="seconds per request (default: 120)")
    args = parser.parse_args(argv)
    print(machine())
    data = upload(args.image_side)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        checkpoint = tiny_checkpoint(Path(tmp), args.size)
        models = {"torch": checkpoint}
        if "onnx" in args.engines:
            from xraylens.export import export_onnx

            models["onnx"] = export_onnx(checkpoint, Path(tmp) / "tiny.onnx").path
        for engine in args.engines:
            for limit in args.max_concurrent:
                row = run(engine, models[engine], data, args, limit)
                rows.append(row)
                print(f"{engine} max_concurrent={limit}: {row['errors']} errors, {row['rps']:.1f} req/s, p50 "
                      f"{row['p50']:.0f} ms, RSS {row['idle']:.0f} -> {row['warm']:.0f} -> peak {row['peak']:.0f}"
                      f" -> {row['after']:.0f} MB" + (f"; first errors: {row['first_errors']}" if row["errors"]
                                                      else ""), flush=True)
    print(f"\n{args.requests} requests, {args.concurrency} at a time, to /api/predict on 127.0.0.1; one "
          f"{len(data) / 1024:.0f} kB PNG ({args.image_side} px long side); MobileNetV2 at {args.size} px; "
          f"server --max-queue {args.max_queue}; OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}\n")
    print("| engine | --max-concurrent | errors | p50 ms | p90 ms | p99 ms | req/s | RSS loaded MB | after warm-up "
          "| peak (VmHWM) | after load |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['engine']} | {r['max_concurrent']} | {r['errors']} | {r['p50']:.0f} | {r['p90']:.0f} | "
              f"{r['p99']:.0f} | {r['rps']:.1f} | {r['idle']:.0f} | {r['warm']:.0f} | {r['peak']:.0f} | "
              f"{r['after']:.0f} |")
    return 1 if any(r["errors"] for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
