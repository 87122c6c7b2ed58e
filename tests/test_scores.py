"""Localisation, faithfulness and sanity scores: hand-made cases, and a small trained model whose CAMs must find the finding."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest
import torch
from scipy import ndimage
from torch import nn

from xraylens import models
from xraylens.data.preprocess import Preprocessing, to_tensor
from xraylens.explain.cams import compute_cams
from xraylens.explain.regions import Box, find_boxes
from xraylens.explain.scores import (
    TrueBox,
    area_fraction,
    best_iou,
    box_accuracy_curve,
    box_mask,
    cascading_randomisation,
    deletion_insertion,
    energy_inside,
    localization_scores,
    matched_boxes,
    pointing_hit,
    randomisation_blocks,
    rank_correlation,
    ssim,
    summarize_localization,
    top_box_hits,
    top_iou,
    wilson_interval,
)

# ---------------------------------------------------------------- hand-made cases


def test_pointing_game_by_hand() -> None:
    heat = np.zeros((50, 80))
    heat[20, 30] = 1.0
    assert pointing_hit(heat, [TrueBox(25, 15, 35, 25)])
    assert not pointing_hit(heat, [TrueBox(31, 15, 40, 25)])  # x1 exclusive on the left edge: 30 < 31
    assert not pointing_hit(heat, [TrueBox(20, 10, 30, 20)])  # ... and on the right edge: 30 == x1 is outside
    assert pointing_hit(heat, [TrueBox(0, 0, 5, 5), TrueBox(30, 20, 31, 21)])  # any of the boxes
    assert not pointing_hit(np.zeros((50, 80)), [TrueBox(0, 0, 80, 50)])  # a flat map points nowhere


def test_energy_and_chance_by_hand() -> None:
    heat = np.zeros((10, 10))
    heat[0:2, 0:5] = 1.0  # 10 hot pixels
    heat[9, 9] = 10.0
    box = [TrueBox(0, 0, 5, 2)]
    assert energy_inside(heat, box) == pytest.approx(10 / 20)
    assert area_fraction((10, 10), box) == pytest.approx(0.1)
    assert area_fraction((10, 10), [TrueBox(0, 0, 5, 2), TrueBox(0, 0, 5, 4)]) == pytest.approx(0.2)  # union
    assert energy_inside(np.ones((10, 10)), box) == pytest.approx(area_fraction((10, 10), box))  # uniform = chance
    assert box_mask((4, 4), [TrueBox(1.6, 0, 2.6, 1)]).sum() == 1  # pixel centres decide: only x = 2 (2.5) is in


def test_iou_scores_by_hand() -> None:
    truth = [TrueBox(0, 0, 10, 10, "lesion"), TrueBox(50, 50, 60, 60, "hardware")]
    predicted = [Box(40, 40, 60, 60, 0.9, 0.0, "centre"), Box(0, 0, 10, 5, 0.5, 0.0, "upper-left")]
    assert top_iou(predicted, truth) == pytest.approx(100 / 400)
    assert best_iou(predicted, truth) == pytest.approx(0.5)
    assert best_iou([], truth) == 0.0


def test_localization_summary_and_wilson_interval() -> None:
    heat = np.zeros((20, 20), np.float32)
    heat[2:6, 2:6] = 1.0
    truth = [TrueBox(2, 2, 6, 6)]
    hit = localization_scores(heat, truth, find_boxes(heat))
    miss = localization_scores(heat, [TrueBox(14, 14, 18, 18)], find_boxes(heat))
    assert hit == {"pointing_hit": 1.0, "chance": 0.04, "energy_inside": 1.0, "iou_best": 1.0, "iou_top": 1.0,
                   "n_boxes": 1.0, "boxes_matched_0.3": 1.0}
    assert miss["n_boxes"] == 1.0 and miss["boxes_matched_0.3"] == 0.0
    summary = summarize_localization([hit, miss, hit, hit])
    assert summary["n"] == 4 and summary["pointing_game"] == 0.75 and summary["pointing_chance"] == pytest.approx(0.04)
    assert summary["hit_iou_0.5"] == 0.75 and summary["mean_iou"] == pytest.approx(0.75)
    assert summary["hit_iou_0.3_top_box"] == 0.75 and summary["box_precision_0.3"] == 0.75
    assert summary["boxes_per_image"] == 1.0
    low, high = summary["pointing_game_ci95"]
    assert low < 0.75 < high
    assert wilson_interval(0, 10)[0] == 0.0 and 0 < wilson_interval(0, 10)[1] < 0.35
    assert summarize_localization([]) == {"n": 0}


def test_found_boxes_precision_counts_every_box_a_method_draws() -> None:
    truth = [TrueBox(0, 0, 10, 10)]
    right, wrong = Box(0, 0, 10, 8, 0.9, 0.0, "upper-left"), Box(40, 40, 50, 50, 0.5, 0.0, "centre")
    assert matched_boxes([right, wrong, wrong], truth, 0.3) == 1
    rows = [localization_scores(np.eye(60), truth, [right, wrong, wrong]), localization_scores(np.eye(60), truth, [])]
    summary = summarize_localization(rows)
    assert summary["box_precision_0.3"] == pytest.approx(1 / 3) and summary["boxes_per_image"] == 1.5
    assert summary["hit_iou_0.3"] == 0.5  # the best box of the first image is right; the second has none
    # a method that draws no box at all has no precision; JSON-safe, so the report can still be written
    assert summarize_localization(rows[1:])["box_precision_0.3"] is None


def test_top_box_accuracy_sweep_finds_the_threshold_that_cuts_the_finding_out_of_its_halo() -> None:
    """A 6 x 6 finding (peak 1) inside a 30 x 30 halo at 0.5: cuts at or below 0.5 box the halo (IoU 0.04),
    cuts above it box the finding (IoU 1)."""
    heat = np.zeros((60, 60), np.float32)
    heat[10:40, 10:40] = 0.5
    heat[20:26, 20:26] = 1.0
    truths = {"all": [TrueBox(20, 20, 26, 26, "fracture")], "elsewhere": [TrueBox(50, 50, 56, 56, "lesion")]}
    hits = top_box_hits(heat, truths, thresholds=(0.3, 0.5, 0.7, 0.9))
    assert hits["all"].tolist() == [False, False, True, True] and not hits["elsewhere"].any()
    curve = box_accuracy_curve(np.array([hits["all"], hits["elsewhere"]]), thresholds=(0.3, 0.5, 0.7, 0.9))
    assert curve["accuracy"] == [0.0, 0.0, 0.5, 0.5]
    assert curve["max_accuracy"] == 0.5 and curve["best_threshold"] == 0.7
    empty = box_accuracy_curve(np.zeros((0, 4)), thresholds=(0.3, 0.5, 0.7, 0.9))
    assert empty["best_threshold"] is None and empty["max_accuracy"] is None


def test_similarity_measures() -> None:
    rng = np.random.default_rng(0)
    a = rng.random((16, 16))
    assert rank_correlation(a, a) == pytest.approx(1.0)
    assert rank_correlation(a, 1 - a) == pytest.approx(-1.0)
    assert rank_correlation(np.zeros((4, 4)), np.zeros((4, 4))) == 1.0
    assert rank_correlation(np.zeros((4, 4)), a[:4, :4]) == 0.0
    assert ssim(a, a) == pytest.approx(1.0)
    assert ssim(a, rng.random((16, 16))) < 0.5


class PatchModel(nn.Module):
    """logit = 20 x (mean of a 4x4 patch - 0.5): only those 16 pixels matter."""

    def __init__(self) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.tensor(20.0))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (self.scale * (x[:, :, 6:10, 6:10].mean((1, 2, 3)) - 0.5))[:, None]


def test_deletion_and_insertion_reward_the_map_that_marks_the_pixels_that_matter() -> None:
    images = torch.zeros(3, 1, 32, 32)
    images[:, :, 6:10, 6:10] = 1.0
    right = np.zeros((3, 32, 32), np.float32)
    right[:, 6:10, 6:10] = 1.0
    wrong = np.zeros((3, 32, 32), np.float32)
    wrong[:, 20:30, 20:30] = 1.0
    good = deletion_insertion(PatchModel(), images, right, steps=8)
    bad = deletion_insertion(PatchModel(), images, wrong, steps=8)
    chance = deletion_insertion(PatchModel(), images, None, steps=8)
    assert good["deletion_curve"].shape == (3, 9)
    assert (good["deletion_auc"] < chance["deletion_auc"]).all() and (good["deletion_auc"] < bad["deletion_auc"]).all()
    assert (good["insertion_auc"] > chance["insertion_auc"]).all()
    assert (good["insertion_auc"] > bad["insertion_auc"]).all()


# ---------------------------------------------------------------- a small model trained on toy radiographs

SIZE = 64


def toy_radiograph(rng: np.random.Generator, abnormal: bool) -> tuple[np.ndarray, list[TrueBox]]:
    """A bright 'bone' band at a random angle; abnormal images add hardware (bright square) or a lesion (disc)."""
    yy, xx = np.mgrid[0:SIZE, 0:SIZE].astype(np.float32)
    img = 0.08 + 0.04 * rng.standard_normal((SIZE, SIZE)).astype(np.float32)
    cx, cy, angle = SIZE / 2 + rng.uniform(-8, 8), SIZE / 2 + rng.uniform(-8, 8), rng.uniform(0, np.pi)
    distance = np.abs((xx - cx) * np.sin(angle) - (yy - cy) * np.cos(angle))
    img += 0.45 * np.clip(1 - distance / rng.uniform(0.12, 0.2) / SIZE, 0, 1) ** 0.5
    # a side marker ("R") in a random corner of every image: bright, salient, and irrelevant to the label
    mx, my = int(rng.choice([2, SIZE - 9])), int(rng.choice([2, SIZE - 9]))
    img[my : my + 7, mx : mx + 7] = 0.95
    img[my + 2 : my + 5, mx + 2 : mx + 5] = 0.1
    if not abnormal:
        return np.clip(img, 0, 1), []
    kind = str(rng.choice(["hardware", "lesion"]))
    side = int(rng.uniform(0.14, 0.2) * SIZE)
    x0, y0 = int(rng.uniform(10, SIZE - side - 10)), int(rng.uniform(10, SIZE - side - 10))  # clear of the marker
    if kind == "hardware":
        img[y0 : y0 + side, x0 : x0 + side] = 0.95
    else:
        disc = (xx - x0 - side / 2 + 0.5) ** 2 + (yy - y0 - side / 2 + 0.5) ** 2 <= (side / 2) ** 2
        img[disc] = np.where(img[disc] > 0.3, 0.02, 0.8)
    return np.clip(img, 0, 1), [TrueBox(x0, y0, x0 + side, y0 + side, kind)]


def toy_batch(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor, list[list[TrueBox]]]:
    rng = np.random.default_rng(seed)
    prep = Preprocessing.for_channels(SIZE, 1)
    pairs = [toy_radiograph(rng, i % 2 == 1) for i in range(n)]
    x = torch.stack([to_tensor(img, prep) for img, _ in pairs])
    return x, torch.tensor([float(i % 2) for i in range(n)]), [boxes for _, boxes in pairs]


class TinyNet(nn.Module):
    """Three conv blocks (stride 4 in all: a 16x16 CAM at 64 px), GAP, one logit."""

    def __init__(self) -> None:
        super().__init__()

        def block(cin: int, cout: int) -> list[nn.Module]:
            return [nn.Conv2d(cin, cout, 3, padding=1), nn.BatchNorm2d(cout), nn.ReLU()]

        self.features = nn.Sequential(*block(1, 16), nn.MaxPool2d(2), *block(16, 32), nn.MaxPool2d(2), *block(32, 32))
        self.fc = nn.Linear(32, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.features(x).mean((2, 3)))


@pytest.fixture(scope="module")
def trained_tiny() -> Iterator[nn.Module]:
    """A TinyNet registered as architecture "tiny" and trained for a few seconds on toy radiographs."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setitem(models.ARCHITECTURES, "tiny", models.Architecture("features.0", "fc", "features.10"))
        torch.manual_seed(0)
        model = TinyNet()
        x, y, _ = toy_batch(192, seed=0)
        optimiser = torch.optim.Adam(model.parameters(), 3e-3)
        model.train()
        for _ in range(3):
            for idx in torch.randperm(len(x)).split(32):
                loss = nn.functional.binary_cross_entropy_with_logits(model(x[idx]).squeeze(1), y[idx])
                optimiser.zero_grad()
                loss.backward()
                optimiser.step()
        yield model.eval()


