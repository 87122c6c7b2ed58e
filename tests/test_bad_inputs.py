"""Every entry point over the bad-input corpus: each kind is read correctly, or named in a report while the rest
is used; a CSV that is not a MURA list at all is refused with an error naming it.

The corpus (tests/bad_inputs.py) goes into one MURA tree (every file kind as
a view of one abnormal study, in train and in valid, plus every tree flaw) and
one folder of loose files. Each test drives one entry point over it, asserts
the outcome of every kind and records it; the last test prints the table of
kinds x entry points (also kept in the README, "Reliability").
"""

from __future__ import annotations

import json
import logging
import re
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

pytest.importorskip("pydicom")

import bad_inputs  # noqa: E402
from bad_inputs import FILE_KINDS, GOOD, OUTCOMES, TREE_KINDS  # noqa: E402
from conftest import build_tiny_mura  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_torch_thread")
FLAWS = tuple(k for k in TREE_KINDS if k != "csv_wrong_columns")


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> dict:
    base = tmp_path_factory.mktemp("corpus")
    root = build_tiny_mura(base / "mura").root
    outside = base / "outside"
    where = {split: bad_inputs.add_flaws(root, split, outside) for split in ("train", "valid")}
    broken = build_tiny_mura(base / "broken").root
    wrong_csv = bad_inputs.break_csvs(broken)
    with_images = [k for k in (*FILE_KINDS, *TREE_KINDS) if k in where["valid"] and not where["valid"][k].endswith("/")
                   and "../" not in where["valid"][k]]  # every image the index could hand to explain-eval
    boxes = pd.DataFrame([{"path": where["valid"][k], "x0": 0, "y0": 0, "x1": 1, "y1": 1, "kind": "fracture"}
                          for k in with_images])
    boxes.to_csv(base / "boxes.csv", index=False)
    return {"root": root, "where": where, "broken": broken, "wrong_csv": wrong_csv,
            "loose": bad_inputs.write_loose_files(base / "loose"), "boxes": base / "boxes.csv", "base": base}


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from model_helpers import tiny_checkpoint

    return tiny_checkpoint(tmp_path_factory.mktemp("ckpt") / "m.ckpt")


def _named(texts: list[str], rel: str) -> bool:
    return any(rel in text for text in texts)


def _record(entry: str, kind: str, outcome: str) -> None:
    OUTCOMES[(kind, entry)] = outcome


def _check_tree_report(entry: str, split: str, corpus: dict, read: set[str], reported: dict[str, str]) -> None:
    """``read``: MURA paths the entry point used; ``reported``: path or detail text -> short reason."""
    for kind in (*FILE_KINDS, *FLAWS):
        rel = corpus["where"][split][kind]
        hits = [reason for text, reason in reported.items() if rel in text]
        if kind in GOOD:
            assert rel in read and not hits, (entry, kind, hits)
            _record(entry, kind, "read")
        else:
            assert hits and rel not in read, (entry, kind, "not reported by name")
            _record(entry, kind, hits[0])


def _check_refusal(entry: str, message: str, csv: Path) -> None:
    assert csv.name in message and "expected form" in message, message
    _record(entry, "csv_wrong_columns", f"refused: {csv.name}")


# ---------------------------------------------------------------- entry points over the tree


def test_data_summary(corpus: dict, capsys) -> None:
    from xraylens.cli import main
    from xraylens.data.mura import index_dataset

    assert main(["data", "summary", str(corpus["root"]), "--verify", "--json", "--quiet"]) == 0
    summary = json.loads(capsys.readouterr().out)
    reported = {f"{p['path']} {p['detail']}": f"listed: {p['kind']}" for p in summary["problems"]}
    read = set(index_dataset(corpus["root"], verify=True, progress=False).table["path"])
    _check_tree_report("data summary", "valid", corpus, read, reported)
    assert main(["data", "summary", str(corpus["broken"]), "--quiet"]) == 2
    _check_refusal("data summary", capsys.readouterr().err, corpus["wrong_csv"].with_name("train_image_paths.csv"))


