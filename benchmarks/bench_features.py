"""Frozen-feature throughput of the demo's trunk: the ways of running it in float32 on a CPU.

Why: ``train.backbone=cached`` spends most of the demo's training time computing
the frozen EfficientNet-Lite0 features once per image. On CPUs with AVX-512 BF16
they run under bfloat16 autocast; everywhere else (most laptops, AVX2 servers)
they are float32, about half as fast. This measures what each engine makes of
that float32 work, on the model ``demo_cpu`` trains (blocks 2-4 stacked, 512 px):

- ``eager``: PyTorch eager, NCHW;
- ``channels_last``: eager with NHWC tensors (what ``compute_features`` does);
- ``fused``: channels_last with every BatchNorm folded into its convolution;
- ``jit``: TorchScript traced, frozen and ``optimize_for_inference`` (oneDNN);
- ``onnxruntime``: the trunk exported to ONNX and run by ONNX Runtime in chunks of 8 images
  (``train.feature_engine=onnxruntime``, what ``demo_cpu`` uses on such CPUs);
- ``bf16``: channels_last under bfloat16 autocast (fast only with native bf16).

Prints images per second (median of ``--repeats`` timed runs after a warm-up),
the ratio to ``channels_last`` and the largest absolute difference of the
features from eager float32 (cached features are stored as float16, whose step
near 1 is 0.001). Random weights: speed does not depend on them.

Usage: OMP_WAIT_POLICY=PASSIVE python benchmarks/bench_features.py [--size 512] [--batch 16]
           [--repeats 5] [--threads 2] [--engines eager channels_last fused jit onnxruntime bf16]
"""

from __future__ import annotations

import argparse
import copy
from collections.abc import Callable

import numpy as np
import torch
from benchkit import machine, rate
from torch import nn

from xraylens.config import ModelConfig
from xraylens.models import create_model_from_config
from xraylens.onnx_cpu import Trunk

ENGINES = ("eager", "channels_last", "fused", "jit", "onnxruntime", "bf16")


def fold_batchnorms(module: nn.Module) -> int:
    """Fold each eval-mode BatchNorm into the convolution before it (timm's ``conv_*`` / ``bn*`` pairs); count them.

    timm's ``BatchNormAct2d`` keeps its activation: it is replaced by that
    activation alone. torch.fx cannot trace timm's TF "same" padding, hence by hand.
    """
    from torch.nn.utils.fusion import fuse_conv_bn_eval

    folded = 0
    for parent in list(module.modules()):
        children = list(parent.named_children())
        for (conv_name, conv), (bn_name, bn) in zip(children, children[1:], strict=False):
            if isinstance(conv, nn.Conv2d) and isinstance(bn, nn.BatchNorm2d):
                setattr(parent, conv_name, fuse_conv_bn_eval(conv, bn))
                setattr(parent, bn_name, nn.Sequential(getattr(bn, "drop", nn.Identity()), getattr(bn, "act", nn.Identity())))
                folded += 1
    return folded


def engine(name: str, model: nn.Module, example: torch.Tensor) -> Callable[[torch.Tensor], torch.Tensor]:
    """A function images -> features for ``name`` (a fresh copy of the model each)."""
    trunk = Trunk(copy.deepcopy(model)).eval()
    if name == "eager":
        return trunk
    if name in ("channels_last", "bf16", "fused"):
        if name == "fused":
            fold_batchnorms(trunk)
        trunk = trunk.to(memory_format=torch.channels_last)

        def run(x: torch.Tensor) -> torch.Tensor:
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=name == "bf16"):
                return trunk(x.contiguous(memory_format=torch.channels_last)).float()

        return run
    if name == "jit":
        with torch.no_grad():
            traced = torch.jit.trace(trunk, example)
        return torch.jit.optimize_for_inference(torch.jit.freeze(traced))
    if name == "onnxruntime":  # the package's own engine (train.feature_engine=onnxruntime)
        from xraylens.onnx_cpu import OnnxModule

        return OnnxModule(Trunk(copy.deepcopy(model)), example)
    raise ValueError(f"unknown engine {name!r}; choose from {', '.join(ENGINES)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="mil_efficientnet_lite0_multiscale")
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--engines", nargs="+", default=list(ENGINES), choices=ENGINES)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(machine(), flush=True)
    model = create_model_from_config(ModelConfig(name=args.model, pretrained=False, in_channels=1)).eval()
    gen = torch.Generator().manual_seed(0)
    batch = torch.randn(args.batch, 1, args.size, args.size, generator=gen)
    with torch.inference_mode():
        reference = model.features(batch)
    print(f"{args.model} features at {args.size} px, batch {args.batch}: {tuple(reference.shape[1:])}", flush=True)
    rows = []
    for name in args.engines:
        run = engine(name, model, batch)
        with torch.inference_mode():
            diff = float((run(batch).float() - reference).abs().max())
            speed = rate(lambda run=run: len(run(batch)), args.repeats, warmup=1, min_seconds=1.0)
        rows.append((name, speed, diff))
        print(f"  {name}: {speed:.2f} img/s, max |diff| {diff:.2e}", flush=True)
    base = dict((n, s) for n, s, _ in rows).get("channels_last", rows[0][1])
    print("\n| engine | images/s | vs channels_last | max abs diff from eager fp32 |\n|---|---|---|---|")
    for name, speed, diff in rows:
        print(f"| {name} | {speed:.2f} | {speed / base:.2f}x | {diff:.1e} |")
    print(f"reference feature scale: mean |f| {float(reference.abs().mean()):.3f}, "
          f"max {float(reference.abs().max()):.2f}; {np.prod(reference.shape[1:]):,} values per image")


if __name__ == "__main__":
    main()
