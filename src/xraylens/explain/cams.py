"""Class activation maps for any registered model: the grad-cam library's methods plus the classic CAM.

Every method differs only in how it weights the channels of one feature map,
so they share one entry point, :func:`compute_cams`. What is explained is a
small callable target: our networks have a single logit (P(abnormal) =
sigmoid(logit)), so "abnormal" explains ``+logit`` and "normal" explains
``-logit``. The library's default target (argmax over classes) would always
pick index 0 of a one-element output, i.e. "abnormal", whatever was asked.

Hooks live in context managers and are released even when a method raises;
unlike ``BaseCAM.__exit__`` we do not swallow ``IndexError``. Computing a map
never leaves gradients on the model's parameters: they are frozen for the
call (gradients flow to an input copy instead) and restored afterwards.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from xraylens.models import architecture, get_submodule, head_layer, target_layer

METHODS: tuple[str, ...] = ("gradcam", "gradcam++", "hirescam", "scorecam", "eigencam", "layercam", "cam", "saliency")
TARGETS: tuple[str, ...] = ("abnormal", "normal")
METHOD_LABELS = {
    "gradcam": "Grad-CAM", "gradcam++": "Grad-CAM++", "hirescam": "HiResCAM", "scorecam": "Score-CAM",
    "eigencam": "Eigen-CAM", "layercam": "Layer-CAM", "cam": "CAM", "saliency": "native saliency",
}
# Methods whose map does not depend on the target: the sentence must not claim otherwise.
TARGET_AGNOSTIC: frozenset[str] = frozenset({"eigencam"})


def methods_for(model_name: str, methods: tuple[str, ...] = METHODS) -> tuple[str, ...]:
    """``methods`` less those the model cannot give: the classic CAM needs a linear head on pooled
    features, the native ``saliency`` map needs a model that has one (the spatial MIL models)."""
    arch = architecture(model_name)
    return tuple(m for m in methods if (m != "cam" or arch.classic_cam) and (m != "saliency" or arch.native_map))


def check_method(model_name: str, method: str) -> None:
    if method not in METHODS:
        raise ValueError(f"unknown CAM method {method!r}; available: {', '.join(METHODS)}")
    if method not in methods_for(model_name, (method,)):
        why = ("has no linear head on pooled features for the classic CAM"
               if method == "cam" else "has no native saliency map (only the mil_* models do)")
        raise ValueError(f"{model_name} {why}; use one of {', '.join(methods_for(model_name))}")


class LogitTarget:
    """What grad-cam explains for one image: ``sign * logit`` of our one-logit head."""

    def __init__(self, target: str = "abnormal") -> None:
        if target not in TARGETS:
            raise ValueError(f"target must be one of {', '.join(TARGETS)}, got {target!r}")
        self.target = target
        self.sign = 1.0 if target == "abnormal" else -1.0

    def __call__(self, model_output: torch.Tensor) -> torch.Tensor:
        # grad-cam passes one image's output, shape (1,) here; return a scalar.
        return self.sign * model_output.reshape(-1)[0]

    def __repr__(self) -> str:
        return f"LogitTarget({self.target!r})"


def _library_class(method: str) -> type:
    import pytorch_grad_cam as gc

    return {
        "gradcam": gc.GradCAM, "gradcam++": gc.GradCAMPlusPlus, "hirescam": gc.HiResCAM,
        "scorecam": gc.ScoreCAM, "eigencam": gc.EigenCAM, "layercam": gc.LayerCAM,
    }[method]


def resolve_layer(model: nn.Module, model_name: str, layer: str | nn.Module | None) -> nn.Module:
    """The CAM layer: the architecture's default, a dotted name ("features.17") or a module."""
    if layer is None:
        return target_layer(model, model_name)
    if isinstance(layer, nn.Module):
        return layer
    try:
        return get_submodule(model, layer)
    except AttributeError as exc:
        raise ValueError(f"{model_name} has no layer {layer!r}; pass a dotted name from model.named_modules()") from exc


@contextlib.contextmanager
def frozen_parameters(model: nn.Module) -> Iterator[nn.Module]:
    """Eval mode, parameters frozen and their ``.grad`` kept as they were; restored on exit (mode stays eval).

    grad-cam calls ``model.zero_grad()`` and ``backward``; freezing the parameters
    means the backward pass only reaches the input copy, and the stash puts back
    whatever gradients a caller had accumulated.
    """
    params = list(model.parameters())
    flags = [p.requires_grad for p in params]
    grads = [p.grad for p in params]
    model.eval()
    try:
        for p in params:
            p.requires_grad_(False)
        yield model
    finally:
        for p, flag, grad in zip(params, flags, grads, strict=True):
            p.requires_grad_(flag)
            p.grad = grad
        model.eval()


@contextlib.contextmanager
def _library_cam(method: str, model: nn.Module, layer: nn.Module, batch_size: int) -> Iterator[object]:
    """A grad-cam CAM object whose hooks are released on exit; exceptions propagate unchanged."""
    cam = _library_class(method)(model=model, target_layers=[layer])
    cam.batch_size = max(batch_size, 64)  # Score-CAM's no-grad forward batch over masked copies of one image
    try:
        yield cam
    finally:
        cam.activations_and_grads.release()


