"""Configs: shipped presets are valid, YAML round-trips, typos fail loudly, overrides arrive typed."""

from __future__ import annotations

from pathlib import Path

import pytest

from xraylens.config import (
    ConfigError,
    ExperimentConfig,
    dump_config,
    load_config,
    preset_dir,
    save_config,
)
from xraylens.models import MODEL_NAMES

PRESETS = sorted(p.stem for p in preset_dir().glob("*.yaml"))


def test_the_three_presets_ship() -> None:
    assert {"demo_cpu", "scratch_cpu", "mura_mobilenetv2", "mura_densenet169"} <= set(PRESETS)


@pytest.mark.parametrize("name", PRESETS)
def test_every_preset_loads_and_round_trips(name: str, tmp_path: Path) -> None:
    cfg = load_config(name)
    assert cfg.model.name in MODEL_NAMES
    assert cfg.data.image_size > 0 and cfg.train.batch_size > 0
    saved = save_config(cfg, tmp_path / "config.yaml")
    assert load_config(saved) == cfg
    assert dump_config(load_config(saved)) == dump_config(cfg)


def test_paper_preset_follows_the_paper() -> None:
    cfg = load_config("mura_densenet169")
    assert (cfg.model.name, cfg.model.pretrained, cfg.data.image_size, cfg.train.batch_size) == (
        "densenet169", True, 320, 8)
    assert cfg.train.lr == pytest.approx(1e-4)
    assert cfg.data.augment.rotation_degrees == 30 and cfg.data.augment.hflip
    assert cfg.train.weighted_loss and cfg.train.precision == "bf16-mixed"


def test_seed_preset_freezes_then_finetunes() -> None:
    cfg = load_config("mura_mobilenetv2")
    assert cfg.model.pretrained and cfg.data.image_size == 224
    assert cfg.train.freeze_backbone_epochs > 0 and 0 < cfg.train.finetune_lr_factor < 1


def test_demo_preset_needs_no_download_and_runs_on_cpu() -> None:
    """ImageNet weights, but the offline packaged ones: no torchvision download, no --weights file."""
    from xraylens.models import architecture

    cfg = load_config("demo_cpu")
    assert cfg.model.pretrained and cfg.model.weights_path is None
    assert architecture(cfg.model.name).family in ("timm", "mil")  # offline weights, not torchvision's download
    assert cfg.train.backbone == "cached" and cfg.explain.method == "saliency"
    assert cfg.train.accelerator == "cpu" and cfg.train.precision == "32-true"
    scratch = load_config("scratch_cpu")
    assert not scratch.model.pretrained and scratch.model.weights_path is None


def test_unknown_key_in_yaml_is_an_error_naming_it(tmp_path: Path) -> None:
    path = tmp_path / "typo.yaml"
    path.write_text("train:\n  epochz: 3\n")
    with pytest.raises(ConfigError, match=r"train\.epochz"):
        load_config(path)


def test_unknown_section_and_unknown_override_are_errors() -> None:
    with pytest.raises(ConfigError, match="trian"):
        load_config(None, ["trian.epochs=3"])
    with pytest.raises(ConfigError, match=r"model\.nmae"):
        load_config("scratch_cpu", ["model.nmae=resnet18"])


def test_overrides_arrive_typed() -> None:
    cfg = load_config("scratch_cpu", ["train.epochs=3", "train.lr=0.01", "train.channels_last=false",
                                   "data.body_parts=[XR_WRIST, XR_HAND]", "model.name=resnet18",
                                   "data.augment.rotation_degrees=10"])
    assert cfg.train.epochs == 3 and isinstance(cfg.train.epochs, int)
    assert cfg.train.lr == 0.01 and isinstance(cfg.train.lr, float)
    assert cfg.train.channels_last is False
    assert cfg.data.body_parts == ("XR_WRIST", "XR_HAND")
    assert cfg.model.name == "resnet18"
    assert cfg.data.augment.rotation_degrees == 10.0 and isinstance(cfg.data.augment.rotation_degrees, float)
    assert load_config("scratch_cpu").train.epochs != 3  # the preset itself is untouched


