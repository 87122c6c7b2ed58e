"""`xraylens explain` (heatmaps, boxes and sentences) and `xraylens explain-eval` (how good are they?).

Only argparse is imported here; torch and the explanation code load inside the handlers.
"""

from __future__ import annotations

import argparse

from xraylens.cli.arguments import add_format, count, positive

METHOD_CHOICES = ("gradcam", "gradcam++", "hirescam", "scorecam", "eigencam", "layercam", "cam", "saliency")
THRESHOLD_MODES = ("fraction", "percentile", "otsu")

_EXPLAIN_EPILOG = """\
INPUTS are image files, folders (searched recursively; PNG/JPEG/DICOM by
extension or content) or quoted globs; or give --data ROOT to explain a split
of a MURA tree (with --limit, whole studies are drawn at random, seed 0).
Preprocessing, decision threshold and temperature come from the checkpoint.

Writes into OUT: images/<name>_heatmap.png (raw map, 8-bit gray, original
size), images/<name>_overlay.png (coloured overlay with boxes),
explanations.csv (one row per image: probability, verdict, boxes as JSON, the
sentence), boxes.json (COCO, original pixels), overlays_grid.png (first 16),
studies/<study>.png with --data (every view on one colour scale), and
skipped.csv when files could not be read. Names come from the MURA-relative or
input-relative path, e.g. XR_WRIST_patient11185_study1_positive_image1.

A heatmap shows where the model's evidence lies, not a finding; for a normal
verdict it means little. Score-CAM is slow on a CPU (one forward pass per
feature channel per image).

examples:
  xraylens explain runs/demo/checkpoints/best.ckpt xray.png --out heatmaps/
  xraylens explain best.ckpt scans/ 'more/*.png' --out heatmaps/ --method gradcam++
  xraylens explain best.ckpt --data data/synth --split valid --limit 40 --out heatmaps/valid
  xraylens explain best.ckpt xray.png --out heatmaps/ --threshold-mode otsu
"""

_EVAL_EPILOG = """\
Measures explanations on abnormal images that have ground-truth boxes: the
boxes FracAtlas and GRAZPEDWRI-DX ship (read as released, no --boxes needed),
the synthetic dataset's boxes.csv (found next to MURA-v1.1), or --boxes
(path,x0,y0,x1,y1,kind; paths as the index names them, original pixels). Per
method and per finding kind: pointing game (with its chance level), IoU of the
predicted boxes, heat inside the boxes, COCO AP50 and AP50:95 of the boxes cut
from the maps; top-box accuracy at thresholds 0.1-0.9 of the map's peak
(MaxBoxAcc, the best of them: an upper bound on these images); deletion and
insertion AUC on a subsample; a cascading model-randomisation sanity check.
The split is rebuilt with the checkpoint's data settings.

To choose where explain cuts its boxes, run this on --split train, read the
best threshold of your method in report.md, and pass it to
`xraylens explain --threshold`.

Writes into OUT: localization.json, report.md, methods_grid.png,
pointing_game.png, box_accuracy.png, sanity.png, coco/ground_truth.json and
coco/detections_<method>.json (COCO results: image_id, category_id,
bbox [x, y, w, h], score) to score the boxes with other tools.

Defaults suit a laptop CPU (a few minutes for mobilenet_v2 at 128 px).
Score-CAM is left out of the default methods: it needs one forward pass per
feature channel per image (about 1,280 for mobilenet_v2); add it with
--methods ...,scorecam and a small --limit.

examples:
  xraylens explain-eval best.ckpt --data data/synth --boxes data/synth/boxes.csv --out runs/demo/explain_eval
  xraylens explain-eval best.ckpt --data data/synth --boxes data/synth/boxes.csv --out ev --methods gradcam,cam
  xraylens explain-eval best.ckpt --data data/synth --boxes data/synth/boxes.csv --out ev6 --layer features.6
  xraylens explain-eval runs/fa/checkpoints/best.ckpt --data ~/datasets/FracAtlas --out runs/fa/explain_eval
"""


