"""Does a finer native map find the realistic fractures? Stride 16 / 8 / shift-and-stitched stride 4.

The stacked MIL model's head read on its coarse grid (stride 16), on
``StackedTrunk.fine`` (stride 8, what ``--method saliency`` shows), and on a
stride-4 grid made by shift-and-stitch (Long et al., CVPR 2015): the stride-8
map of the film shifted by -2 and +2 px in x and y, four passes interleaved.
Scored on the abnormal ``valid`` films with boxes (the explain-eval sample),
per kind on the films whose findings are all of that kind: pointing game, top
box at IoU >= 0.3, share of found boxes at IoU >= 0.3.

Measured 2026-12-07 (README, goal 3): realistic 3000, labels only, 200 films:
fracture pointing 61% at stride 8 and 61% at stride 4, so it was not built in.

Usage: python benchmarks/shift_stitch.py CHECKPOINT DATA [--limit 200]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
import torch.nn.functional as F
from box_extraction import images_with_boxes

from xraylens.explain.cams import instance_probability_map
from xraylens.explain.detection import kind_of_image
from xraylens.explain.regions import box_iou, find_boxes
from xraylens.explain.scores import pointing_hit, top_iou
from xraylens.models import load_checkpoint

KINDS = ("all", "fracture", "hardware", "lesion", "several kinds")


def shifted(images: torch.Tensor, dy: int, dx: int, pad: int = 4) -> torch.Tensor:
    """The film moved so that out[u] = images[u + d], edges replicated."""
    big = F.pad(images, (pad, pad, pad, pad), mode="replicate")
    return big[..., pad + dy : pad + dy + images.shape[-2], pad + dx : pad + dx + images.shape[-1]]


def stitched(fine, images: torch.Tensor, n: int = 2, step: int = 8) -> torch.Tensor:
    """n x n shifted passes of a stride-``step`` map interleaved into a stride ``step / n`` map."""
    offsets = [round(step / n * (k + 0.5) - step / 2) for k in range(n)]
    out = None
    for a, dy in enumerate(offsets):
        for b, dx in enumerate(offsets):
            cells = fine(shifted(images, dy, dx))
            if out is None:
                out = cells.new_zeros(cells.shape[0], cells.shape[1] * n, cells.shape[2] * n)
            out[:, a::n, b::n] = cells
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoint")
    parser.add_argument("data")
    parser.add_argument("--limit", type=int, default=200)
    args = parser.parse_args()
    loaded = load_checkpoint(args.checkpoint)
    model = loaded.model.eval()
    x, geometry, truth = images_with_boxes(loaded, args.data, args.limit, 0)
    # saliency is the head on StackedTrunk.fine (stride 8); classify_with_map's map is the pooled grid
    variants = {"stride 16": lambda i: model.classify_with_map(model.features(i))[1], "stride 8": model.saliency,
                "stride 4 (2x2 shifts)": lambda i: stitched(model.saliency, i)}
    for name, read in variants.items():
        start = time.time()
        with torch.no_grad():
            logits = torch.cat([read(part) for part in x.split(4)])
        seconds = (time.time() - start) / len(x)
        scores = {k: ([], [], [0, 0]) for k in KINDS}
        for heat, letterbox, boxes in zip(instance_probability_map(logits, tuple(x.shape[-2:])), geometry, truth,
                                          strict=True):
            heat = np.clip(letterbox.to_original(heat), 0, 1)
            found = find_boxes(heat)
            for kind in ("all", kind_of_image(boxes)):
                hits, tops, counts = scores[kind]
                hits.append(pointing_hit(heat, boxes))
                tops.append(top_iou(found, boxes) >= 0.3)
                counts[0] += sum(any(box_iou(f.xyxy(), t.xyxy()) >= 0.3 for t in boxes) for f in found)
                counts[1] += len(found)
        cells = [f"{k} ({len(h)}): pointing {np.mean(h):.0%}, top box {np.mean(t):.0%}, found {c[0] / max(c[1], 1):.0%}"
                 for k, (h, t, c) in scores.items() if h]
        print(f"{name} [{seconds:.2f} s/image]: " + " | ".join(cells), flush=True)


if __name__ == "__main__":
    main()