def test_training_loader(corpus: dict, caplog) -> None:
    """Every sample of both loaders comes back; an unreadable one as ok=False with its file logged."""
    from torch.utils.data import DataLoader

    from xraylens.config import load_config
    from xraylens.data.problems import DataError
    from xraylens.datamodule import RadiographDataModule, load_training_data

    overrides = ["data.image_size=32", "data.num_workers=0", "data.val_fraction=0.25", "train.batch_size=4"]
    cfg = load_config("scratch_cpu", [f"data.root={corpus['root']}", *overrides])
    with caplog.at_level(logging.WARNING, logger="xraylens"):
        data = load_training_data(cfg, progress=False)
        module = RadiographDataModule(cfg, data)
        module.setup()
        ok: dict[str, bool] = {}
        for table, dataset in ((data.train, module.train_set), (data.val, module.val_set)):
            for batch in DataLoader(dataset, batch_size=4):  # collation of good and bad samples together
                ok.update({table["path"].iat[int(i)]: bool(k) for i, k in zip(batch["index"], batch["ok"],
                                                                            strict=True)})
    read = {path for path, fine in ok.items() if fine}
    reported = {path: "ok=False, logged" for path, fine in ok.items() if not fine}
    assert all(_named(list(caplog.messages), path) for path in reported)
    for message in caplog.messages:  # the index's problems, as format_problems lists them
        kind = None
        for line in message.splitlines():
            if re.match(r"^  \w+: \d+", line):
                kind = line.split(":")[0].strip()
            elif kind and line.startswith("      "):
                reported[line] = f"logged: {kind}"
    _check_tree_report("training loader", "train", corpus, read, reported)
    broken = load_config("scratch_cpu", [f"data.root={corpus['broken']}", *overrides])
    with pytest.raises(DataError) as caught:
        load_training_data(broken, progress=False)
    _check_refusal("training loader", str(caught.value), corpus["wrong_csv"].with_name("train_image_paths.csv"))


def test_evaluate(corpus: dict, checkpoint: Path) -> None:
    from xraylens.data.problems import DataError
    from xraylens.evaluation import evaluate

    report = evaluate([checkpoint], corpus["root"], out=corpus["base"] / "eval", n_boot=0, progress=False)
    skipped = report.metrics["skipped"]
    reported = {text: "listed: unreadable" for text in skipped["unreadable"]}
    for kind, examples in skipped["index_problems"]["examples"].items():
        reported.update({f"{e['path']} {e['detail']}": f"listed: {kind}" for e in examples})
    _check_tree_report("evaluate", "valid", corpus, set(report.images["path"]), reported)
    assert np.isfinite(report.images["probability"]).all()
    with pytest.raises(DataError) as caught:
        evaluate([checkpoint], corpus["broken"], out=corpus["base"] / "eval_broken", n_boot=0, progress=False)
    _check_refusal("evaluate", str(caught.value), corpus["wrong_csv"])


def test_explain(corpus: dict, checkpoint: Path, capsys) -> None:
    from xraylens.cli import main
    from xraylens.data.problems import PROBLEM_KINDS

    out = corpus["base"] / "explain"
    assert main(["explain", str(checkpoint), "--data", str(corpus["root"]), "--out", str(out), "--quiet"]) == 0
    explained = pd.read_csv(out / "explanations.csv")
    skipped = pd.read_csv(out / "skipped.csv")
    reported = {f"{p} {r}": f"skipped.csv: {r.split(':')[0] if r.split(':')[0] in PROBLEM_KINDS else 'unreadable'}"
                for p, r in zip(skipped["path"], skipped["reason"], strict=True)}
    _check_tree_report("explain", "valid", corpus, set(explained["path"]), reported)
    assert (out / "images" / "XR_WRIST_patient11250_study1_positive_image9_overlay.png").is_file()  # the 1x1
    assert main(["explain", str(checkpoint), "--data", str(corpus["broken"]), "--out", str(out / "b")]) == 2
    _check_refusal("explain", capsys.readouterr().err, corpus["wrong_csv"])


def test_explain_eval(corpus: dict, checkpoint: Path) -> None:
    from xraylens.data.problems import DataError
    from xraylens.explain.report import EvalSettings, evaluate_explanations
    from xraylens.models import load_checkpoint

    settings = EvalSettings(methods=("gradcam",), limit=0, faithfulness_images=0, sanity_images=0, grid_images=2)
    loaded = load_checkpoint(checkpoint)
    results = evaluate_explanations(loaded, corpus["root"], corpus["boxes"], corpus["base"] / "xeval", settings,
                                    progress=False)
    reported = {f"{s['path']} {s['reason']}": "listed: unreadable" for s in results["skipped"]}
    for kind, examples in results["index_problems"]["examples"].items():
        reported.update({f"{e['path']} {e['detail']}": f"listed: {kind}" for e in examples})
    _check_tree_report("explain-eval", "valid", corpus, set(results["images"]), reported)
    with pytest.raises(DataError) as caught:
        evaluate_explanations(loaded, corpus["broken"], corpus["boxes"], corpus["base"] / "xb", settings,
                              progress=False)
    _check_refusal("explain-eval", str(caught.value), corpus["wrong_csv"])