def _pointing_rate(model: nn.Module, x: torch.Tensor, boxes: list[list[TrueBox]], method: str) -> float:
    maps = compute_cams(model, "tiny", x, method=method)
    return float(np.mean([pointing_hit(m, t) for m, t in zip(maps, boxes, strict=True)]))


@pytest.mark.slow
def test_cams_of_a_trained_model_point_at_the_finding_far_above_chance(trained_tiny: nn.Module) -> None:
    x, y, truth = toy_batch(64, seed=1)
    with torch.no_grad():
        accuracy = ((trained_tiny(x).squeeze(1) > 0).float() == y).float().mean().item()
    assert accuracy > 0.75  # the classifier learned something worth explaining
    abnormal = y == 1
    x, boxes = x[abnormal], [t for t, a in zip(truth, abnormal, strict=True) if a]
    chance = np.mean([area_fraction((SIZE, SIZE), t) for t in boxes])
    assert chance < 0.05
    torch.manual_seed(0)
    untrained = _pointing_rate(TinyNet().eval(), x, boxes, "gradcam")  # the same maps before learning
    for method in ("gradcam", "cam", "hirescam"):
        hit_rate = _pointing_rate(trained_tiny, x, boxes, method)
        maps = compute_cams(trained_tiny, "tiny", x, method=method)
        energy = np.mean([energy_inside(m, t) for m, t in zip(maps, boxes, strict=True)])
        assert hit_rate >= 0.6 > 10 * chance, (method, hit_rate, chance)
        assert hit_rate > untrained + 0.3, (method, hit_rate, untrained)
        assert energy > 3 * chance, (method, energy, chance)


