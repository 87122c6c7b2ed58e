"""Explanation speed: CAMs per second against one forward + backward pass, batched and one image at a time.

For each model (random weights: speed does not depend on them; channels_last as
``load_checkpoint`` builds it, or ``--layout contiguous``) and a batch of random
inputs, times through the package's CAM API (``compute_cams``):

  forward+backward    one forward + backward to the input with frozen parameters, as the CAMs run it:
                      the limit for gradient CAMs (Grad-CAM, HiResCAM, Grad-CAM++)
  forward             one no-grad forward pass: the limit for the native ``saliency`` map
  each method         of ``--methods`` the model supports (``methods_for``: saliency needs a mil_* model)

each both batched (``batch_size`` = the batch) and one image at a time
(``batch_size=1``, the seed's way). Prints images per second (median of
``--repeats`` timed runs after a warm-up), the ratio to batched
forward+backward, and the speed-up of batching.

Usage: python benchmarks/bench_explain.py [--models mil_efficientnet_lite0:512:4 mobilenet_v2:224:8]
                                          [--methods saliency gradcam hirescam] [--layout channels_last]
                                          [--repeats 3] [--threads 2]
"""

from __future__ import annotations

import argparse
from collections.abc import Callable

import torch
from benchkit import cell, load_now, machine, markdown_row, markdown_table, rate

from xraylens.explain.cams import compute_cams, frozen_parameters, methods_for
from xraylens.models import create_model


def forward(model: torch.nn.Module, images: torch.Tensor, batch_size: int) -> int:
    with torch.no_grad():
        for chunk in images.split(batch_size):
            model(chunk)
    return len(images)


def forward_backward(model: torch.nn.Module, images: torch.Tensor, batch_size: int) -> int:
    with frozen_parameters(model):
        for chunk in images.split(batch_size):
            model(chunk.clone().requires_grad_(True)).sum().backward()
    return len(images)


def timed(run: Callable[..., int], model: torch.nn.Module, images: torch.Tensor, batch_size: int,
          repeats: int) -> float:
    return rate(lambda: run(model, images, batch_size), repeats)


def runners(model: torch.nn.Module, name: str, methods: tuple[str, ...]) -> dict[str, Callable[..., int]]:
    def cams(method: str) -> Callable[..., int]:
        return lambda m, images, batch_size: len(compute_cams(m, name, images, method=method, batch_size=batch_size))

    return {"forward+backward": forward_backward, "forward": forward,  # the limit first: the ratios' base
            **{method: cams(method) for method in methods_for(name, methods)}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=["mil_efficientnet_lite0:512:4", "mobilenet_v2:224:8"],
                        metavar="NAME:SIZE:BATCH")
    parser.add_argument("--methods", nargs="+", default=["saliency", "gradcam", "hirescam"])
    parser.add_argument("--layout", choices=["channels_last", "contiguous"], default="channels_last",
                        help="the model's memory layout (default channels_last, as load_checkpoint builds it)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2, help="torch intra-op threads (default 2)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"machine: {machine()}")
    print(f"explanations, {args.layout} model: images/s, median of {args.repeats}; (ratio) = vs batched "
          "forward+backward", flush=True)
    header = ["model", "size", "batch", "what", "batched", "one at a time", "batched / one"]
    rows = []
    for spec in args.models:
        name, size, batch = spec.split(":")[0], int(spec.split(":")[1]), int(spec.split(":")[2])
        torch.manual_seed(0)
        model = create_model(name, pooling="topk" if name.startswith("mil_") else "avg").eval()
        if args.layout == "channels_last":
            model = model.to(memory_format=torch.channels_last)
        images = torch.randn(batch, 1, size, size)
        limit = None
        for what, run in runners(model, name, tuple(args.methods)).items():
            batched, single = (timed(run, model, images, b, args.repeats) for b in (batch, 1))
            limit = batched if what == "forward+backward" else limit
            rows.append([name, size, batch, what, cell(batched, limit), cell(single, limit),
                         f"{batched / single:.2f}x"])
            print(markdown_row(rows[-1]), flush=True)
    print()
    print(markdown_table(header, rows))
    print(f"\n{load_now()} at the end")


if __name__ == "__main__":
    main()
