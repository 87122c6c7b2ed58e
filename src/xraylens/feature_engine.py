"""How the frozen trunk is run when cached features are computed: PyTorch, or ONNX Runtime on a CPU.

Why: computing the frozen features is most of the CPU recipe's training time,
and on CPUs without native bfloat16 (AVX2 laptops and servers) PyTorch runs
EfficientNet-Lite0's depthwise convolutions slowly in float32. ONNX Runtime
runs the same float32 graph 2.7-4x faster there (benchmarks/bench_features.py;
README), with features that differ from PyTorch's by ~1e-4 (float16 storage
rounds by more). So on a CPU in float32 the trunk is exported to ONNX once
(about 15 s, shared by the train and validation features) and ONNX Runtime computes the features; everywhere else, and
whenever the export or a parity check fails, PyTorch does, with the reason
logged. Nothing here changes what is stored or trained.
"""

from __future__ import annotations

import importlib.util
import logging
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

log = logging.getLogger(__name__)

FEATURE_ENGINES = ("auto", "torch", "onnxruntime")
# ONNX Runtime images per call: 8 ran fastest of 8 / 16 / 32 on the 2-core EPYC (the working set
# stays in cache); loader batches are split into such chunks
ONNX_CHUNK = 8
# largest |ONNX - torch| accepted on the check batch, relative to the features' largest magnitude:
# float16 storage rounds by 2^-11 ~ 5e-4 relative, and the measured gap is ~2e-6
PARITY_TOLERANCE = 1e-3


def onnx_available() -> bool:
    """ONNX Runtime and the exporter's onnxscript are importable (the ``onnx`` extra)."""
    return all(importlib.util.find_spec(name) is not None for name in ("onnxruntime", "onnxscript"))


def resolve_engine(engine: str, precision: str, device: str | torch.device = "cpu") -> str:
    """``"auto"`` -> ``"onnxruntime"`` for float32 features on a CPU when the ``onnx`` extra is installed.

    Why not elsewhere: on a GPU PyTorch is the fast path, and bf16 autocast
    (CPUs with AVX-512 BF16 / AMX) is PyTorch's, unmeasured against ONNX
    Runtime's float32. ``precision`` is the resolved one (``"32"`` or ``"bf16"``).
    """
    if engine not in FEATURE_ENGINES:
        raise ValueError(f"feature engine must be one of {', '.join(FEATURE_ENGINES)}, got {engine!r}")
    if engine != "auto":
        return engine
    if torch.device(device).type != "cpu" or precision != "32":
        return "torch"
    return "onnxruntime" if onnx_available() else "torch"


class _Trunk(nn.Module):
    """``model.features(x, tail)`` as a module of its own: the graph that is exported."""

    def __init__(self, model: nn.Module, tail: int) -> None:
        super().__init__()
        self.model, self.tail = model, tail

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model.features(x, tail=self.tail)


class OnnxTrunk:
    """The model's frozen trunk exported to ONNX and run by ONNX Runtime: (B, C, S, S) -> (B, K, h, w) float32.

    The file lives in a temporary folder for the object's lifetime. Raises
    (ImportError, or whatever the exporter raises) when it cannot be built;
    :func:`trunk_runner` turns that into a fallback to PyTorch.
    """

    def __init__(self, model: nn.Module, example: torch.Tensor, *, tail: int = 0,
                 threads: int | None = None) -> None:
        import onnxruntime as ort

        self._folder = tempfile.TemporaryDirectory(prefix="xraylens-trunk-")
        path = Path(self._folder.name) / "trunk.onnx"
        trunk = _Trunk(model, tail).eval()
        batch = torch.export.Dim("batch", min=1, max=4096)
        quiet = [logging.getLogger(name) for name in ("onnx_ir", "onnxscript")]  # they log every pass at INFO
        levels = [logger.level for logger in quiet]
        for logger in quiet:
            logger.setLevel(logging.WARNING)
        try:
            program = torch.onnx.export(trunk, (example[:2].float().contiguous(),), dynamo=True,
                                        external_data=False, verbose=False, input_names=["image"],
                                        output_names=["features"], dynamic_shapes=({0: batch},))
        finally:
            for logger, level in zip(quiet, levels, strict=True):
                logger.setLevel(level)
        program.save(str(path), external_data=False)
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads or torch.get_num_threads()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        self.session: Any = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        images = np.ascontiguousarray(x.detach().to("cpu", torch.float32).numpy())
        parts = [self.session.run(None, {"image": images[i : i + ONNX_CHUNK]})[0]
                 for i in range(0, len(images), ONNX_CHUNK)]
        return torch.from_numpy(np.concatenate(parts))

    def close(self) -> None:
        self.session = None
        self._folder.cleanup()


def trunk_runner(model: nn.Module, shape: tuple[int, ...], engine: str, *, tail: int = 0,
                 desc: str = "features") -> tuple[Any, str]:
    """A callable images -> features for ``engine`` (resolved) on (C, S, S) images, and the engine it really is.

    ONNX Runtime is checked against PyTorch on a seeded random image; an export
    failure or a mismatch logs why and falls back to PyTorch, so an
    optimisation never stops a training run. Close the runner (``close``, if it
    has one) when done: it holds the exported file.
    """
    def torch_run(x: torch.Tensor) -> torch.Tensor:
        return model.features(x, tail=tail)

    if engine != "onnxruntime":
        return torch_run, "torch"
    example = torch.rand((2, *shape), generator=torch.Generator().manual_seed(0)) * 2 - 1
    was_training = model.training
    model.eval()
    try:
        try:
            onnx = OnnxTrunk(model, example, tail=tail)
        except Exception as exc:  # noqa: BLE001 - any exporter or runtime failure means: use torch
            log.warning("%s: ONNX Runtime unavailable for this model (%s: %s); computing them in PyTorch",
                        desc, type(exc).__name__, str(exc).splitlines()[0] if str(exc) else "")
            return torch_run, "torch"
        with torch.inference_mode():
            want = torch_run(example).float()
        got = onnx(example)
    finally:
        model.train(was_training)
    scale = float(want.abs().max()) or 1.0
    gap = float((got - want).abs().max()) / scale if got.shape == want.shape else float("inf")
    if gap > PARITY_TOLERANCE:
        onnx.close()
        log.warning("%s: ONNX Runtime's features differ from PyTorch's (relative %.2g > %.0e); computing them "
                    "in PyTorch", desc, gap, PARITY_TOLERANCE)
        return torch_run, "torch"
    return onnx, "onnxruntime"
