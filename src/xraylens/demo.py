"""The one-command demo: synthetic data -> training -> MURA-style evaluation -> measured explanations.

It is the whole product in miniature and runs on a 2-core CPU in minutes, so a
new user sees every output (history plot, metrics with CIs, figures, heatmaps,
a localisation report) before touching real data, gathered at the end into one
page (``report.html``, :mod:`xraylens.demo_report`). Each stage reuses what an
earlier run left in the output folder when its settings match, so a rerun after
an interruption continues instead of starting over.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from xraylens.atomic import atomic_write_json
from xraylens.config import ExperimentConfig, load_config

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DemoSettings:
    """What the demo builds; the defaults fit a 2-core CPU (about 11 minutes end to end)."""

    out: Path = Path("xraylens_demo")
    # 1000, not 300: lesions are 17% of findings, and at 300 patients the model saw too few to learn
    # them and the valid split held 4 to measure them with (README, "Results so far")
    patients: int = 1000
    max_side: int = 512  # synthetic image size = the model's native input (no shrinking of thin lines)
    seed: int = 0
    # All three finding kinds, drawn "easy" (obvious to a radiologist): what the CPU recipe (frozen
    # ImageNet features at 512 px + a spatial MIL head) learns in minutes (README, "What learns").
    # --difficulty realistic is as subtle as real films; the README gives its numbers too.
    findings: tuple[str, ...] = ("fracture", "hardware", "lesion")
    difficulty: str = "easy"
    config: str = "demo_cpu"
    overrides: tuple[str, ...] = ()
    workers: int = 2
    explain_limit: int = 60  # abnormal test images scored by explain-eval
    # the model's own map against the two gradient CAMs that pass the sanity check; every method at
    # 512 px costs a forward + backward per image, so the full set is `xraylens explain-eval` (README)
    explain_methods: tuple[str, ...] = ("saliency", "gradcam", "hirescam")
    # deletion/insertion curves cost ~20 forward passes per image and method at 512 px: the dearest part
    faithfulness_images: int = 4
    sanity_images: int = 4
    explain_images: int = 16  # test images explained into heatmaps/
    bootstrap: int = 1000


@dataclass
class DemoResult:
    out: Path
    checkpoint: Path
    metrics: dict[str, Any]
    localization: dict[str, Any]
    report_html: Path  # the page to open: every table and figure, self-contained
    report_md: Path  # the same report as markdown, figures linked
    timings: dict[str, float] = field(default_factory=dict)
    fallback: str | None = None  # why the demo ran another recipe than asked (no ImageNet weights)


FALLBACK_CONFIG = "scratch_cpu"


def with_available_weights(settings: DemoSettings) -> tuple[DemoSettings, str | None]:
    """The settings to run, and why they changed: without the offline ImageNet weights (the ``imagenet``
    extra) the demo falls back to the from-scratch recipe instead of training on random frozen features."""
    import dataclasses

    from xraylens.models import PretrainedWeightsError, architecture
    from xraylens.models.weights import packaged_lite0_path

    cfg = demo_config(settings)
    if not cfg.model.pretrained or cfg.model.weights_path or architecture(cfg.model.name).family == "torchvision":
        return settings, None
    try:
        packaged_lite0_path()
    except PretrainedWeightsError as exc:
        note = (f"{exc} Falling back to the from-scratch recipe (configs/{FALLBACK_CONFIG}.yaml, random "
                "weights, 128 px): it learns orthopaedic hardware, not fractures or lesions.")
        return dataclasses.replace(settings, config=FALLBACK_CONFIG), note
    return settings, None


def demo_config(settings: DemoSettings) -> ExperimentConfig:
    data_root = settings.out / "data"
    return load_config(settings.config, [f"data.root={data_root}", *settings.overrides])


def _check_same_run(run_dir: Path, cfg: ExperimentConfig) -> None:
    """Refuse to mix a rerun with different training settings into an earlier run's folder."""
    from xraylens.config import dump_config

    saved = run_dir / "config.yaml"
    if saved.is_file() and saved.read_text() != dump_config(cfg):
        raise FileExistsError(
            f"{run_dir} holds a training run with other settings (see {saved}); "
            "use another --out or delete that folder to retrain")


