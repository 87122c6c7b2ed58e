"""`xraylens export`: a checkpoint to one ONNX file, checked against torch.

Only argparse is imported here; torch and onnx load in the handler.
"""

from __future__ import annotations

import argparse

_EPILOG = """\
Writes one self-contained .onnx file (weights embedded) with a dynamic batch
axis. Input 'image': (B, C, S, S) float32, already letterboxed and normalised;
outputs 'logit' and 'probability' (calibrated with the checkpoint's
temperature), both (B, 1). Preprocessing, class names, threshold, temperature,
architecture and version are stored as JSON in the model's metadata_props.

After export, ONNX Runtime and torch are compared on random and synthetic
radiograph inputs (plus --images); the exit status is 1 if the largest
absolute difference in probability is above --tolerance.

examples:
  xraylens export runs/demo/checkpoints/best.ckpt            # -> runs/demo/checkpoints/best.onnx
  xraylens export best.ckpt --out model.onnx --images xray1.png xray2.dcm
  xraylens predict best.ckpt folder/ --onnx best.onnx        # onnxruntime, heatmaps from best.ckpt
"""


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "export",
        help="export a checkpoint to ONNX (single file) and check parity with torch",
        description="Export a checkpoint to ONNX and compare ONNX Runtime with torch.",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("checkpoint", metavar="CKPT", help="a .ckpt written by `xraylens train`")
    parser.add_argument("--out", metavar="FILE", help="output .onnx (default: CKPT with .onnx suffix)")
    parser.add_argument("--opset", type=int, default=None, help="ONNX opset (default: the exporter's)")
    parser.add_argument("--tolerance", type=float, default=1e-4,
                        help="largest allowed |P_onnx - P_torch| (default: 1e-4)")
    parser.add_argument("--images", nargs="+", default=[], metavar="IMG",
                        help="real images to include in the parity check")
    parser.add_argument("--no-check", action="store_true", help="skip the ONNX Runtime parity check")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing output file (default: refuse)")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from xraylens.cli import CLIError
    from xraylens.data.images import ImageReadError
    from xraylens.export import export_onnx
    from xraylens.models import CheckpointError
    from xraylens.output_dir import OutputExistsError

    if args.out and not args.out.endswith(".onnx"):
        raise CLIError(f"--out must end in .onnx, got {args.out}")
    try:
        result = export_onnx(args.checkpoint, args.out, opset=args.opset, check=not args.no_check,
                             tolerance=args.tolerance, images=args.images, overwrite=args.overwrite)
    except (CheckpointError, ImageReadError, ImportError, OutputExistsError) as exc:
        raise CLIError(str(exc)) from exc
    print(f"wrote {result.path} ({result.path.stat().st_size / 2**20:.1f} MB, weights embedded)")
    if result.n_checked == 0:
        print("parity check skipped (--no-check)")
        return 0
    verdict = "OK" if result.passed else "FAILED"
    print(f"parity vs torch on {result.n_checked} inputs: max |dP| = {result.max_abs_diff:.3g}, "
          f"max |dlogit| = {result.max_abs_diff_logit:.3g} (tolerance {result.tolerance:g}): {verdict}")
    return 0 if result.passed else 1