def register(subparsers: argparse._SubParsersAction) -> None:
    explain = subparsers.add_parser(
        "explain", help="heatmaps, boxes and a sentence per image (CAM methods)",
        description="Explain a checkpoint's predictions on images: heatmaps, overlays, boxes and sentences.",
        epilog=_EXPLAIN_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    explain.add_argument("checkpoint", metavar="CKPT", help="checkpoint written by `xraylens train`")
    explain.add_argument("inputs", metavar="INPUTS", nargs="*", help="image files, folders or globs")
    explain.add_argument("--out", required=True, metavar="DIR", help="folder for the outputs")
    explain.add_argument("--data", metavar="ROOT", help="explain a split of this dataset folder (MURA, FracAtlas, "
                                                        "GRAZPEDWRI-DX) instead of INPUTS")
    add_format(explain, default=None, what="the checkpoint's data.format, usually auto")
    explain.add_argument("--split", choices=("valid", "train"), default="valid", help="with --data (default: valid)")
    explain.add_argument("--limit", type=positive, metavar="N", help="at most N images")
    _common(explain)
    explain.add_argument("--target", choices=("abnormal", "normal"), default="abnormal",
                         help="class the map explains (default: abnormal)")
    explain.add_argument("--threshold-mode", choices=THRESHOLD_MODES, default="fraction",
                         help="how boxes are cut from the map (default: fraction of the maximum)")
    explain.add_argument("--threshold", type=float, default=0.5,
                         help="fraction of the max (fraction), quantile (percentile; 0.9 = hottest 10%%); "
                              "otsu ignores it (default: 0.5)")
    explain.add_argument("--max-studies", type=positive, default=20, metavar="N",
                         help="study figures to draw with --data (default: 20)")
    explain.add_argument("--method", choices=METHOD_CHOICES, default=None,
                         help="CAM method (default: the checkpoint's explain.method, the one its training "
                              "config names: saliency for demo_cpu's native map, else gradcam)")
    _layer(explain)
    explain.set_defaults(handler=_explain)

    evaluate = subparsers.add_parser(
        "explain-eval", help="measure CAM methods against ground-truth boxes (pointing game, IoU, AP, sanity)",
        description="Score explanation methods on abnormal images that have ground-truth boxes.",
        epilog=_EVAL_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    evaluate.add_argument("checkpoint", metavar="CKPT", help="checkpoint written by `xraylens train`")
    evaluate.add_argument("--data", required=True, metavar="ROOT", help="the MURA-v1.1 folder or its parent, or a "
                                                                        "FracAtlas / GRAZPEDWRI-DX folder")
    add_format(evaluate, default=None, what="the checkpoint's data.format, usually auto")
    evaluate.add_argument("--boxes", metavar="CSV", default=None,
                          help="ground-truth boxes (path,x0,y0,x1,y1,kind); default: the dataset's own boxes, or "
                               "boxes.csv in ROOT")
    evaluate.add_argument("--out", required=True, metavar="DIR", help="folder for the report")
    evaluate.add_argument("--methods", type=_methods, default=None, metavar="M,M",
                          help="comma-separated (default: every method except scorecam)")
    evaluate.add_argument("--split", choices=("valid", "train"), default="valid", help="default: valid")
    evaluate.add_argument("--limit", type=count, default=200, metavar="N",
                          help="abnormal images with boxes, sampled with --seed (default: 200; 0 = all)")
    evaluate.add_argument("--faithfulness-images", type=count, default=16, metavar="N",
                          help="images for deletion/insertion AUC (default: 16; 0 = skip)")
    evaluate.add_argument("--sanity-images", type=count, default=6, metavar="N",
                          help="images for the randomisation check (default: 6; 0 = skip)")
    evaluate.add_argument("--sanity-steps", type=positive, default=4, metavar="K",
                          help="randomise the head and then K-1 more blocks, top down (default: 4)")
    evaluate.add_argument("--seed", type=int, default=0, help="sampling and randomisation seed (default: 0)")
    _layer(evaluate)
    _common(evaluate)
    evaluate.set_defaults(handler=_explain_eval)


def _layer(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--layer", metavar="NAME", default=None,
                        help="CAM layer as a dotted module name, e.g. features.6 for mobilenet_v2 (default: the "
                        "last feature map, stride 32). Earlier layers give finer maps; the classic 'cam' needs "
                        "the default")


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--batch-size", type=positive, default=8, metavar="B", help="default: 8")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace an earlier run's outputs in OUT (default: refuse a non-empty OUT)")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")




def _ap(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def _methods(text: str) -> tuple[str, ...]:
    chosen = tuple(m.strip().lower() for m in text.split(",") if m.strip())
    unknown = [m for m in chosen if m not in METHOD_CHOICES]
    if unknown or not chosen:
        raise argparse.ArgumentTypeError(f"unknown method(s) {unknown or '(none)'}; choose from {', '.join(METHOD_CHOICES)}")
    return chosen


def _sample_studies(table, limit: int | None, seed: int = 0):
    """Whole studies in a seeded random order until ``limit`` images (all rows without a limit)."""
    if not limit or len(table) <= limit:
        return table
    studies = table["study_id"].drop_duplicates().sample(frac=1.0, random_state=seed)
    order = {s: i for i, s in enumerate(studies)}
    shuffled = table.assign(_order=table["study_id"].map(order)).sort_values(["_order", "path"], kind="stable")
    return shuffled.drop(columns="_order").head(limit)


def _explain(args: argparse.Namespace) -> int:
    import sys

    from xraylens.cli import CLIError
    from xraylens.config import ExplainConfig
    from xraylens.data.problems import DataError
    from xraylens.explain.explanations import collect_inputs, explain_images, items_from_table
    from xraylens.inference.model_card import ModelCard
    from xraylens.models import CheckpointError, load_checkpoint
    from xraylens.output_dir import OutputExistsError

    if bool(args.inputs) == bool(args.data):
        raise CLIError("give image INPUTS or --data ROOT (one of the two)")
    try:
        loaded = load_checkpoint(args.checkpoint)
        missing: list[tuple[str, str]] = []
        if args.data:
            from xraylens.data.formats import open_for

            index = open_for(args.data, loaded.meta.experiment.get("data") or {}, format=args.format,
                             splits=(args.split,), progress=not args.quiet)
            items = items_from_table(_sample_studies(index.table, args.limit))
            missing = [(p.path, f"{p.kind}: {p.detail}") for p in index.problems]  # into skipped.csv too
        else:
            items, missing = collect_inputs(args.inputs)
            items = items[: args.limit] if args.limit else items
        for path, reason in missing:
            print(f"xraylens explain: skipped {path}: {reason}", file=sys.stderr)
        if not items:
            raise CLIError("no image to explain: " + ("; ".join(f"{p}: {r}" for p, r in missing) or "empty input"))
        trained = ModelCard.from_meta(loaded.meta).explain  # what the checkpoint's config asks for
        method = args.method or trained.method
        layer = args.layer if args.layer or args.method else trained.layer  # a layer belongs to its method
        cfg = ExplainConfig(method=method, target=args.target, threshold_mode=args.threshold_mode,
                            threshold=args.threshold, layer=layer)
        result = explain_images(loaded, items, args.out, cfg, batch_size=args.batch_size,
                                max_studies=args.max_studies, study_views=bool(args.data),
                                progress=not args.quiet and sys.stderr.isatty(), skipped=missing,
                                overwrite=args.overwrite)
    except (CheckpointError, DataError, ValueError, OutputExistsError) as exc:
        raise CLIError(str(exc)) from exc
    abnormal = sum(r["verdict"] == "abnormal" for r in result.rows)
    print(f"explained {len(result.rows)} images ({abnormal} abnormal) with {cfg.method}; "
          f"{len(result.skipped)} skipped" + (" (see skipped.csv)" if result.skipped else ""))
    print(f"outputs in {args.out}/ (explanations.csv, boxes.json, images/, overlays_grid.png)")
    return 0 if result.rows else 1


def _explain_eval(args: argparse.Namespace) -> int:
    import sys

    from xraylens.cli import CLIError
    from xraylens.data.problems import DataError
    from xraylens.explain.cams import methods_for
    from xraylens.explain.report import (
        DEFAULT_EVAL_METHODS,
        EvalSettings,
        ExplainEvalError,
        evaluate_explanations,
    )
    from xraylens.models import CheckpointError, load_checkpoint
    from xraylens.output_dir import OutputExistsError

    try:
        loaded = load_checkpoint(args.checkpoint)
    except CheckpointError as exc:
        raise CLIError(str(exc)) from exc
    methods = args.methods or methods_for(loaded.meta.model.name, DEFAULT_EVAL_METHODS)
    if args.layer and not args.methods:  # the classic CAM exists only at the layer that feeds the head
        methods = tuple(m for m in methods if m != "cam")
    settings = EvalSettings(methods=methods, limit=args.limit, seed=args.seed,
                            batch_size=args.batch_size, faithfulness_images=args.faithfulness_images,
                            sanity_images=args.sanity_images, sanity_steps=args.sanity_steps, layer=args.layer)
    try:
        results = evaluate_explanations(loaded, args.data, args.boxes, args.out, settings, split=args.split,
                                        progress=not args.quiet and sys.stderr.isatty(), format=args.format,
                                        overwrite=args.overwrite)
    except (CheckpointError, DataError, ExplainEvalError, OutputExistsError) as exc:
        raise CLIError(str(exc)) from exc
    print(f"{results['n_images']} abnormal images with boxes; pointing game (chance), IoU, COCO AP:")
    for method, by_kind in results["localization"].items():
        s = by_kind["all"]
        verdict = results["sanity"].get(method, {}).get("verdict", "")
        print(f"  {method:10s} {s['pointing_game']:.0%} ({s['pointing_chance']:.0%})  IoU {s['mean_iou']:.2f}  "
              f"AP50 {_ap(s['ap50'])}  AP50:95 {_ap(s['ap50_95'])}  {verdict}")
    print(f"report in {args.out}/report.md; COCO boxes in {args.out}/coco/")
    return 0
