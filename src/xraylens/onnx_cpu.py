"""PyTorch modules run by ONNX Runtime on the CPU: the frozen trunk of the cached recipe, and evaluation.

Why: PyTorch runs EfficientNet-Lite0's depthwise convolutions slowly on a CPU,
and computing the frozen features is most of the CPU recipe's training time.
ONNX Runtime runs the same float32 graph 2.7-5.6x faster than PyTorch's float32
on the 2-core EPYCs we measured, and 2.5-3.4x faster than its bfloat16 autocast
where the CPU has AVX-512 BF16 (benchmarks/bench_features.py; benchmarks/README.md), with outputs that differ from PyTorch's by ~1e-6 relative (float16
storage rounds by more). So on a CPU in float32 the module is exported to ONNX
once (about 15 s) and ONNX Runtime runs it; everywhere else, and whenever the
export or a parity check fails, PyTorch does, with the reason logged. Nothing
here changes what is stored, trained or reported beyond that rounding.
"""

from __future__ import annotations

import importlib.util
import logging
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

log = logging.getLogger(__name__)

ENGINES = ("auto", "torch", "onnxruntime")
# ONNX Runtime images per call: 8 ran fastest of 8 / 16 / 32 on the 2-core EPYC (the working set
# stays in cache); larger batches are split into such chunks
ONNX_CHUNK = 8
# largest |ONNX - torch| accepted on the check batch, relative to the output's largest magnitude:
# float16 storage rounds by 2^-11 ~ 5e-4 relative, and the measured gap is ~2e-6
PARITY_TOLERANCE = 1e-3
# "auto" exports only for at least this many images: an export costs ~15 s, which ONNX Runtime wins back
# after ~80 images at 512 px on the 2-core EPYC (0.19 s saved per image); small jobs stay in PyTorch
AUTO_MIN_IMAGES = 256


def onnx_available() -> bool:
    """ONNX Runtime and the exporter's onnxscript are importable (the ``onnx`` extra)."""
    return all(importlib.util.find_spec(name) is not None for name in ("onnxruntime", "onnxscript"))


def resolve_engine(engine: str, precision: str = "32", device: str | torch.device = "cpu",
                   images: int | None = None) -> str:
    """``"auto"`` -> ``"onnxruntime"`` for float32 work on a CPU when the ``onnx`` extra is installed.

    ``precision`` is the one asked for: ``"32"``, ``"bf16"`` or ``"auto"``. Only
    an explicit ``"bf16"`` keeps PyTorch (bf16 autocast is PyTorch's); ``"auto"``
    takes ONNX Runtime's float32 on every CPU, because it was faster there than
    PyTorch's bf16 even with native bfloat16 (AVX-512 BF16: 51 against 15-21
    images/s, benchmarks/README.md) and exact besides. On a GPU PyTorch is the
    fast path. ``images``: how many the job runs; fewer than
    :data:`AUTO_MIN_IMAGES` would not pay for the export.
    """
    if engine not in ENGINES:
        raise ValueError(f"engine must be one of {', '.join(ENGINES)}, got {engine!r}")
    if engine != "auto":
        return engine
    if torch.device(device).type != "cpu" or precision == "bf16":
        return "torch"
    if images is not None and images < AUTO_MIN_IMAGES:
        return "torch"
    return "onnxruntime" if onnx_available() else "torch"


class Trunk(nn.Module):
    """``model.features(x, tail)`` as a module of its own: the cached recipe's graph to export."""

    def __init__(self, model: nn.Module, tail: int = 0) -> None:
        super().__init__()
        self.model, self.tail = model, tail
        self.training = model.training  # the wrapper reports (and so restores) the model's mode

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model.features(x, tail=self.tail)


