"""Hostile files are refused and their code never runs: pickle payloads wherever a checkpoint can hold one.

The payload, if ever unpickled, creates a file (``Path.touch``); each test
proves the payload is live (a plain ``torch.load(weights_only=False)`` does
create the file) and then that every xraylens door refuses it with a clear
error naming the file, and the file does not exist afterwards. Also: a
truncated checkpoint is refused clearly, a hostile YAML config and a pickled
cache array are refused.
"""

from __future__ import annotations

import pathlib
from pathlib import Path

import numpy as np
import pytest
import torch

from xraylens.config import ModelConfig
from xraylens.data.preprocess import Preprocessing
from xraylens.models import CheckpointError, CheckpointMeta, create_model, save_checkpoint


class Payload:
    """Unpickling this calls ``Path(marker).touch()``: a stand-in for any code an attacker would run."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return pathlib.Path.touch, (pathlib.Path(self.marker),)


@pytest.fixture(scope="module")
def slim(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """The payload of a genuine slim checkpoint (what evaluate, explain, predict, serve and export read)."""
    meta = CheckpointMeta(model=ModelConfig(name="mobilenet_v2"), preprocessing=Preprocessing.for_channels(32, 1))
    path = save_checkpoint(tmp_path_factory.mktemp("ok") / "ok.ckpt", create_model("mobilenet_v2"), meta)
    return torch.load(path, weights_only=True)


def lightning_like(slim: dict) -> dict:
    """The shape of a Lightning checkpoint from `xraylens train` (what --resume reads)."""
    meta = {k: v for k, v in slim.items() if k != "state_dict"}
    return {"epoch": 1, "global_step": 10, "state_dict": {f"net.{k}": v for k, v in slim["state_dict"].items()},
            "xraylens": meta, "hyper_parameters": {"experiment": meta["experiment"]},
            "optimizer_states": [{"state": {}, "param_groups": [{"lr": 1e-3, "params": [0]}]}],
            "lr_schedulers": [], "loops": {}, "callbacks": {}}


def _plant(where: str, slim: dict, marker: Path):
    """A checkpoint object carrying the payload at ``where``."""
    payload = Payload(marker)
    if where == "top level":
        return payload
    if where == "slim checkpoint metadata":
        return {**slim, "summary": {"best_val_loss": payload}}
    if where == "slim checkpoint weights":
        state = dict(slim["state_dict"])
        state[next(iter(state))] = payload
        return {**slim, "state_dict": state}
    ckpt = lightning_like(slim)
    if where == "lightning hyper_parameters":
        ckpt["hyper_parameters"]["loss_weights"] = {"XR_WRIST": payload}
    elif where == "lightning optimizer state":
        ckpt["optimizer_states"][0]["state"][0] = {"exp_avg": payload}
    elif where == "lightning callbacks":
        ckpt["callbacks"]["ModelCheckpoint"] = {"best_model_path": payload}
    elif where == "lightning xraylens metadata":
        ckpt["xraylens"]["experiment"] = payload
    else:
        raise AssertionError(where)
    return ckpt


PLACES = ("top level", "slim checkpoint metadata", "slim checkpoint weights", "lightning hyper_parameters",
          "lightning optimizer state", "lightning callbacks", "lightning xraylens metadata")


def _doors(path: Path, tmp_path: Path):
    """Every way a checkpoint enters xraylens, each a callable that must raise."""
    from xraylens.inference import Predictor
    from xraylens.models import load_checkpoint
    from xraylens.training import checkpoint_experiment

    def resume() -> None:
        from xraylens.config import load_config
        from xraylens.training import fit

        fit(load_config("scratch_cpu", [f"data.root={tmp_path}"]), tmp_path / "run", resume=path, progress=False)

    return {"load_checkpoint (evaluate, explain, export)": lambda: load_checkpoint(path),
            "Predictor (predict, serve)": lambda: Predictor.from_checkpoint(path),
            "train --resume (its config)": lambda: checkpoint_experiment(path),
            "fit(resume=...)": resume}


@pytest.mark.parametrize("where", PLACES)
def test_pickle_payloads_are_refused_and_never_run(where: str, slim: dict, tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    path = tmp_path / "hostile.ckpt"
    torch.save(_plant(where, slim, marker), path)
    torch.load(path, weights_only=False)  # the payload is live: an unsafe load runs it
    assert marker.exists()
    marker.unlink()
    for door, call in _doors(path, tmp_path).items():
        with pytest.raises(CheckpointError, match=r"hostile\.ckpt") as caught:
            call()
        message = str(caught.value)
        assert "refused, it holds the Python object" in message and len(message.splitlines()) == 1, door
        assert "weights_only=False" not in message, door  # torch's advice would run the payload
        assert not marker.exists(), f"{door} ran the payload"


def test_hostile_checkpoint_on_the_command_line_is_one_error_line(slim: dict, tmp_path: Path, capsys) -> None:
    from xraylens.cli import main

    marker = tmp_path / "pwned"
    path = tmp_path / "hostile.ckpt"
    torch.save(_plant("lightning hyper_parameters", slim, marker), path)
    image = tmp_path / "x.png"
    from PIL import Image

    Image.fromarray(np.zeros((20, 20), np.uint8)).save(image)
    for argv in (["predict", str(path), str(image), "--no-progress"],
                 ["explain", str(path), str(image), "--out", str(tmp_path / "e")],
                 ["export", str(path), "--out", str(tmp_path / "m.onnx")],
                 ["train", "--out", str(tmp_path / "r"), "--resume", str(path)]):
        assert main(argv) == 2, argv
        err = capsys.readouterr().err.strip()
        assert "hostile.ckpt" in err and len(err.splitlines()) == 1, err
    assert not marker.exists()


def test_imagenet_weights_file_with_a_payload_is_refused(tmp_path: Path) -> None:
    from xraylens.models import PretrainedWeightsError
    from xraylens.models.weights import read_state_dict

    marker = tmp_path / "pwned"
    path = tmp_path / "weights.pth"
    torch.save({"conv.weight": torch.zeros(1), "extra": Payload(marker)}, path)
    with pytest.raises(PretrainedWeightsError, match=r"weights\.pth"):
        read_state_dict(path)
    assert not marker.exists()


def test_truncated_checkpoint_is_refused_clearly(slim: dict, tmp_path: Path) -> None:
    """What a crash mid-save would leave if writes were not atomic: it must never load as a valid model."""
    from xraylens.models import load_checkpoint
    from xraylens.training import checkpoint_experiment

    whole = tmp_path / "whole.ckpt"
    torch.save(lightning_like(slim), whole)
    data = whole.read_bytes()
    for cut in (len(data) // 2, len(data) - 100, 10):
        path = tmp_path / f"cut{cut}.ckpt"
        path.write_bytes(data[:cut])
        with pytest.raises(CheckpointError, match=rf"cut{cut}\.ckpt: cannot be read.*truncated, corrupt"):
            load_checkpoint(path)
        with pytest.raises(CheckpointError, match=rf"cut{cut}\.ckpt: cannot be read.*truncated, corrupt"):
            checkpoint_experiment(path)


def test_hostile_yaml_config_is_refused(tmp_path: Path) -> None:
    from xraylens.config import ConfigError, load_config

    marker = tmp_path / "pwned"
    path = tmp_path / "config.yaml"
    path.write_text(f"train: !!python/object/apply:pathlib.Path.touch [!!python/object/apply:pathlib.Path "
                    f"['{marker}']]\n")
    with pytest.raises(ConfigError, match=r"config\.yaml"):
        load_config(path)
    assert not marker.exists()


def test_cache_with_a_pickled_array_is_refused(tmp_path: Path) -> None:
    from xraylens.data.cache import INDEX_FILE, META_FILE, SQUARES_FILE, CacheError, open_cache_folder

    marker = tmp_path / "pwned"
    folder = tmp_path / "size8"
    folder.mkdir()
    np.save(folder / SQUARES_FILE, np.array([Payload(marker)], dtype=object), allow_pickle=True)
    (folder / INDEX_FILE).write_text("path,ok\nMURA-v1.1/train/a.png,1\n")
    (folder / META_FILE).write_text('{"format_version": 1, "size": 8, "count": 1}')
    with pytest.raises(CacheError, match=r"squares\.npy"):
        open_cache_folder(folder)
    assert not marker.exists()
