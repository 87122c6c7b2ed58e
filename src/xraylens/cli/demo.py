"""`xraylens demo`: the whole pipeline on the built-in synthetic dataset, on a CPU, in minutes."""

from __future__ import annotations

import argparse

from xraylens.cli.arguments import finding_kinds

_EPILOG = """\
what it writes (under --out, default xraylens_demo/):
  report.html    everything below on one self-contained page (report.md: the same in markdown)
  data/          synthetic MURA-v1.1 tree, boxes.csv (ground truth), synth_manifest.json
  run/           config.yaml, metrics.csv, training_history.png, checkpoints/{best,last}.ckpt
  eval/          metrics.json, per_body_part.md, predictions, roc/confusion/reliability/sample figures
  explain_eval/  report.md: CAM methods vs pointing game, IoU, energy-in-box, faithfulness, sanity check
  heatmaps/      per-image heatmap + overlay PNGs, explanations.csv, boxes.json (COCO), study figures

the recipe (configs/demo_cpu.yaml): EfficientNet-Lite0 with ImageNet weights (installed offline by the
imagenet extra), frozen, its blocks 2-4 stacked on one stride-16 grid; their features of every 512 px image
are computed once, and a spatial multiple-instance head learns which locations are abnormal. Its own map (method "saliency") is
scored beside Grad-CAM.

examples:
  xraylens demo                                   # 1000 patients, easy findings of all three kinds (~11 min)
  xraylens demo --quick                           # a first look in about 2 minutes (weaker numbers)
  xraylens demo --difficulty realistic --out demo_real   # findings as subtle as real films
  xraylens demo --patients 300                    # about 5 minutes; too few lesions to learn them
  xraylens demo --findings hardware --config scratch_cpu --out demo_scratch   # the from-scratch baseline
  xraylens demo --out my_demo   # rerunning continues: finished stages with the same settings are reused
"""


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "demo",
        help="synthetic data -> train -> evaluate -> explain, end to end on a CPU",
        description="Run the whole xraylens pipeline on the built-in synthetic MURA-format dataset.",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--out", default="xraylens_demo", help="output folder (default: %(default)s)")
    parser.add_argument("--patients", type=int, default=None, help="synthetic patients (default 1000: enough lesions to learn and to measure; --quick 120, --fast 60)")
    parser.add_argument("--max-side", type=int, default=512, help="synthetic image long side in px (default 512)")
    parser.add_argument("--seed", type=int, default=0, help="synthetic data seed (default 0)")
    parser.add_argument("--findings", type=finding_kinds, default=("fracture", "hardware", "lesion"),
                        metavar="KINDS", help="finding kinds in abnormal studies (default: all three, "
                        "fracture,hardware,lesion); e.g. hardware alone for the from-scratch scratch_cpu recipe")
    parser.add_argument("--difficulty", choices=("easy", "realistic"), default="easy",
                        help="easy (default): findings a radiologist calls obvious, learned by the CPU recipe in "
                        "minutes; realistic: as subtle as real films (hairline fractures; README for numbers)")
    parser.add_argument("--config", default="demo_cpu", help="training preset or YAML file (default demo_cpu)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config key, e.g. --set train.epochs=4 (repeatable)")
    parser.add_argument("--workers", type=int, default=2, help="processes for data generation (default 2)")
    parser.add_argument("--quick", action="store_true",
                        help="a first look in about 2 minutes: 120 patients, 30 images scored for localisation, "
                        "no deletion/insertion curves, 200 bootstrap samples (weaker numbers; README)")
    parser.add_argument("--fast", action="store_true",
                        help="smoke run for tests: 60 patients, 2 epochs, fewer explained images")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from xraylens.cli import CLIError
    from xraylens.config import ConfigError
    from xraylens.demo import DemoSettings, run_demo
    from xraylens.demo_report import key_numbers

    overrides = (["train.epochs=2"] if args.fast else []) + list(args.overrides)
    small = args.fast or args.quick
    settings = DemoSettings(
        out=Path(args.out),
        patients=args.patients or (60 if args.fast else 120 if args.quick else DemoSettings.patients),
        max_side=args.max_side,
        seed=args.seed,
        findings=args.findings,
        difficulty=args.difficulty,
        config=args.config,
        overrides=tuple(overrides),
        workers=args.workers,
        explain_limit=30 if small else 60,
        faithfulness_images=0 if small else 4,
        sanity_images=2 if small else 4,
        explain_images=8 if small else 16,
        bootstrap=200 if small else 1000,
    )
    try:
        result = run_demo(settings, progress=not args.no_progress)
    except (ConfigError, FileExistsError) as exc:
        raise CLIError(str(exc)) from exc
    if result.fallback:
        print(f"note: {result.fallback}")
    print()
    print(f"demo finished in {sum(result.timings.values()):.0f} s -> {result.out}/")
    for line in key_numbers(result.metrics, result.localization):
        print(f"  {line}")
    print(f"  report:     {result.report_html}  (markdown: {result.report_md})")
    print(f"  checkpoint: {result.checkpoint}")
    print(f"  try next:   xraylens serve {result.checkpoint}")
    print("research software, not a medical device.")
    return 0
