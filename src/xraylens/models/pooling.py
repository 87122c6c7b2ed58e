"""Global spatial pooling: how a map of local evidence becomes one number per channel.

The choice matters most for findings that are tiny next to the image (a
hairline fracture covers a few hundredths of a percent of a radiograph):

* ``avg`` (torchvision's, and the MURA paper's) lets a finding that covers 1%
  of the map move the pooled value by about 1%;
* ``max`` scores the one place that looks most abnormal (multiple-instance
  learning, Oquab et al. 2015);
* ``lse`` (log-sum-exp with sharpness ``r``, Wang et al. 2017) sits between them;
* ``topk`` averages the top ``fraction`` of locations (GMIC's top-t% pooling,
  Shen et al. 2021): as focused as max, but its gradient reaches several
  locations, so training is steadier. ``topk:0.01`` sets the fraction
  (default 0.02).

None has parameters, so every pooling shares the same weights layout.
Measured on frozen ImageNet features at 512 px (README, "What learns"): top-k
beat max, lse, gated attention and average for the spatial MIL head.
"""

from __future__ import annotations

import math

import torch
from torch import nn

POOLINGS: tuple[str, ...] = ("avg", "max", "lse", "topk")


TOPK_FRACTION = 0.02  # GMIC's t; "topk:F" sets another


def parse_pooling(spec: str) -> tuple[str, float]:
    """``"topk:0.01"`` -> ("topk", 0.01); a bare kind takes the default top-k fraction.

    Why a suffix and not another config key: the fraction only means something
    for ``topk``, and one string travels in the checkpoint's model config as the
    pooling always has, so older checkpoints load unchanged.
    """
    kind, _, rest = str(spec).partition(":")
    if kind not in POOLINGS:
        raise ValueError(f"unknown pooling {spec!r}; available: {', '.join(POOLINGS)} (top-k with its fraction: "
                         "topk:0.01)")
    if not rest:
        return kind, TOPK_FRACTION
    try:
        fraction = float(rest)
    except ValueError:
        fraction = float("nan")
    if kind != "topk" or not 0.0 < fraction <= 1.0:
        raise ValueError(f"pooling {spec!r}: only topk takes a fraction, and it must be in (0, 1], e.g. topk:0.01")
    return kind, fraction


def check_pooling(spec: str) -> str:
    parse_pooling(spec)
    return spec


class GlobalPool(nn.Module):
    """(B, C, H, W) -> (B, C, 1, 1) (or (B, C) with ``flatten``) by average, max, log-sum-exp or top-k mean."""

    def __init__(self, kind: str = "avg", sharpness: float = 5.0, fresh_output: bool = False,
                 fraction: float | None = None, flatten: bool = False) -> None:
        super().__init__()
        self.kind, parsed = parse_pooling(kind)
        fraction = parsed if fraction is None else fraction
        self.sharpness = float(sharpness)
        if not 0.0 < fraction <= 1.0:
            raise ValueError(f"top-k fraction must be in (0, 1], got {fraction}")
        self.fraction = float(fraction)
        # densenet's forward applies ReLU *in place* to what ``features`` returns, which would
        # overwrite the max's output that its backward needs: hand it a copy instead.
        self.fresh_output = fresh_output
        self.flatten = flatten  # timm heads expect (B, C), torchvision's flatten inside forward()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        flat = x.flatten(2)  # (B, C, H*W)
        if self.kind == "avg":
            pooled = flat.mean(dim=2)
        elif self.kind == "max":
            pooled = flat.amax(dim=2)
        elif self.kind == "lse":
            r = self.sharpness
            pooled = (torch.logsumexp(r * flat, dim=2) - math.log(flat.shape[2])) / r
        else:
            k = max(1, int(round(self.fraction * flat.shape[2])))
            pooled = flat.topk(k, dim=2).values.mean(dim=2)
        pooled = pooled if self.flatten else pooled[:, :, None, None]
        return pooled.clone() if self.fresh_output else pooled

    def extra_repr(self) -> str:
        if self.kind == "lse":
            return f"lse, sharpness={self.sharpness}"
        if self.kind == "topk":
            return f"topk, fraction={self.fraction}"
        return self.kind