@pytest.mark.slow
def test_sanity_check_fails_a_map_that_ignores_the_weights_and_passes_gradcam(trained_tiny: nn.Module) -> None:
    x, y, _ = toy_batch(8, seed=2)
    x = x[y == 1]

    def edges(model: nn.Module, images: torch.Tensor) -> np.ndarray:  # looks plausible, explains nothing
        gray = images[:, 0].numpy()
        mag = np.stack([np.hypot(ndimage.sobel(g, 0), ndimage.sobel(g, 1)) for g in gray])
        return (mag / mag.reshape(len(mag), -1).max(1)[:, None, None]).astype(np.float32)

    def gradcam(model: nn.Module, images: torch.Tensor) -> np.ndarray:
        return compute_cams(model, "tiny", images, method="gradcam")

    assert [name for name, _ in randomisation_blocks(trained_tiny, "tiny")][:4] == ["fc", "features.9", "features.8", "features.5"]
    fake = cascading_randomisation(trained_tiny, "tiny", x, edges, max_steps=3)
    real = cascading_randomisation(trained_tiny, "tiny", x, gradcam, max_steps=3)
    assert fake["verdict"] == "FAIL" and fake["steps"][-1]["spearman"] > 0.99 and "FAIL" in fake["note"]
    assert real["verdict"] == "PASS", real
    assert real["steps"][-1]["spearman"] < 0.5 and not real["head_insensitive"]
    assert [s["randomised"] for s in real["steps"]] == [["fc"], ["fc", "features.9"], ["fc", "features.9", "features.8"]]
    eigen = cascading_randomisation(trained_tiny, "tiny", x, lambda m, i: compute_cams(m, "tiny", i, method="eigencam"),
                                    max_steps=1)
    assert eigen["head_insensitive"] and eigen["steps"][0]["spearman"] > 0.99  # ignores the classifier entirely
    empty = cascading_randomisation(trained_tiny, "tiny", x, lambda m, i: np.zeros((len(i), SIZE, SIZE), np.float32))
    assert empty["verdict"] == "UNTESTED" and empty["passed"] is None  # flat maps are no free pass
    before = [p.clone() for p in trained_tiny.parameters()]
    cascading_randomisation(trained_tiny, "tiny", x, gradcam, max_steps=1)
    assert all(torch.equal(a, b) for a, b in zip(before, trained_tiny.parameters(), strict=True))  # works on a copy


@pytest.mark.slow
def test_gradcam_is_more_faithful_than_a_random_pixel_order(trained_tiny: nn.Module) -> None:
    x, y, _ = toy_batch(16, seed=3)
    x = x[y == 1]
    maps = compute_cams(trained_tiny, "tiny", x, method="gradcam")
    cam = deletion_insertion(trained_tiny, x, maps, steps=8)
    chance = deletion_insertion(trained_tiny, x, None, steps=8)
    assert cam["deletion_auc"].mean() < chance["deletion_auc"].mean()
    assert cam["insertion_auc"].mean() > chance["insertion_auc"].mean()
