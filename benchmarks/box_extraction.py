"""Where boxes cut from a MIL model's maps go wrong: the same maps, cut the old way and the new way.

For the abnormal ``valid`` images with true boxes (a seeded sample, as
``explain-eval`` draws it), computes the model's instance logits and HiResCAM
once, then scores boxes cut at ``--cuts`` (``mode:threshold``, e.g.
``fraction:0.5``) from:

  logits min-max      the native map before 2026-12-03: min-max of the instance logits
  probability         the package's map (``instance_probability_map``): each cell's P over the peak's
  hirescam            the gradient CAM at the default layer, for comparison

each with the size filter as it was before 2026-12-03 (``keep_peak=False``: a
peak's component under 0.2 % of the film is dropped like any speck) and as it is
now (the peak's component is always kept). Per finding kind: the
share of images whose best / top box reaches IoU >= 0.3, the share of all boxes
drawn that reach it (found-box precision), the median side of the top box, and
boxes per image.

Usage: python benchmarks/box_extraction.py CHECKPOINT DATA [--limit 120] [--cuts fraction:0.5 otsu:0]
"""

from __future__ import annotations

import argparse

import numpy as np
import torch

from xraylens.data.formats import open_for
from xraylens.data.images import read_image
from xraylens.data.preprocess import prepare
from xraylens.explain.cams import _normalise, compute_cams, instance_probability_map
from xraylens.explain.regions import box_iou, find_boxes
from xraylens.explain.scores import best_iou, top_iou
from xraylens.models import load_checkpoint


def images_with_boxes(loaded, data: str, limit: int, seed: int):
    """The explain-eval selection: abnormal valid images with true boxes, a seeded sample, sorted by path."""
    index = open_for(data, loaded.meta.experiment.get("data") or {}, splits=("valid",), progress=False)
    truth = index.boxes if index.boxes is not None else None
    if truth is None:
        from xraylens.data.boxes import find_box_table, read_box_table

        truth = read_box_table(find_box_table(data, index.root))
    table = index.table[(index.table["label"] == 1) & index.table["path"].isin([p for p, b in truth.items() if b])]
    if limit and len(table) > limit:
        table = table.sample(n=limit, random_state=seed)
    table = table.sort_values("path")
    rows = [prepare(read_image(f), loaded.meta.preprocessing) for f in table["file"]]
    return torch.stack([x for x, _ in rows]), [lb for _, lb in rows], [truth[p] for p in table["path"]]


def score(maps: np.ndarray, geometry, truth, mode: str, threshold: float, keep_peak: bool) -> dict[str, list[float]]:
    kinds = ("all", "fracture", "hardware", "lesion")
    best, top, right, drawn, side = ({k: [] for k in kinds} for _ in range(5))
    for heat, lb, boxes in zip(maps, geometry, truth, strict=True):
        heat = np.clip(lb.to_original(heat), 0, 1)
        found = find_boxes(heat, mode=mode, threshold=threshold, keep_peak=keep_peak)
        for kind in ("all", *{b.kind for b in boxes}):
            mine = boxes if kind == "all" else [b for b in boxes if b.kind == kind]
            best[kind].append(best_iou(found, mine) >= 0.3)
            top[kind].append(top_iou(found, mine) >= 0.3)
            right[kind].append(sum(any(box_iou(f.xyxy(), t.xyxy()) >= 0.3 for t in mine) for f in found))
            drawn[kind].append(len(found))
            side[kind] += [float(np.sqrt(found[0].width * found[0].height))] if found else []
    return {k: [np.mean(best[k]), np.mean(top[k]), sum(right[k]) / max(sum(drawn[k]), 1),
                float(np.median(side[k])) if side[k] else 0.0, np.mean(drawn[k])] for k in kinds if best[k]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoint")
    parser.add_argument("data")
    parser.add_argument("--limit", type=int, default=120)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--cuts", nargs="+", default=["fraction:0.5"])
    args = parser.parse_args()
    loaded = load_checkpoint(args.checkpoint)
    model, name = loaded.model.eval(), loaded.meta.model.name
    x, geometry, truth = images_with_boxes(loaded, args.data, args.limit, args.seed)
    size = tuple(x.shape[-2:])
    with torch.no_grad():
        logits = torch.cat([model.saliency(part) for part in x.split(8)])
    maps = {
        "logits min-max": _normalise(logits - logits.flatten(1).amin(1)[:, None, None], size),
        "probability": instance_probability_map(logits, size),
        "hirescam": np.concatenate([compute_cams(model, name, part, method="hirescam") for part in x.split(8)]),
    }
    print(f"{args.checkpoint} on {args.data}: {len(x)} abnormal valid images with boxes")
    print("per kind: best box IoU>=0.3 / top box IoU>=0.3 / found boxes IoU>=0.3 / median top-box side px / boxes per image")
    print("| map | cut | size filter | all | fracture | hardware | lesion |\n" + "|---" * 7 + "|")
    for label, m in maps.items():
        for cut in args.cuts:
            mode, threshold = cut.split(":")
            for keep_peak in (False, True):
                result = score(m, geometry, truth, mode, float(threshold), keep_peak)
                cells = [" / ".join([f"{v[0]:.0%}", f"{v[1]:.0%}", f"{v[2]:.0%}", f"{v[3]:.0f}", f"{v[4]:.1f}"])
                         for v in (result.get(k, [np.nan] * 5) for k in ("all", "fracture", "hardware", "lesion"))]
                print(f"| {label} | {cut} | {'keeps the peak' if keep_peak else 'drops small peaks'} | "
                      + " | ".join(cells) + " |", flush=True)


if __name__ == "__main__":
    main()
