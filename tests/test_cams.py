"""CAM methods on every registered architecture: shapes, ranges, targets, hooks and gradients left clean."""

from __future__ import annotations

import functools

import numpy as np
import pytest
import torch
from torch import nn

from xraylens.explain import cams
from xraylens.explain.cams import METHODS, compute_cams
from xraylens.models import MODEL_NAMES, create_model


@functools.cache
def _model(name: str) -> nn.Module:
    torch.manual_seed(0)
    return create_model(name).eval()


def _images(n: int = 2, size: int = 64, seed: int = 0) -> torch.Tensor:
    return torch.randn(n, 1, size, size, generator=torch.Generator().manual_seed(seed))


def _hooks(model: nn.Module) -> int:
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) + len(m._backward_hooks) for m in model.modules())


def test_methods_tuple_is_the_published_interface() -> None:
    assert METHODS == ("gradcam", "gradcam++", "hirescam", "scorecam", "eigencam", "layercam", "cam", "saliency")
    from xraylens.cli.explain import METHOD_CHOICES

    assert METHOD_CHOICES == METHODS  # the CLI keeps its own copy so `--help` needs no torch


@pytest.mark.parametrize(("name", "method"), [(n, m) for n in MODEL_NAMES
                                              for m in cams.methods_for(n, ("gradcam", "cam", "saliency"))])
def test_every_architecture_gives_maps_of_input_size_in_unit_range(name: str, method: str) -> None:
    model = _model(name)
    maps = compute_cams(model, name, _images(), method=method)
    assert maps.shape == (2, 64, 64) and maps.dtype == np.float32
    assert maps.min() >= 0.0 and maps.max() <= 1.0
    assert all(m.max() in (0.0, 1.0) for m in maps)  # each map scaled by its own maximum (or all zero)
    assert _hooks(model) == 0


@pytest.mark.parametrize("method", METHODS)
def test_every_method_runs_batched_and_releases_its_hooks(method: str) -> None:
    name = "mil_efficientnet_lite0" if method == "saliency" else "resnet18"
    model = _model(name)
    n = 1 if method == "scorecam" else 3  # Score-CAM: one forward pass per channel (512 here)
    maps = compute_cams(model, name, _images(n, 32), method=method, batch_size=2)  # 2 chunks
    assert maps.shape == (n, 32, 32) and maps.min() >= 0.0 and maps.max() <= 1.0
    assert np.isfinite(maps).all()
    assert _hooks(model) == 0


def test_gradients_are_not_accumulated_and_the_model_is_left_in_eval_mode() -> None:
    model = create_model("resnet18")
    model.train()
    first = next(model.parameters())
    first.grad = torch.full_like(first, 7.0)
    frozen = list(model.parameters())[3]
    frozen.requires_grad_(False)
    for method in ("gradcam", "hirescam", "cam"):
        compute_cams(model, "resnet18", _images(2, 32), method=method)
    assert torch.equal(first.grad, torch.full_like(first, 7.0))
    assert all(p.grad is None for p in list(model.parameters())[1:])
    assert not frozen.requires_grad and first.requires_grad
    assert not model.training


def test_abnormal_and_normal_targets_explain_opposite_signs() -> None:
    model = _model("resnet18")
    x = _images(4, 96)
    abnormal = compute_cams(model, "resnet18", x, method="gradcam", target="abnormal")
    normal = compute_cams(model, "resnet18", x, method="gradcam", target="normal")
    assert np.abs(abnormal - normal).mean() > 0.1
    # GAP -> linear head: Grad-CAM(+logit) = ReLU(S), Grad-CAM(-logit) = ReLU(-S), so their peaks never coincide
    for a, n in zip(abnormal, normal, strict=True):
        if a.max() > 0 and n.max() > 0:
            assert n[a == 1.0].max() < 0.5 and a[n == 1.0].max() < 0.5


