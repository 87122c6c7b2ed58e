"""Every registered model, random weights: one logit per image, finite, and every parameter learns.

32 px inputs keep this quick; the networks' global pooling makes the size irrelevant to the checks.
"""

from __future__ import annotations

import pytest
import torch

from xraylens.models import (
    MODEL_NAMES,
    GlobalPool,
    backbone_parameters,
    create_model,
    head_layer,
    target_layer,
)

pytestmark = pytest.mark.usefixtures("one_torch_thread")



@pytest.mark.parametrize("in_channels", [1, 3])
@pytest.mark.parametrize("name", MODEL_NAMES)
def test_forward_shape_and_every_parameter_gets_a_gradient(name: str, in_channels: int) -> None:
    torch.manual_seed(0)
    model = create_model(name, in_channels=in_channels)
    model.train()
    x = torch.randn(2, in_channels, 32, 32)  # (B, C, H, W)
    out = model(x)
    assert out.shape == (2, 1)
    assert torch.isfinite(out).all()
    out.sum().backward()
    missing = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
    assert not missing, f"{name}: parameters without a gradient: {missing[:5]}"
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_head_and_backbone_partition_the_parameters(name: str) -> None:
    """The frozen-backbone recipe relies on head + backbone being every parameter, each once."""
    model = create_model(name, in_channels=1)
    head = list(head_layer(model, name).parameters())
    backbone = backbone_parameters(model, name)
    assert head[-1].shape == (1,)  # the bias of the one logit (of a Linear, or of the MIL head's last 1x1 conv)
    ids = [id(p) for p in head + backbone]
    assert len(ids) == len(set(ids)) == len(list(model.parameters()))
    assert target_layer(model, name) is not None


def test_one_channel_stem_matches_rgb_stem_on_gray_input() -> None:
    """Folding the RGB stem must not change what the network computes for a gray image."""
    torch.manual_seed(1)
    gray = create_model("resnet18", in_channels=1).eval()
    rgb = create_model("resnet18", in_channels=3).eval()
    state = rgb.state_dict()
    state["conv1.weight"] = state["conv1.weight"].sum(dim=1, keepdim=True)
    gray.load_state_dict(state)
    x = torch.rand(2, 1, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(gray(x), rgb(x.expand(-1, 3, -1, -1)), rtol=1e-4, atol=1e-5)


# ---------------------------------------------------------------- global pooling (model.pooling)


def test_global_pool_by_hand() -> None:
    x = torch.zeros(1, 2, 4, 4)
    x[0, 0, 1, 2] = 8.0  # one hot spot in channel 0; channel 1 is flat
    x[0, 1] = 3.0
    assert GlobalPool("avg")(x).flatten().tolist() == [0.5, 3.0]
    assert GlobalPool("max")(x).flatten().tolist() == [8.0, 3.0]
    lse = GlobalPool("lse", sharpness=5.0)(x).flatten()
    assert 0.5 < lse[0].item() < 8.0  # between the mean and the max of a peaked map
    assert lse[1].item() == pytest.approx(3.0, abs=1e-5)  # and equal to both on a flat one
    with pytest.raises(ValueError, match="avg, max, lse"):
        GlobalPool("median")


def test_topk_takes_its_fraction_from_the_pooling_string() -> None:
    x = torch.arange(100.0).reshape(1, 1, 10, 10)  # values 0..99
    assert GlobalPool("topk")(x).item() == pytest.approx(98.5)  # top 2 of 100: the default 0.02
    assert GlobalPool("topk:0.1")(x).item() == pytest.approx(94.5)  # top 10
    assert GlobalPool("topk:0.01")(x).item() == 99.0
    for bad in ("topk:0", "topk:1.5", "topk:abc", "max:0.1"):
        with pytest.raises(ValueError, match="topk:0.01"):
            GlobalPool(bad)
    model = create_model("mil_efficientnet_lite0", pooling="topk:0.01")
    assert model.pool.fraction == 0.01


@pytest.mark.parametrize("pooling", ["max", "lse"])
@pytest.mark.parametrize("name", MODEL_NAMES)
def test_every_architecture_trains_with_every_pooling(name: str, pooling: str) -> None:
    """Including densenet, whose forward() applies ReLU in place to what the pooling returns."""
    torch.manual_seed(0)
    model = create_model(name, pooling=pooling).train()
    out = model(torch.randn(2, 1, 32, 32))
    assert out.shape == (2, 1) and torch.isfinite(out).all()
    out.sum().backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None]
    assert not missing, f"{name}/{pooling}: parameters without a gradient: {missing[:5]}"
    pools = [m for m in model.modules() if isinstance(m, GlobalPool)]
    assert pools and {p.kind for p in pools} == {pooling}  # a global-local model pools its crops alike
    assert target_layer(model, name) is not None


def test_pooling_survives_a_checkpoint_round_trip(tmp_path) -> None:
    from xraylens.config import ModelConfig
    from xraylens.data.preprocess import Preprocessing
    from xraylens.models import CheckpointMeta, load_checkpoint, save_checkpoint

    torch.manual_seed(0)
    model = create_model("mobilenet_v2", pooling="topk:0.1").eval()
    meta = CheckpointMeta(model=ModelConfig(name="mobilenet_v2", pooling="topk:0.1"),
                          preprocessing=Preprocessing.for_channels(64, 1))
    loaded = load_checkpoint(save_checkpoint(tmp_path / "m.ckpt", model, meta))
    assert loaded.meta.model.pooling == "topk:0.1"
    assert {m.fraction for m in loaded.model.modules() if isinstance(m, GlobalPool)} == {0.1}
    x = torch.randn(2, 1, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(loaded.model(x), model(x))


def test_the_registry_says_which_models_split_into_features_and_a_head() -> None:
    """What train.backbone=cached relies on, answered without building a network."""
    from xraylens.models import has_feature_split

    for name in MODEL_NAMES:
        model = create_model(name)
        assert has_feature_split(name) == callable(getattr(model, "classify_features", None)), name