@contextlib.contextmanager
def post_activation(layer: nn.Module, activation: Callable[[torch.Tensor], torch.Tensor] | None) -> Iterator[None]:
    """Make ``layer`` output ``activation(output)`` for the duration (a no-op when ``activation`` is None).

    DenseNet applies ``relu(inplace=True)`` to ``features.norm5``'s output. grad-cam
    saves that output with ``.cpu().detach()``, which on a CPU aliases the tensor
    the in-place ReLU then overwrites, and on a GPU copies it first: the same call
    would explain post-ReLU features on one device and pre-ReLU ones on the other.
    Applying the activation here (out of place, idempotent for ReLU) makes every
    device explain what the pooling layer actually sees, as the classic CAM does.
    """
    if activation is None:
        yield
        return
    # The clone is what later in-place ops may modify; ReLU's own saved output stays intact for backward.
    handle = layer.register_forward_hook(lambda _m, _i, out: activation(out).clone())
    try:
        yield
    finally:
        handle.remove()


@contextlib.contextmanager
def capture_output(layer: nn.Module) -> Iterator[list[torch.Tensor]]:
    """Forward hook that keeps a copy of ``layer``'s output (copied: DenseNet applies ReLU in place after it)."""
    captured: list[torch.Tensor] = []
    handle = layer.register_forward_hook(lambda _m, _i, out: captured.append(out.detach().clone()))
    try:
        yield captured
    finally:
        handle.remove()


def _normalise(maps: torch.Tensor, size: tuple[int, int]) -> np.ndarray:
    """(B, h, w) raw maps -> ReLU, min-max to [0, 1], bilinear to ``size`` (the grad-cam library's convention)."""
    maps = maps.clamp_min(0).float()
    maps = maps - maps.flatten(1).amin(1)[:, None, None]
    maps = F.interpolate(maps[:, None], size=size, mode="bilinear", align_corners=False)[:, 0]
    peak = maps.flatten(1).amax(1)[:, None, None]
    return (maps / torch.where(peak > 0, peak, torch.ones_like(peak))).clamp(0, 1).cpu().numpy().astype(np.float32)


def instance_probability_map(logits: torch.Tensor, size: tuple[int, int]) -> np.ndarray:
    """(B, h, w) instance logits -> each cell's P(abnormal) over the hottest cell's, bilinear to ``size``.

    Why probabilities and not min-max of the logits: the logits are linear
    evidence, and the letterbox padding and soft tissue sit 30-40 logits below
    a finding, so min-max put all of the bone above half the range and every
    box cut at half the peak covered the film (realistic synthetic, stride 8:
    IoU >= 0.3 for 6 % of images; 54 % with this map). A cell at half the
    peak's probability is a cell the model half believes in. No ReLU: the
    hottest cell is shown even when none crosses P = 0.5. Computed in log
    space, so logits far below -88 do not underflow to a flat map.

    Above a logit of about 17 the ratio is 1.0 in float32, so a confident
    model's map has a plateau of several cells at its peak, and the pointing
    game would take the first in raster order (on the stride-8 model 30 of
    120 maps had one, and the plateau moved 4 pointing hits). A 1e-4 share of
    the min-max logits breaks those ties in the logits' order: the map's peak
    is the hottest logit's cell, and no box moves by more than that share.
    """
    log_p = F.logsigmoid(logits.float())
    relative = torch.exp(log_p - log_p.flatten(1).amax(1)[:, None, None])
    spread = logits.float() - logits.float().flatten(1).amin(1)[:, None, None]
    order = spread / spread.flatten(1).amax(1).clamp_min(1e-30)[:, None, None]
    blended = (1 - TIE_BREAK) * relative + TIE_BREAK * order
    maps = F.interpolate(blended[:, None], size=size, mode="bilinear", align_corners=False)[:, 0]
    peak = maps.flatten(1).amax(1).clamp_min(1e-30)[:, None, None]
    return (maps / peak).clamp(0, 1).cpu().numpy().astype(np.float32)


TIE_BREAK = 1e-4  # share of the min-max logits in the native map: orders cells whose probability saturates


def classic_cam_weights(model: nn.Module, model_name: str) -> torch.Tensor:
    """Per-channel weights (K,) of the classic CAM (Zhou et al. 2016; the MURA paper's heatmaps).

    For GAP -> Linear heads the map ``sum_k w_k F_k(x, y)`` averages exactly to the
    logit (minus the bias). ``cam_exact`` is False where a normalisation sits
    between pooling and the head (ConvNeXt: LayerNorm). A LayerNorm there is
    folded in: logit = (1/sigma) * mean_xy sum_k (w_k g_k - mean(w g)) F_k + const,
    so with these weights the map is exact up to a positive per-image factor
    (1/sigma), which the [0, 1] normalisation removes anyway. With max or
    log-sum-exp pooling (``model.pooling``) it is the same weighted sum, but it
    no longer averages to the logit: the gradient methods follow the pooling.
    """
    arch = architecture(model_name)
    weight = head_layer(model, model_name).weight.detach()[0]  # (K,)
    if arch.cam_exact:
        return weight
    parent_name = arch.head.rpartition(".")[0]
    norms = [m for m in get_submodule(model, parent_name).children() if isinstance(m, nn.LayerNorm)] if parent_name else []
    if len(norms) != 1:
        raise NotImplementedError(
            f"classic CAM for {model_name}: expected one LayerNorm before the head, found {len(norms)}; "
            "use a gradient method (gradcam, hirescam) instead"
        )
    gamma = norms[0].weight.detach() if norms[0].weight is not None else torch.ones_like(weight)
    folded = weight * gamma
    return folded - folded.mean()