# ---------------------------------------------------------------- entry points over loose files


def test_predict(corpus: dict, checkpoint: Path, capsys) -> None:
    from xraylens.cli import main
    from xraylens.inference import Predictor

    out = corpus["base"] / "preds.json"
    folder = next(iter(corpus["loose"].values())).parent
    assert main(["predict", str(checkpoint), str(folder), "--out", str(out), "--no-progress"]) == 0
    result = json.loads(out.read_text())
    predicted = {Path(p["path"]).name for p in result["images"]}
    failed = {Path(f["path"]).name: f["reason"] for f in result["failures"]}
    for kind, path in corpus["loose"].items():
        if kind in GOOD:
            assert path.name in predicted and path.name not in failed, kind
            _record("predict", kind, "read")
        else:
            assert path.name in failed and path.name not in predicted, kind
            _record("predict", kind, "failure row")
    assert "pip install pyjpegls" in failed["dicom_compressed_no_decoder.dcm"]
    assert "over the limit" in failed["dicom_huge_declared.dcm"]
    # MONOCHROME1 is inverted (white is low): as displayed it is the gradient, stretched to [0, 1]
    from xraylens.data.images import read_image

    gray = bad_inputs._gradient().astype(np.float32)
    shown = (gray - gray.min()) / (gray.max() - gray.min())
    np.testing.assert_allclose(read_image(corpus["loose"]["dicom_monochrome1"]), shown, atol=1e-6)
    predictor = Predictor.from_checkpoint(checkpoint)
    # 1e-5: the DICOM and array paths differ by float rounding (1.2e-6 on AVX-512 kernels); the inverted
    # image, what a reader that ignored MONOCHROME1 would feed, is checked to land far outside that
    from_dicom = predictor.predict_image(corpus["loose"]["dicom_monochrome1"]).probability
    assert from_dicom == pytest.approx(predictor.predict_image(shown).probability, abs=1e-5)
    assert abs(from_dicom - predictor.predict_image(1.0 - shown).probability) > 1e-4


def test_predict_without_pydicom_reports_each_dicom_and_goes_on(corpus: dict, checkpoint: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """pydicom missing used to raise ImportError out of predict_many at the first DICOM, stopping the run."""
    from xraylens.inference import Predictor

    predictor = Predictor.from_checkpoint(checkpoint)
    monkeypatch.setitem(sys.modules, "pydicom", None)
    paths = [corpus["loose"]["dicom_monochrome1"], corpus["loose"]["png_16bit"]]
    result = predictor.predict_many(paths, progress=False)
    assert [Path(p.source).name for p in result.images] == ["png_16bit.png"]
    (failure,) = result.failures
    assert failure.path.endswith("dicom_monochrome1.dcm") and "pip install 'xraylens[dicom]'" in failure.reason
    _record("predict", "dicom_without_pydicom", "failure row naming the extra")


def test_server(corpus: dict, checkpoint: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import tempfile

    from fastapi.testclient import TestClient

    from xraylens.inference import Predictor
    from xraylens.server.app import create_app

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    with TestClient(create_app(Predictor.from_checkpoint(checkpoint))) as client:
        for kind, path in corpus["loose"].items():
            response = client.post("/api/predict", files={"file": (path.name, path.read_bytes(), "image/png")})
            if kind in GOOD:
                assert response.status_code == 200, (kind, response.text)
                _record("server", kind, "200")
            else:
                assert 400 <= response.status_code < 500, (kind, response.status_code)
                assert response.json()["detail"].startswith(path.name), (kind, response.json())
                _record("server", kind, str(response.status_code))
    assert list(tmp_path.iterdir()) == []  # every upload's temporary file deleted


def test_every_kind_met_every_entry_point_it_can(tmp_path_factory: pytest.TempPathFactory) -> None:
    """The table: written under the pytest temp folder and printed in the session summary (conftest)."""
    table = bad_inputs.format_table()
    path = tmp_path_factory.getbasetemp() / "bad_inputs_table.md"
    path.write_text(table + "\n")
    file_entries = ("data summary", "training loader", "evaluate", "explain", "explain-eval", "predict", "server")
    tree_entries = ("data summary", "training loader", "evaluate", "explain", "explain-eval")
    missing = [(k, e) for k in FILE_KINDS for e in file_entries if (k, e) not in OUTCOMES]
    missing += [(k, e) for k in TREE_KINDS for e in tree_entries if (k, e) not in OUTCOMES]
    if len(OUTCOMES) and missing and len(missing) < len(FILE_KINDS) * len(file_entries):
        pytest.fail(f"kinds not driven through an entry point: {missing}")