def test_classic_cam_equals_gradcam_where_the_head_is_gap_then_linear() -> None:
    model = _model("resnet18")
    x = _images(3, 96)
    np.testing.assert_allclose(compute_cams(model, "resnet18", x, method="cam"),
                               compute_cams(model, "resnet18", x, method="gradcam"), atol=1e-4)


def test_densenet_maps_do_not_depend_on_whether_grad_cam_copies_the_activations(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """grad-cam's ``.cpu().detach()`` aliases on a CPU (DenseNet's in-place ReLU then edits the saved map) and
    copies on a GPU; both must explain the same post-ReLU features. Here a clone emulates the GPU path."""
    import copy

    from pytorch_grad_cam.activations_and_gradients import ActivationsAndGradients

    model = copy.deepcopy(_model("densenet121"))
    with torch.no_grad():
        model.classifier.weight.normal_(0, 1, generator=torch.Generator().manual_seed(0))
    x = _images(3, 96)
    aliased = compute_cams(model, "densenet121", x, method="gradcam")
    save = ActivationsAndGradients.save_activation
    monkeypatch.setattr(ActivationsAndGradients, "save_activation",
                        lambda self, module, inputs, output: save(self, module, inputs, output.clone()))
    copied = compute_cams(model, "densenet121", x, method="gradcam")
    assert (aliased.reshape(3, -1).max(1) > 0).sum() >= 2  # not trivially all-zero maps
    np.testing.assert_allclose(aliased, copied, atol=1e-5)


def test_classic_cam_folds_convnext_layernorm_and_tracks_hirescam() -> None:
    model = _model("convnext_tiny")
    x = _images(2, 96)
    cam = compute_cams(model, "convnext_tiny", x, method="cam")
    hires = compute_cams(model, "convnext_tiny", x, method="hirescam")
    for a, b in zip(cam, hires, strict=True):
        assert np.corrcoef(a.ravel(), b.ravel())[0, 1] > 0.9


def test_exceptions_inside_a_method_propagate_and_hooks_are_still_released(monkeypatch: pytest.MonkeyPatch) -> None:
    model = _model("resnet18")
    with pytest.raises(RuntimeError):  # three channels into a one-channel stem
        compute_cams(model, "resnet18", torch.randn(1, 3, 32, 32), method="gradcam")
    assert _hooks(model) == 0

    def broken(self, output):
        raise IndexError("from the target")

    monkeypatch.setattr(cams.LogitTarget, "__call__", broken)
    with pytest.raises(IndexError, match="from the target"):  # grad-cam's own __exit__ would swallow this
        compute_cams(model, "resnet18", _images(1, 32), method="gradcam")
    assert _hooks(model) == 0


def test_layer_by_name_and_clear_errors() -> None:
    model = _model("resnet18")
    maps = compute_cams(model, "resnet18", _images(1, 64), method="gradcam", layer="layer3")
    assert maps.shape == (1, 64, 64)
    with pytest.raises(ValueError, match="available: gradcam"):
        compute_cams(model, "resnet18", _images(1, 32), method="gradcam-xl")
    with pytest.raises(ValueError, match="target must be one of abnormal, normal"):
        compute_cams(model, "resnet18", _images(1, 32), target="fracture")
    with pytest.raises(ValueError, match="no layer"):
        compute_cams(model, "resnet18", _images(1, 32), layer="layer9")
    with pytest.raises(ValueError, match="classic CAM needs the layer that feeds the head"):
        compute_cams(model, "resnet18", _images(1, 64), method="cam", layer="layer3")


def test_each_model_is_offered_only_the_methods_it_can_give() -> None:
    assert "cam" in cams.methods_for("resnet18") and "saliency" not in cams.methods_for("resnet18")
    assert "saliency" in cams.methods_for("mil_efficientnet_lite0")
    assert "cam" not in cams.methods_for("mil_efficientnet_lite0")  # its head is not linear in the features
    with pytest.raises(ValueError, match="classic CAM"):
        compute_cams(_model("mil_efficientnet_lite0"), "mil_efficientnet_lite0", _images(1, 64), method="cam")
    with pytest.raises(ValueError, match="no native saliency"):
        compute_cams(_model("resnet18"), "resnet18", _images(1, 64), method="saliency")


def test_native_saliency_is_the_mil_instance_map_scaled_to_the_input() -> None:
    name = "mil_efficientnet_lite0"
    model = _model(name)
    x = _images(2, 128, seed=5)
    with torch.no_grad():
        instances = model.saliency(x)  # (2, 8, 8) logits at stride 16
    maps = compute_cams(model, name, x, method="saliency")
    assert instances.shape == (2, 8, 8) and maps.shape == (2, 128, 128)
    for inst, heat in zip(instances.numpy(), maps, strict=True):
        iy, ix = np.unravel_index(inst.argmax(), inst.shape)
        hy, hx = np.unravel_index(heat.argmax(), heat.shape)
        assert (hy // 16, hx // 16) == (iy, ix)  # the map's peak lies in the hottest instance's cell
        assert heat.max() == pytest.approx(1.0)
        # each cell's value is its P(abnormal) over the hottest cell's (read at the cell centres)
        relative = torch.sigmoid(torch.from_numpy(inst)) / torch.sigmoid(torch.from_numpy(inst)).max()
        np.testing.assert_allclose(heat[8::16, 8::16], relative.numpy(), atol=0.05)
    normal = compute_cams(model, name, x, method="saliency", target="normal")
    assert np.abs(normal - maps).mean() > 0.05  # the normal target reads the map with the opposite sign


def test_the_native_map_is_relative_probability_so_half_the_peak_is_the_finding_not_the_bone() -> None:
    """Padding at -40, bone at -2, a finding at +4: min-max of the logits put the bone at 0.86 of the
    range, above any half-peak cut; as probabilities the bone is 0.12 of the finding and drops out."""
    logits = torch.full((1, 4, 4), -2.0)
    logits[0, :, 0] = -40.0  # letterbox padding
    logits[0, 2, 2] = 4.0  # the finding
    heat = cams.instance_probability_map(logits, (4, 4))[0]
    assert heat[2, 2] == pytest.approx(1.0)
    assert heat[0, 1] == pytest.approx(float(torch.sigmoid(torch.tensor(-2.0)) / torch.sigmoid(torch.tensor(4.0))),
                                       abs=2 * cams.TIE_BREAK)
    assert heat[0, 0] < 1e-15 + cams.TIE_BREAK
    assert (heat >= 0.5).sum() == 1
    minmax = (logits - logits.min()) / (logits.max() - logits.min())
    assert (minmax >= 0.5).sum() == 12  # what the old map cut: the finding and every cell of bone


def test_the_native_map_of_very_negative_logits_is_not_flat() -> None:
    """A normal film far from any finding: float32 sigmoid(-150) underflows to 0, log space does not."""
    logits = torch.full((1, 3, 3), -200.0)
    logits[0, 1, 1] = -150.0
    heat = cams.instance_probability_map(logits, (3, 3))[0]
    assert heat[1, 1] == 1.0 and heat[0, 0] < 1e-4 and np.isfinite(heat).all()


def test_saturated_cells_still_peak_at_the_hottest_logit() -> None:
    """Logits 20 and 25 are both P = 1.0 in float32: the map keeps 25 on top, so pointing is not raster order."""
    logits = torch.full((1, 4, 4), -5.0)
    logits[0, 0, 0], logits[0, 3, 3] = 20.0, 25.0
    heat = cams.instance_probability_map(logits, (4, 4))[0]
    assert np.unravel_index(heat.argmax(), heat.shape) == (3, 3)
    assert heat[0, 0] == pytest.approx(1.0, abs=2 * cams.TIE_BREAK) and heat[0, 0] < 1.0
