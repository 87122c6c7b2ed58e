"""How good is an explanation? Localisation against true boxes, faithfulness, and a sanity check.

* Localisation (needs ground-truth boxes, e.g. the synthetic dataset's):
  pointing game (is the map's maximum inside a true box?), IoU of the
  predicted boxes with the true ones, and the share of heat inside the true
  boxes. Each comes with its chance level so a number can be judged: a
  uniformly random point lands in a box with probability = the boxes' area
  fraction, and a uniform map puts exactly that share of its energy there.
* Faithfulness (no boxes needed): deletion and insertion curves (Petsiuk et
  al. 2018) - remove (or insert) the most salient pixels first and watch
  P(abnormal); compared with a random pixel order.
* Sanity (Adebayo et al. 2018): cascading randomisation of the network from
  the head down. A map that stays the same when the weights it claims to
  explain are destroyed explains the image, not the model, and fails.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from scipy import ndimage, stats
from torch import nn

from xraylens.data.boxes import TrueBox
from xraylens.explain.regions import Box, box_iou
from xraylens.models import architecture, get_submodule

# (model, images (B, C, S, S)) -> (B, S, S) maps in [0, 1]
CamFunction = Callable[[nn.Module, torch.Tensor], np.ndarray]


# ---------------------------------------------------------------- localisation


def box_mask(shape: tuple[int, int], boxes: Sequence[TrueBox]) -> np.ndarray:
    """(H, W) bool: pixels whose centre lies inside any box."""
    h, w = shape
    mask = np.zeros((h, w), bool)
    for b in boxes:
        x0, y0 = max(int(math.ceil(b.x0 - 0.5)), 0), max(int(math.ceil(b.y0 - 0.5)), 0)
        x1, y1 = min(int(math.ceil(b.x1 - 0.5)), w), min(int(math.ceil(b.y1 - 0.5)), h)
        mask[y0:y1, x0:x1] = True
    return mask


def pointing_hit(heatmap: np.ndarray, boxes: Sequence[TrueBox]) -> bool:
    """Is the map's maximum inside a true box? A flat map points nowhere and misses."""
    heat = np.asarray(heatmap)
    if heat.max() - heat.min() < 1e-6:
        return False
    y, x = np.unravel_index(int(np.argmax(heat)), heat.shape)
    return bool(box_mask(heat.shape, boxes)[y, x])


def energy_inside(heatmap: np.ndarray, boxes: Sequence[TrueBox]) -> float:
    """Share of the map's total heat that falls inside the true boxes (0 for an all-zero map)."""
    heat = np.asarray(heatmap, dtype=np.float64)
    total = heat.sum()
    return float(heat[box_mask(heat.shape, boxes)].sum() / total) if total > 0 else 0.0


def area_fraction(shape: tuple[int, int], boxes: Sequence[TrueBox]) -> float:
    """Union area of the boxes / image area: the chance of a uniformly random point (or uniform map)."""
    return float(box_mask(shape, boxes).mean())


def best_iou(predicted: Sequence[Box], truth: Sequence[TrueBox]) -> float:
    """IoU of the best-matching (predicted, true) pair; 0 without predicted boxes."""
    return max((box_iou(p.xyxy(), t.xyxy()) for p in predicted for t in truth), default=0.0)


def top_iou(predicted: Sequence[Box], truth: Sequence[TrueBox]) -> float:
    """IoU of the highest-scoring predicted box with its best-matching true box (what a reader sees first)."""
    return best_iou(predicted[:1], truth)


def matched_boxes(predicted: Sequence[Box], truth: Sequence[TrueBox], iou: float = 0.3) -> int:
    """How many predicted boxes overlap some true box at IoU >= ``iou`` (the found boxes that are right)."""
    return sum(any(box_iou(p.xyxy(), t.xyxy()) >= iou for t in truth) for p in predicted)


def localization_scores(heatmap: np.ndarray, truth: Sequence[TrueBox], predicted: Sequence[Box]) -> dict[str, float]:
    """Every localisation score of one map against one image's true boxes (same pixel grid)."""
    return {
        "pointing_hit": float(pointing_hit(heatmap, truth)),
        "chance": area_fraction(np.asarray(heatmap).shape, truth),
        "energy_inside": energy_inside(heatmap, truth),
        "iou_best": best_iou(predicted, truth),
        "iou_top": top_iou(predicted, truth),
        "n_boxes": float(len(predicted)),
        "boxes_matched_0.3": float(matched_boxes(predicted, truth, 0.3)),
    }


BOX_THRESHOLDS: tuple[float, ...] = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)