def dynamo_export(module: nn.Module, example: torch.Tensor, *, input_names: list[str], output_names: list[str],
                  opset: int | None = None) -> Any:
    """``torch.onnx.export`` (the dynamo exporter) of ``module`` on ``example``, with a dynamic batch axis.

    Shared by the cached recipe's engine and ``xraylens export``; the exporter's
    onnx_ir and onnxscript loggers, which report every pass at INFO, are quieted
    to warnings for the call and restored after it.
    """
    quiet = [logging.getLogger(name) for name in ("onnx_ir", "onnxscript")]
    levels = [logger.level for logger in quiet]
    for logger in quiet:
        logger.setLevel(logging.WARNING)
    try:
        return torch.onnx.export(module, (example,), dynamo=True, external_data=False, opset_version=opset,
                                 verbose=False, input_names=input_names, output_names=output_names,
                                 dynamic_shapes=({0: torch.export.Dim("batch", min=1, max=4096)},))
    finally:
        for logger, level in zip(quiet, levels, strict=True):
            logger.setLevel(level)


class OnnxModule:
    """``module`` exported to ONNX and run by ONNX Runtime on the CPU: a float32 (B, ...) tensor in, one out.

    The file lives in a temporary folder for the object's lifetime. Raises
    (ImportError, or whatever the exporter raises) when it cannot be built;
    :func:`runner` turns that into a fallback to PyTorch.
    """

    def __init__(self, module: nn.Module, example: torch.Tensor, *, threads: int | None = None) -> None:
        import onnxruntime as ort

        self._folder = tempfile.TemporaryDirectory(prefix="xraylens-onnx-")
        path = Path(self._folder.name) / "module.onnx"
        program = dynamo_export(module.eval(), example[:2].float().contiguous(), input_names=["input"],
                                output_names=["output"])
        program.save(str(path), external_data=False)
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads or torch.get_num_threads()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        self.session: Any = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        inputs = np.ascontiguousarray(x.detach().to("cpu", torch.float32).numpy())
        parts = [self.session.run(None, {"input": inputs[i : i + ONNX_CHUNK]})[0]
                 for i in range(0, len(inputs), ONNX_CHUNK)]
        return torch.from_numpy(np.concatenate(parts))

    def close(self) -> None:
        self.session = None
        self._folder.cleanup()


def runner(module: nn.Module, shape: tuple[int, ...], engine: str, *,
           desc: str = "model") -> tuple[Callable[[torch.Tensor], torch.Tensor], str]:
    """A callable (B, *shape) -> output for ``engine`` (resolved), and the engine it really is.

    ONNX Runtime is checked against PyTorch on a seeded random input in
    [-1, 1]; an export failure or a mismatch logs why and falls back to
    PyTorch, so an optimisation never stops a run. The PyTorch runner is
    ``module`` itself (the caller sets its mode); the export and the check run
    it in eval mode and restore the mode it had. Release the runner with
    :func:`close` when done: it holds the exported file.
    """
    if engine != "onnxruntime":
        return module, "torch"
    example = torch.rand((2, *shape), generator=torch.Generator().manual_seed(0)) * 2 - 1
    was_training = module.training
    try:
        onnx = OnnxModule(module.eval(), example)
        with torch.inference_mode():
            want = module(example).float()
    except Exception as exc:  # noqa: BLE001 - any exporter or runtime failure means: use torch
        log.warning("%s: ONNX Runtime unavailable for this model (%s: %s); running it in PyTorch",
                    desc, type(exc).__name__, str(exc).splitlines()[0] if str(exc) else "")
        return module, "torch"
    finally:
        module.train(was_training)
    got = onnx(example)
    scale = float(want.abs().max()) or 1.0
    gap = float((got - want).abs().max()) / scale if got.shape == want.shape else float("inf")
    if gap > PARITY_TOLERANCE:
        onnx.close()
        log.warning("%s: ONNX Runtime's output differs from PyTorch's (relative %.2g > %.0e); running it in "
                    "PyTorch", desc, gap, PARITY_TOLERANCE)
        return module, "torch"
    return onnx, "onnxruntime"


def close(run: object) -> None:
    """Release what a :func:`runner` holds (its exported file), if anything."""
    release = getattr(run, "close", None)  # an OnnxModule's; a PyTorch module holds nothing to release
    if callable(release):
        release()
