"""Every registered model, random weights: one logit per image, finite, and every parameter learns.

32 px inputs keep this quick; the networks' global pooling makes the size irrelevant to the checks.
"""

from __future__ import annotations

import pytest
import torch

from xraylens.models import MODEL_NAMES, backbone_parameters, create_model, head_layer, target_layer

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
    assert head[0].shape[0] == 1  # one logit
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
