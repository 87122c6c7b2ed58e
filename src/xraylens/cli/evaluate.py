"""`xraylens evaluate`: score checkpoint(s) on a MURA split and write the report folder.

Only argparse is imported here; torch and the evaluation code load inside the handler.
"""

from __future__ import annotations

import argparse

from xraylens.cli.arguments import add_format, count, positive

_EPILOG = """\
Everything about the model comes from the checkpoint: architecture,
preprocessing, temperature, threshold, and the validation subset (carved from
train by patient with the val_fraction and split_seed used in training) on
which --calibrate and --threshold youden|kappa are fitted. The official valid
split is the test set.

Several checkpoints form an ensemble: their probabilities are averaged (the
MURA paper's top-5 ensemble). A study's probability is the mean of its views';
95% confidence intervals come from a bootstrap that resamples studies.

FracAtlas and GRAZPEDWRI-DX folders are read as released (format detected, or
--format); their test split 'valid' is rebuilt from the checkpoint's data
settings (data.test_fraction, data.test_seed, data.official_split, data.label).

With a box table (path,x0,y0,x1,y1,kind; the synthetic dataset's
ROOT/boxes.csv and the box datasets' own boxes are found by themselves, or
give --boxes), study- and image-level
AUROC and kappa are also reported per finding kind: positives are the abnormal
studies with a box of that kind, negatives all normal studies.

Writes into OUT: metrics.json, per_body_part.{md,csv}, per_kind.{md,csv} (with
a box table), predictions_images.csv, predictions_studies.csv, submission.csv
(MURA style: study path,0|1), sample_predictions.png, roc.png, confusion.png,
reliability.png.

examples:
  xraylens evaluate runs/demo/checkpoints/best.ckpt --data data/synth --out runs/demo/eval
  xraylens evaluate run1/best.ckpt run2/best.ckpt run3/best.ckpt --data ~/MURA-v1.1 --out eval/ensemble
  xraylens evaluate best.ckpt --data ~/MURA-v1.1 --out eval/wrist --body-part wrist
  xraylens evaluate best.ckpt --data ~/MURA-v1.1 --out eval/cal --calibrate --threshold kappa
  xraylens evaluate best.ckpt --data data/synth --out eval/quick --bootstrap 200 --batch-size 16
  xraylens evaluate best.ckpt --data ~/MURA-v1.1 --out eval/kinds --boxes my_boxes.csv
  xraylens evaluate runs/fa/checkpoints/best.ckpt --data ~/datasets/FracAtlas --out runs/fa/eval
"""


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "evaluate",
        help="image- and study-level metrics, per body part, with CIs, plots and a MURA submission file",
        description="Evaluate one checkpoint (or an ensemble of several) on a split of a dataset folder.",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("checkpoints", metavar="CKPT", nargs="+", help="checkpoint(s) written by `xraylens train`")
    parser.add_argument("--data", required=True, metavar="ROOT", help="the MURA-v1.1 folder or its parent, or a "
                                                                      "FracAtlas / GRAZPEDWRI-DX folder")
    add_format(parser, default=None, what="the checkpoint's data.format, usually auto")
    parser.add_argument("--split", choices=("valid", "train"), default="valid",
                        help="official split to evaluate (default: valid, MURA's public test set)")
    parser.add_argument("--out", required=True, metavar="DIR", help="folder for the report files")
    parser.add_argument("--body-part", metavar="P", nargs="+", action="extend",
                        help="only these body parts: wrist, XR_WRIST, ... (default: all)")
    parser.add_argument("--boxes", metavar="PATH", default=None,
                        help="box table (path,...,kind) for metrics per finding kind (default: the dataset's "
                             "own boxes for FracAtlas / GRAZPEDWRI-DX, else ROOT/boxes.csv when it exists)")
    parser.add_argument("--calibrate", action="store_true",
                        help="fit temperature scaling on the validation subset before measuring")
    parser.add_argument("--threshold", default="checkpoint", metavar="T",
                        help="checkpoint (stored at training, default), a number such as 0.5, or youden / "
                             "kappa (maximised on validation studies)")
    parser.add_argument("--bootstrap", type=count, default=1000, metavar="N",
                        help="bootstrap resamples for the 95%% CIs (default: 1000; 0 = no CIs)")
    parser.add_argument("--seed", type=int, default=0, help="bootstrap and sample-figure seed (default: 0)")
    parser.add_argument("--batch-size", type=positive, default=64, metavar="B", help="default: 64")
    parser.add_argument("--workers", type=count, default=0, metavar="W", help="data loading processes (default: 0)")
    parser.add_argument("--device", default=None, help="cpu, cuda, cuda:1 ... (default: cuda if available)")
    parser.add_argument("--engine", choices=("auto", "torch", "onnxruntime"), default="auto",
                        help="what runs the model: auto (default) = ONNX Runtime on a CPU for 256 images or more "
                             "(each checkpoint exported once, ~15 s; 4x PyTorch's float32 speed for the demo's "
                             "model on an AVX2 CPU; PyTorch if the export fails), else PyTorch")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace an earlier evaluation in OUT (default: refuse a non-empty OUT)")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    parser.set_defaults(handler=_evaluate)


def _evaluate(args: argparse.Namespace) -> int:
    import sys
    from pathlib import Path

    from xraylens.cli import CLIError
    from xraylens.data.problems import DataError
    from xraylens.evaluation import EvaluationError, evaluate
    from xraylens.models import CheckpointError
    from xraylens.output_dir import OutputExistsError

    try:
        report = evaluate(
            [Path(p) for p in args.checkpoints],
            args.data,
            split=args.split,
            out=Path(args.out),
            body_parts=args.body_part,
            calibrate=args.calibrate,
            threshold=args.threshold,
            n_boot=args.bootstrap,
            seed=args.seed,
            batch_size=args.batch_size,
            num_workers=args.workers,
            progress=not args.quiet and sys.stderr.isatty(),
            device=args.device,
            boxes=args.boxes,
            format=args.format,
            overwrite=args.overwrite,
            engine=args.engine,
        )
    except (CheckpointError, DataError, EvaluationError, OutputExistsError) as exc:
        raise CLIError(str(exc)) from exc
    m = report.metrics
    study = m["study"]
    print(f"study AUROC  {_with_ci(study, 'auroc')}")
    print(f"study kappa  {_with_ci(study, 'kappa')}")
    print(f"image AUROC  {_with_ci(m['image'], 'auroc')}")
    print(f"{study['n']} studies, {m['image']['n']} images, threshold {m['threshold']:.3f} ({m['threshold_method']})"
          + (f", {m['skipped']['count']} unreadable skipped" if m["skipped"]["count"] else ""))
    for kind, entry in (m.get("per_kind") or {}).items():
        print(f"{kind}: study AUROC {_with_ci(entry['study'], 'auroc')}, kappa {_with_ci(entry['study'], 'kappa')}"
              f" ({entry['n_positive_studies']} vs {entry['n_negative_studies']} normal studies)")
    tables = "per_body_part.md, per_kind.md" if m.get("per_kind") else "per_body_part.md"
    print(f"reports in {args.out}/ ({tables}, metrics.json, figures)")
    return 0


def _with_ci(section: dict, name: str) -> str:
    value, (lo, hi) = section[name], section["ci95"][name]
    text = "n/a" if value is None else f"{value:.3f}"
    return text + ("" if lo is None or hi is None else f"  [95% CI {lo:.3f}, {hi:.3f}]")