@pytest.mark.parametrize("item", ["train.epochs=three", "train.channels_last=maybe", "train.epochs", "=3"])
def test_bad_overrides_are_errors(item: str) -> None:
    with pytest.raises(ConfigError):
        load_config(None, [item])


def test_missing_preset_lists_the_shipped_ones() -> None:
    with pytest.raises(ConfigError, match="scratch_cpu"):
        load_config("no_such_preset")


def test_train_cli_flags_land_in_the_config(tmp_path: Path) -> None:
    """--set, --data, --weights and the Trainer flags all end up in the ExperimentConfig."""
    from xraylens.cli import build_parser
    from xraylens.cli.train import _config

    args = build_parser().parse_args([
        "train", "--data", str(tmp_path / "mura"), "--out", str(tmp_path / "run"), "--config", "scratch_cpu",
        "--set", "train.epochs=2", "data.image_size=96", "--weights", "w.pth",
        "--accelerator", "gpu", "--devices", "8", "--num-nodes", "2", "--strategy", "ddp", "--precision", "bf16-mixed",
    ])
    cfg = _config(args)
    assert isinstance(cfg, ExperimentConfig)
    assert cfg.data.root == str(tmp_path / "mura") and cfg.data.image_size == 96
    assert cfg.train.epochs == 2 and cfg.model.weights_path == "w.pth"
    assert (cfg.train.accelerator, cfg.train.devices, cfg.train.num_nodes, cfg.train.strategy, cfg.train.precision) == (
        "gpu", "8", 2, "ddp", "bf16-mixed")


def test_resume_without_config_takes_the_checkpoints_config(tmp_path: Path) -> None:
    """`xraylens train --out RUN --resume last.ckpt --set train.epochs=9` continues the same experiment."""
    import torch

    from xraylens.cli import build_parser
    from xraylens.cli.train import _config
    from xraylens.config import to_dict

    trained = load_config("scratch_cpu", ["model.name=resnet18", "data.image_size=96", f"data.root={tmp_path}"])
    checkpoint = tmp_path / "last.ckpt"
    torch.save({"xraylens": {"experiment": to_dict(trained)}, "optimizer_states": [], "state_dict": {}}, checkpoint)
    args = build_parser().parse_args(["train", "--out", str(tmp_path / "run"), "--resume", str(checkpoint),
                                      "--set", "train.epochs=9"])
    cfg = _config(args)
    assert cfg.model.name == "resnet18" and cfg.data.image_size == 96 and cfg.data.root == str(tmp_path)
    assert cfg.train.epochs == 9


def test_scientific_notation_is_a_number_in_yaml_and_overrides(tmp_path):
    from xraylens.config import load_config

    path = tmp_path / "c.yaml"
    path.write_text("train:\n  lr: 1e-4\n")
    assert load_config(path).train.lr == 1e-4
    assert load_config(None, ["train.lr=3e-5"]).train.lr == 3e-5
    import pytest

    from xraylens.config import ConfigError

    with pytest.raises(ConfigError, match="train.lr"):
        load_config(None, ["train.lr=fast"])


def test_yaml_words_like_off_stay_words_and_only_true_false_are_booleans(tmp_path):
    """YAML 1.1 would read `cache: off` as False; data.cache's documented value is the word "off"."""
    from xraylens.config import ConfigError, load_config

    path = tmp_path / "c.yaml"
    path.write_text("data:\n  cache: off\nmodel:\n  pretrained: false\n")
    cfg = load_config(path)
    assert cfg.data.cache == "off" and cfg.model.pretrained is False
    assert load_config(None, ["data.cache=off"]).data.cache == "off"
    assert load_config(None, ["model.pretrained=True"]).model.pretrained is True
    with pytest.raises(ConfigError, match="model.pretrained: expected true/false, got 'yes'"):
        load_config(None, ["model.pretrained=yes"])