def run_demo(settings: DemoSettings, *, progress: bool = True) -> DemoResult:
    """Run every stage into ``settings.out`` and return the headline numbers."""
    import pandas as pd

    from xraylens.data.mura import index_dataset
    from xraylens.data.synthetic import generate
    from xraylens.data.synthetic.writer import is_finished
    from xraylens.demo_report import report_paths, write_demo_report
    from xraylens.evaluation import evaluate
    from xraylens.explain.cams import methods_for
    from xraylens.explain.explanations import explain_images, items_from_table
    from xraylens.explain.report import EvalSettings, evaluate_explanations
    from xraylens.models import load_checkpoint
    from xraylens.training import fit

    settings, fallback = with_available_weights(settings)
    if fallback:
        log.warning("demo: %s", fallback)
    out = settings.out
    cfg = demo_config(settings)  # validate the config before spending minutes on data
    timings: dict[str, float] = {}

    def stage(name: str) -> None:
        timings[name] = time.perf_counter()
        log.info("demo: %s", name)

    stage("data")
    synth = {"patients": settings.patients, "max_side": settings.max_side, "seed": settings.seed,
             "findings": settings.findings, "difficulty": settings.difficulty}
    if is_finished(out / "data", **synth):
        log.info("demo: reusing the synthetic dataset in %s", out / "data")
    else:
        generate(out / "data", **synth, workers=settings.workers, progress=progress)

    stage("train")
    run_dir = out / "run"
    best = run_dir / "checkpoints" / "best.ckpt"
    _check_same_run(run_dir, cfg)
    if best.is_file() and (run_dir / "training_history.png").is_file():
        log.info("demo: reusing the finished training run in %s (delete it to retrain)", run_dir)
    else:
        last = run_dir / "checkpoints" / "last.ckpt"
        result = fit(cfg, run_dir, resume=last if last.is_file() else None, progress=progress)
        best = result.best_checkpoint or best

    stage("evaluate")
    # The later stages' folders are the demo's own: a rerun with the same settings (the checks above
    # refuse other ones) replaces them, which is what "rerunning continues" means for them.
    report = evaluate([best], out / "data", split="valid", out=out / "eval", n_boot=settings.bootstrap,
                      num_workers=0, progress=progress, overwrite=True, engine="auto")

    stage("explain-eval")
    loaded = load_checkpoint(best)
    localization = evaluate_explanations(
        loaded, out / "data", out / "data" / "boxes.csv", out / "explain_eval",
        EvalSettings(limit=settings.explain_limit, faithfulness_images=settings.faithfulness_images,
                     sanity_images=settings.sanity_images,
                     methods=methods_for(loaded.meta.model.name, settings.explain_methods)),
        split="valid", progress=progress, overwrite=True)

    stage("explain")
    table = index_dataset(out / "data", splits=("valid",), progress=False).table
    # a mix of abnormal and normal test images, the same ones on every run
    per_label = settings.explain_images // 2
    picked = pd.concat([group.sample(n=min(len(group), per_label), random_state=0)
                        for _, group in table.groupby("label")])
    explain_images(loaded, items_from_table(picked.sort_values("path")), out / "heatmaps",
                   cfg.explain, study_views=True, progress=progress, overwrite=True)

    timings["end"] = time.perf_counter()
    names = list(timings)
    durations = {n: round(timings[names[i + 1]] - timings[n], 1) for i, n in enumerate(names[:-1])}
    atomic_write_json(out / "demo_summary.json", {
        "checkpoint": str(best), "seconds": durations,
        "study": {k: report.metrics["study"].get(k) for k in ("auroc", "kappa", "accuracy", "ci95")},
        "image": {k: report.metrics["image"].get(k) for k in ("auroc", "kappa", "accuracy", "ci95")},
        "localization_report": str(out / "explain_eval" / "report.md"),
        "report_html": str(report_paths(out).html), "report_md": str(report_paths(out).markdown),
    })
    # last: the report reads every file above, the summary's timings included
    written = write_demo_report(out)
    return DemoResult(out=out, checkpoint=best, metrics=report.metrics, localization=localization,
                      report_html=written.html, report_md=written.markdown, timings=durations,
                      fallback=fallback)
