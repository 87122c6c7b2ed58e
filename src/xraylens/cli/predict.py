"""`xraylens predict`: probabilities and verdicts for files, folders and globs (image and study level).

Only argparse is imported here; the predictor (torch or onnxruntime) loads in the handler.
"""

from __future__ import annotations

import argparse
import sys

from xraylens.cli.arguments import add_format

_EPILOG = """\
INPUTS are image files (PNG, JPEG, DICOM), folders (walked recursively) and
globs, or --data names a dataset folder (MURA, FracAtlas, GRAZPEDWRI-DX) whose
split is predicted with studies as its index defines them. The views in one
folder form one study; a study's probability is the
mean of its views' probabilities (as in the MURA paper). Files that cannot be
read are listed at the end with the reason; the rest are still predicted. The
exit status is non-zero only if nothing could be predicted.

examples:
  xraylens predict runs/demo/checkpoints/best.ckpt xray.png
  xraylens predict best.ckpt MURA-v1.1/valid/XR_WRIST/patient11185 --out preds.csv
  xraylens predict best.ckpt 'scans/**/*.dcm' --explain --out preds.json
  xraylens predict best.onnx folder/                      # after `xraylens export best.ckpt`
  xraylens predict best.ckpt folder/ --onnx best.onnx --explain   # onnxruntime + heatmaps from torch
  xraylens predict best.ckpt --data ~/datasets/GRAZPEDWRI-DX --out test_preds.csv

research software, not a medical device: never use it for clinical decisions.
"""


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "predict",
        help="normal/abnormal probabilities for images, folders (studies) and globs",
        description="Predict P(abnormal) per image and per study with a trained checkpoint.",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("checkpoint", metavar="CKPT", help="a .ckpt from `xraylens train`, or a .onnx export")
    parser.add_argument("inputs", metavar="INPUTS", nargs="*", help="image files, folders or glob patterns")
    parser.add_argument("--data", metavar="ROOT", help="predict a split of this dataset folder (MURA, FracAtlas, "
                                                       "GRAZPEDWRI-DX) instead of INPUTS; studies come from its index")
    parser.add_argument("--split", choices=("valid", "train"), default="valid", help="with --data (default: valid)")
    add_format(parser, default=None, what="the checkpoint's data.format, usually auto")
    parser.add_argument("--out", metavar="FILE", help="write the predictions to FILE (.csv or .json)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --out file (default: refuse)")
    parser.add_argument("--engine", choices=("auto", "torch", "onnx"), default=None,
                        help="inference engine (default: onnx for a .onnx file or with --onnx, else auto: the "
                             "checkpoint in torch, its probabilities computed by ONNX Runtime from an in-memory "
                             "export when at least 256 images are predicted on a CPU (307 films: 2.1x faster "
                             "end to end); torch: never)")
    parser.add_argument("--onnx", metavar="FILE", default=None,
                        help="with a .ckpt: run this ONNX export of it (heatmaps still come from the .ckpt); "
                             "a .onnx is only ever loaded when named here or as CKPT")
    parser.add_argument("--explain", action="store_true",
                        help="also compute heatmap boxes and a sentence per image (slower; needs torch)")
    parser.add_argument("--method", default=None, help="CAM method for --explain (default: the checkpoint's)")
    parser.add_argument("--batch-size", type=int, default=16, metavar="B", help="images per forward pass")
    parser.add_argument("--device", default="cpu", help="cpu or cuda[:N] (default: cpu)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from xraylens.cli import CLIError
    from xraylens.inference.inputs import collect_inputs
    from xraylens.inference.outputs import write_predictions
    from xraylens.inference.predictor import Predictor
    from xraylens.models import CheckpointError
    from xraylens.output_dir import OutputExistsError, claim_output_file

    if args.batch_size < 1:
        raise CLIError(f"--batch-size must be >= 1, got {args.batch_size}")
    if args.out and not args.out.lower().endswith((".csv", ".json")):
        raise CLIError(f"--out must end in .csv or .json, got {args.out}")
    if args.out:
        try:
            claim_output_file(args.out, overwrite=args.overwrite, what="set of predictions")
        except OutputExistsError as exc:
            raise CLIError(str(exc)) from exc
    try:
        predictor = Predictor.from_checkpoint(args.checkpoint, engine=args.engine, device=args.device,
                                              method=args.method, onnx=args.onnx)
    except (CheckpointError, FileNotFoundError, ImportError, ValueError) as exc:
        raise CLIError(str(exc)) from exc
    if args.explain and not predictor.can_explain:
        raise CLIError("--explain needs the torch checkpoint for heatmaps (ONNX Runtime has no gradients): "
                       "pass the .ckpt with --onnx FILE instead of the .onnx alone")
    if bool(args.inputs) == bool(args.data):
        raise CLIError("give image INPUTS or --data ROOT (one of the two)")
    if args.data:
        result = predictor.predict_index(_index_table(args, predictor), batch_size=args.batch_size,
                                         explain=args.explain, progress=not args.no_progress)
    else:
        paths, missing = collect_inputs(args.inputs)
        result = predictor.predict_many(paths, batch_size=args.batch_size, explain=args.explain,
                                        progress=not args.no_progress)
        result.failures[:0] = missing
    print(format_table(result, explain=args.explain))
    if args.out:
        written = write_predictions(result, args.out)
        print(f"\nwrote {written}")
    if result.failures:
        print(f"\n{len(result.failures)} input(s) could not be predicted:", file=sys.stderr)
        for failure in result.failures:
            print(f"  {failure.path}: {failure.reason}", file=sys.stderr)
    if not result.images:
        print("nothing could be predicted", file=sys.stderr)
        return 1
    return 0


def _index_table(args: argparse.Namespace, predictor):  # -> pd.DataFrame (typed lazily)
    """The --data split's index, read with the checkpoint's data settings (format, test split)."""
    from xraylens.cli import CLIError
    from xraylens.data.formats import open_for

    try:
        return open_for(args.data, predictor.card.data, format=args.format, splits=(args.split,),
                        progress=not args.no_progress).table
    except ValueError as exc:  # DataError names the folder and the fix
        raise CLIError(str(exc)) from exc


def format_table(result, *, explain: bool = False) -> str:  # noqa: ANN001 - inference.Predictions
    """Plain-text tables: images, then studies (only when a study has more than one view or several exist)."""
    lines = []
    if result.images:
        width = min(max(len(p.source) for p in result.images), 80)
        lines.append(f"{'image':<{width}}  {'P(abnormal)':>11}  verdict")
        for p in result.images:
            lines.append(f"{_clip(p.source, width):<{width}}  {p.probability:>11.3f}  {p.verdict}")
            if explain and p.explanation:
                lines.append(f"{'':<{width}}  {p.explanation}")
    if result.studies:
        width = min(max(len(s.study) for s in result.studies), 80)
        lines.append("")
        lines.append(f"{'study':<{width}}  {'views':>5}  {'P(abnormal)':>11}  verdict")
        for s in result.studies:
            lines.append(f"{_clip(s.study, width):<{width}}  {s.n_images:>5}  {s.probability:>11.3f}  {s.verdict}")
    return "\n".join(lines)


def _clip(text: str, width: int) -> str:
    return text if len(text) <= width else "..." + text[-(width - 3):]