def top_box_hits(heatmap: np.ndarray, truths: Mapping[str, Sequence[TrueBox]],
                 thresholds: Sequence[float] = BOX_THRESHOLDS, iou: float = 0.3) -> dict[str, np.ndarray]:
    """For each set of true boxes (e.g. all of them, one kind's): does the top box cut at each
    ``fraction`` threshold reach IoU >= ``iou``? One ``find_boxes`` per threshold, shared by the sets."""
    from xraylens.explain.regions import find_boxes

    hits = {key: np.zeros(len(thresholds), bool) for key in truths}
    for j, threshold in enumerate(thresholds):
        found = find_boxes(heatmap, mode="fraction", threshold=threshold)
        for key, boxes in truths.items():
            hits[key][j] = top_iou(found, boxes) >= iou
    return hits


def box_accuracy_curve(hits: np.ndarray, thresholds: Sequence[float] = BOX_THRESHOLDS,
                       iou: float = 0.3) -> dict[str, Any]:
    """Top-box accuracy per threshold from (images, thresholds) hits, its maximum and where it is.

    Choe et al. (CVPR 2020, "Evaluating weakly supervised object localization
    methods right") show that WSOL rankings flip with the CAM threshold and
    report MaxBoxAcc, the accuracy at the best one. The maximum is chosen on
    the images scored, so it is an upper bound for them; a threshold for use
    (``explain --threshold``) should be picked on another split.
    """
    hits = np.asarray(hits, dtype=np.float64).reshape(-1, len(thresholds))
    if len(hits) == 0:
        return {"thresholds": list(thresholds), "accuracy": [], "max_accuracy": None,
                "best_threshold": None, "iou": iou}
    accuracy = hits.mean(0)
    best = int(np.argmax(accuracy))  # the lowest threshold among ties
    return {"thresholds": [float(t) for t in thresholds], "accuracy": accuracy.round(4).tolist(),
            "max_accuracy": float(accuracy[best]), "best_threshold": float(thresholds[best]), "iou": iou}


def wilson_interval(hits: float, n: int, z: float = 1.96) -> tuple[float, float]:
    """95 % Wilson score interval of a hit rate (sensible at 0 %, 100 % and small n)."""
    if n == 0:
        return (float("nan"), float("nan"))
    p = hits / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return (max(0.0, centre - half), min(1.0, centre + half))


def summarize_localization(rows: Sequence[dict[str, float]]) -> dict[str, float | None]:
    """Means over images, hit rates at IoU >= 0.3 / 0.5, a CI for the pointing game, and the chance levels."""
    n = len(rows)
    if n == 0:
        return {"n": 0}
    col = {k: np.array([r[k] for r in rows], dtype=np.float64) for k in rows[0]}
    hits = float(col["pointing_hit"].sum())
    low, high = wilson_interval(hits, n)
    return {
        "n": n,
        "pointing_game": hits / n,
        "pointing_game_ci95": [low, high],
        "pointing_chance": float(col["chance"].mean()),
        "energy_inside": float(col["energy_inside"].mean()),
        "energy_chance": float(col["chance"].mean()),
        "mean_iou": float(col["iou_best"].mean()),
        "hit_iou_0.3": float((col["iou_best"] >= 0.3).mean()),
        "hit_iou_0.5": float((col["iou_best"] >= 0.5).mean()),
        "mean_iou_top_box": float(col["iou_top"].mean()),
        "hit_iou_0.3_top_box": float((col["iou_top"] >= 0.3).mean()),
        "boxes_per_image": float(col["n_boxes"].mean()),
        # The found boxes that are right: predicted boxes at IoU >= 0.3 with a true box, over all predicted boxes.
        "box_precision_0.3": (float(col["boxes_matched_0.3"].sum() / col["n_boxes"].sum())
                              if col["n_boxes"].sum() else None),  # no box drawn: undefined (JSON null)
        # Predicting the whole image as one box scores IoU = the box area fraction.
        "iou_whole_image_baseline": float(col["chance"].mean()),
    }


# ---------------------------------------------------------------- faithfulness