def _classic_cam(model: nn.Module, model_name: str, layer: nn.Module, x: torch.Tensor, sign: float) -> torch.Tensor:
    """(B, h, w) raw classic CAM of ``sign * logit`` at ``layer`` (the architecture's target layer)."""
    activation = architecture(model_name).cam_activation
    with capture_output(layer) as captured, torch.no_grad():
        model(x)
    if len(captured) != 1:
        raise RuntimeError(f"CAM layer ran {len(captured)} times in one forward pass; pick a layer used once")
    features = captured[0]  # (B, K, h, w)
    if activation is not None:
        features = activation(features)
    weights = classic_cam_weights(model, model_name).to(features)
    if weights.numel() != features.shape[1]:
        raise ValueError(
            f"classic CAM needs the layer that feeds the head ({features.shape[1]} channels here, "
            f"{weights.numel()} head inputs); use the default layer or a gradient method"
        )
    return sign * torch.einsum("bkhw,k->bhw", features, weights)


MAX_CAM_PIXELS = 2 * 512 * 512  # input pixels per gradient-CAM chunk (see compute_cams)


def compute_cams(
    model: nn.Module,
    model_name: str,
    images: torch.Tensor,
    *,
    method: str = "gradcam",
    target: str = "abnormal",
    layer: str | nn.Module | None = None,
    batch_size: int = 16,
) -> np.ndarray:
    """Heatmaps for a batch of normalised inputs (B, C, S, S) -> (B, S, S) float32 in [0, 1].

    Each map is ReLU'd and min-max scaled on its own (the grad-cam convention;
    all 0 = no positive evidence anywhere), so maps say *where*, not *how much*.
    ``method="cam"`` is the classic CAM and only makes sense at the default
    layer; ``method="saliency"`` is a spatial MIL model's own instance map
    (no gradients; ``layer`` does not apply). The model is left in eval mode with its parameters' ``.grad`` untouched. Eigen-CAM ignores ``target`` (it is the first principal component of
    the features). Score-CAM runs one forward pass per feature channel per
    image: hundreds of passes, slow on a CPU.
    """
    check_method(model_name, method)
    if images.ndim != 4:
        raise ValueError(f"images must be a (B, C, S, S) batch, got shape {tuple(images.shape)}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    # Large inputs go through in small chunks: at 512 px a batch of 8 is 1.2-1.7x slower per image than
    # one of 2 on a 2-core CPU (cache-bound; benchmarks/bench_explain.py), while 128 px gains from 16.
    batch_size = max(1, min(batch_size, MAX_CAM_PIXELS // (images.shape[-1] * images.shape[-2])))
    explained = LogitTarget(target)
    cam_layer = resolve_layer(model, model_name, layer)
    default_layer = cam_layer is target_layer(model, model_name)
    activation = architecture(model_name).cam_activation if default_layer else None
    device = next(model.parameters()).device
    size = tuple(images.shape[-2:])
    out: list[np.ndarray] = []
    with frozen_parameters(model):
        for start in range(0, images.shape[0], batch_size):
            chunk = images[start : start + batch_size].detach().to(device).float()
            if method == "cam":
                raw = _classic_cam(model, model_name, cam_layer, chunk, explained.sign)
                out.append(_normalise(raw, size))
                continue
            if method == "saliency":
                with torch.no_grad():
                    raw = explained.sign * model.saliency(chunk)  # (b, h, w) instance logits
                out.append(instance_probability_map(raw, size))
                continue
            chunk = chunk.clone().requires_grad_(method != "scorecam" and method != "eigencam")
            # post_activation is entered first so its hook runs before grad-cam's and hands them its output.
            with post_activation(cam_layer, activation), _library_cam(method, model, cam_layer, batch_size) as cam:
                maps = cam(input_tensor=chunk, targets=[explained] * chunk.shape[0])  # (b, S, S) in [0, 1]
            out.append(_rescale(np.asarray(maps, dtype=np.float32)))
    return np.concatenate(out, axis=0) if out else np.zeros((0, *size), np.float32)


def _rescale(maps: np.ndarray) -> np.ndarray:
    """The library min-max scales with a 1e-7 guard; make it exactly max = 1 (or all 0) and clip."""
    maps = np.clip(np.nan_to_num(maps, nan=0.0), 0.0, None)
    peak = maps.reshape(len(maps), -1).max(axis=1)
    scale = np.where(peak > 0, peak, 1.0)[:, None, None]
    return np.clip(maps / scale, 0.0, 1.0).astype(np.float32)