def blurred(images: torch.Tensor, sigma_fraction: float = 1 / 16) -> torch.Tensor:
    """Heavily blurred copies: the 'removed' pixels (less out-of-distribution than black or the mean).

    OpenCV's separable filter, not torchvision's 2-D convolution: at 512 px the
    kernel is 193 x 193, 3.3 s for 4 images there against milliseconds here.
    Reflect-101 borders, as torchvision's ``gaussian_blur``.
    """
    import cv2

    size = images.shape[-1]
    sigma = max(size * sigma_fraction, 1.0)
    kernel = int(2 * math.ceil(3 * sigma) + 1)
    kernel = min(kernel, 2 * (size // 2) - 1) if kernel > size else kernel
    planes = images.detach().float().cpu().numpy().reshape(-1, *images.shape[-2:])
    out = np.stack([cv2.GaussianBlur(p, (kernel, kernel), sigma, borderType=cv2.BORDER_REFLECT_101) for p in planes])
    return torch.from_numpy(out).view(images.shape).to(images.device, images.dtype)


def _orders(heatmaps: np.ndarray, rng: np.random.Generator, random_order: bool) -> np.ndarray:
    """(B, S*S) pixel indices, most salient first; ties (flat areas) broken at random, not top-left first."""
    flat = heatmaps.reshape(len(heatmaps), -1)
    jitter = rng.random(flat.shape)
    if random_order:
        return np.argsort(jitter, axis=1)
    return np.stack([np.lexsort((j, -f)) for f, j in zip(flat, jitter, strict=True)])


MAX_FORWARD_PIXELS = 4 * 512 * 512  # input pixels per forward pass of the deletion/insertion curves


@torch.no_grad()
def deletion_insertion(
    model: nn.Module,
    images: torch.Tensor,
    heatmaps: np.ndarray | None,
    *,
    steps: int = 10,
    temperature: float = 1.0,
    batch_size: int = 64,
    seed: int = 0,
) -> dict[str, np.ndarray]:
    """Per-image deletion and insertion AUC of P(abnormal); ``heatmaps=None`` uses a random pixel order.

    Deletion replaces the top k/steps of pixels by their blurred version
    (a faithful map makes the probability fall fast: low AUC is good);
    insertion starts from the blurred image and restores the top pixels (high
    AUC is good). AUC is the trapezoid mean over the fraction axis in [0, 1].
    """
    model.eval()
    rng = np.random.default_rng(seed)
    b, _, s, _ = images.shape
    base = blurred(images)
    orders = torch.from_numpy(_orders(np.zeros((b, s, s)) if heatmaps is None else heatmaps, rng, heatmaps is None))
    # rank[i, p] = position of pixel p in image i's order; pixel p is "in" at step k when rank < count_k.
    ranks = torch.empty_like(orders)
    ranks.scatter_(1, orders, torch.arange(s * s).expand(b, -1).contiguous())
    counts = torch.tensor([round(k * s * s / steps) for k in range(steps + 1)])
    per_forward = max(1, batch_size // (2 * (steps + 1)))  # images whose curves share one forward pass
    curves = np.zeros((2, b, steps + 1))
    for start in range(0, b, per_forward):
        idx = slice(start, min(start + per_forward, b))
        masks = (ranks[idx, None, :] < counts[None, :, None]).to(images.dtype)  # (g, steps+1, S*S)
        masks = masks.view(-1, steps + 1, 1, s, s)
        x, blur = images[idx, None], base[idx, None]  # (g, 1, C, S, S)
        deletion = x * (1 - masks) + blur * masks
        insertion = blur * (1 - masks) + x * masks
        batch = torch.cat([deletion, insertion]).flatten(0, 1)  # (2 g (steps+1), C, S, S)
        # large inputs in small forward chunks: per image, big batches at 512 px are slower on a CPU
        chunk = max(1, MAX_FORWARD_PIXELS // (s * s))
        logits = torch.cat([model(part).reshape(-1) for part in batch.split(chunk)])
        probs = torch.sigmoid(logits / temperature).view(2, -1, steps + 1)
        curves[:, idx] = probs.cpu().numpy()
    auc = (curves.sum(2) - (curves[:, :, 0] + curves[:, :, -1]) / 2) / steps
    return {"deletion_auc": auc[0], "insertion_auc": auc[1], "deletion_curve": curves[0], "insertion_curve": curves[1]}


# ---------------------------------------------------------------- sanity: cascading randomisation


def randomisation_blocks(model: nn.Module, model_name: str) -> list[tuple[str, nn.Module]]:
    """Blocks from the top down: the head, then the feature extractor's stages, last first.

    The stages are the children of the module that holds the CAM layer
    (``features`` for DenseNet/MobileNet/EfficientNet/ConvNeXt, the model itself
    for ResNet), keeping only those with parameters.
    """
    arch = architecture(model_name)
    head = get_submodule(model, arch.head)
    container_name = arch.target_layer.rpartition(".")[0]
    container = get_submodule(model, container_name) if container_name else model
    prefix = f"{container_name}." if container_name else ""
    blocks = [(arch.head, head)]
    for name, child in reversed(list(container.named_children())):
        if child is head or any(p is q for p in child.parameters() for q in head.parameters()):
            continue
        if any(True for _ in child.parameters()):
            blocks.append((prefix + name, child))
    return blocks


@torch.no_grad()
def randomise_(module: nn.Module, generator: torch.Generator) -> None:
    """Re-initialise a block: weight matrices/kernels from a zero-mean Gaussian at their own RMS scale.

    Zero mean matters: a learned head whose weights share a sign would stay
    "the same classifier" under a draw that keeps the mean. Vectors (biases,
    normalisation scales) keep their mean and std so activations stay in range
    rather than collapsing to zero (a collapse would fake a "changed" map).
    """
    for p in module.parameters():
        if p.numel() < 2:
            continue
        noise = torch.randn(p.shape, generator=generator, dtype=p.dtype).to(p.device)
        if p.ndim >= 2:
            p.copy_(noise * float(p.pow(2).mean().sqrt()))
        elif float(p.std()) > 0:
            p.copy_(noise * float(p.std()) + float(p.mean()))


def rank_correlation(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman rank correlation of two maps; 1 when both are flat, 0 when only one is."""
    a, b = np.ravel(a), np.ravel(b)
    flat_a, flat_b = np.ptp(a) < 1e-9, np.ptp(b) < 1e-9
    if flat_a or flat_b:
        return 1.0 if flat_a and flat_b else 0.0
    return float(stats.spearmanr(a, b).statistic)


def ssim(a: np.ndarray, b: np.ndarray, sigma: float = 1.5) -> float:
    """Structural similarity of two [0, 1] maps (Gaussian window, Wang et al. 2004 constants)."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    c1, c2 = 0.01**2, 0.03**2
    mu_a, mu_b = ndimage.gaussian_filter(a, sigma), ndimage.gaussian_filter(b, sigma)
    var_a = ndimage.gaussian_filter(a * a, sigma) - mu_a**2
    var_b = ndimage.gaussian_filter(b * b, sigma) - mu_b**2
    cov = ndimage.gaussian_filter(a * b, sigma) - mu_a * mu_b
    num = (2 * mu_a * mu_b + c1) * (2 * cov + c2)
    den = (mu_a**2 + mu_b**2 + c1) * (var_a + var_b + c2)
    return float((num / den).mean())


def cascading_randomisation(
    model: nn.Module,
    model_name: str,
    images: torch.Tensor,
    cam: CamFunction,
    *,
    max_steps: int = 4,
    seed: int = 0,
    max_correlation: float = 0.5,
    unchanged_correlation: float = 0.9,
) -> dict[str, object]:
    """Randomise the head, then the last stages one by one (cumulatively); compare each step's maps with the original.

    Returns per-step mean Spearman / SSIM and a verdict: the method FAILS when
    the maps after the last step still rank pixels like the original (mean
    Spearman >= ``max_correlation``). ``head_insensitive`` flags a map that does
    not change (Spearman >= ``unchanged_correlation``) when only the classifier
    head is randomised (e.g. Eigen-CAM): such a map shows the features, not the
    decision. Images whose original map is flat (no evidence for the target at
    all) cannot show a change and are left out; with none left the verdict is
    UNTESTED rather than a free pass.
    """
    original = cam(model, images)
    informative = [i for i, m in enumerate(original) if np.ptp(m) > 1e-6]
    result: dict[str, object] = {"steps": [], "max_correlation": max_correlation, "n_images": len(informative),
                                 "n_flat": len(original) - len(informative)}
    if not informative:
        return {**result, "passed": None, "verdict": "UNTESTED", "head_insensitive": False,
                "note": "untested: every original map is flat (the model sees no evidence for the target)"}
    images, original = images[informative], original[informative]
    shadow = copy.deepcopy(model).eval()
    generator = torch.Generator().manual_seed(seed)
    blocks = dict(randomisation_blocks(shadow, model_name))
    names = list(blocks)[:max_steps]
    steps = []
    for depth, name in enumerate(names, start=1):
        randomise_(blocks[name], generator)
        maps = cam(shadow, images)
        rho = [rank_correlation(o, m) for o, m in zip(original, maps, strict=True)]
        sim = [ssim(o, m) for o, m in zip(original, maps, strict=True)]
        steps.append({"step": depth, "randomised": names[:depth], "spearman": float(np.mean(rho)),
                      "ssim": float(np.mean(sim))})
    last = steps[-1]["spearman"]
    passed = last < max_correlation
    head_insensitive = steps[0]["spearman"] >= unchanged_correlation
    return {**result, "steps": steps, "passed": passed, "verdict": "PASS" if passed else "FAIL",
            "head_insensitive": head_insensitive,
            "note": _sanity_note(passed, head_insensitive, last, max_correlation)}


def _sanity_note(passed: bool, head_insensitive: bool, last: float, limit: float) -> str:
    if not passed:
        return (f"FAIL: after randomising the top of the network the maps still correlate with the original "
                f"(Spearman {last:.2f} >= {limit}); they reflect the image, not what the model learned")
    if head_insensitive:
        return ("pass, but the map does not change when only the classifier head is randomised: it shows "
                "the features, not the decision")
    return f"pass: the maps change as the weights are randomised (final Spearman {last:.2f})"
