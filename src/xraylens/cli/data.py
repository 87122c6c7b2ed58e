"""`xraylens data`: look at a dataset (`summary`), pre-resize it (`cache`) or write the synthetic one (`synth`).

Only argparse is imported here; pandas, PIL and the generator load inside the
handlers so that ``xraylens --help`` stays instant.
"""

from __future__ import annotations

import argparse

from xraylens.cli.arguments import add_format, finding_kinds, positive

_DATA_EPILOG = """\
examples:
  xraylens data synth data/synth --patients 200      # a small MURA-layout dataset to try things on
  xraylens data summary data/synth                   # counts per split and body part, sizes, problems
  xraylens data summary ~/datasets/MURA-v1.1 --verify --strict
"""

_SUMMARY_EPILOG = """\
ROOT is the MURA-v1.1 folder or the folder that contains it. The official CSVs
are used when present (labels come from *_labeled_studies.csv); otherwise the
folders are walked and labels come from the study folder names. ROOT may also
be a FracAtlas or GRAZPEDWRI-DX folder as released (the one holding
dataset.csv, or its parent): the format is detected, or give --format; their
boxes are counted too. Their test split 'valid' is drawn by patient with the
default data.test_fraction (README, "Real datasets with boxes").

Files that cannot be used (macOS ._* files, empty or truncated images, files
missing from or absent in the CSVs) are skipped and listed under "problems".

examples:
  xraylens data summary data/synth
  xraylens data summary ~/MURA-v1.1 --body-part wrist hand
  xraylens data summary ~/MURA-v1.1 --json > mura_summary.json
  xraylens data summary ~/MURA-v1.1 --verify --strict   # decode everything; fail on any problem
  xraylens data summary ~/datasets/FracAtlas --verify    # finds the truncated JPEGs of the release
"""

_SYNTH_EPILOG = """\
Writes OUT/MURA-v1.1/{train,valid}/XR_<PART>/patient*/study*_{positive,negative}/image*.png
with the official CSVs, plus ground-truth boxes of the drawn abnormalities, so
that every other command can be tried without the real download. With
--layout fracatlas or grazpedwri the same radiographs are written as those
datasets are released (OUT/FracAtlas/, OUT/GRAZPEDWRI-DX/), boxes included.

examples:
  xraylens data synth data/synth
  xraylens data synth data/synth_big --patients 2000 --max-side 320 --workers 2 --seed 1
  xraylens data synth data/synth_easy --patients 300 --max-side 256 --difficulty easy
  xraylens data synth data/synth_hw --patients 300 --max-side 256 --findings hardware  # the demo's data
  xraylens data synth data/synth_fa --layout fracatlas --findings fracture   # as FracAtlas is released
  xraylens data synth data/synth_gz --layout grazpedwri                      # as GRAZPEDWRI-DX is released
"""


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "data",
        help="summarise a dataset folder (MURA, FracAtlas, GRAZPEDWRI-DX) or write the synthetic dataset",
        description="Inspect a dataset (MURA v1.1, FracAtlas, GRAZPEDWRI-DX), or write the built-in synthetic one.",
        epilog=_DATA_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.set_defaults(handler=lambda args: _print_help(parser))
    commands = parser.add_subparsers(dest="data_command", metavar="SUBCOMMAND")
    _register_summary(commands)
    _register_synth(commands)
    from xraylens.cli.cache import add_cache_parser

    add_cache_parser(commands)


def _register_summary(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "summary",
        help="counts, image sizes, boxes and problems of a dataset folder",
        description="Index a dataset folder and print what is in it and what had to be skipped.",
        epilog=_SUMMARY_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("root", metavar="ROOT", help="the MURA-v1.1 folder or its parent, or a FracAtlas / "
                                                     "GRAZPEDWRI-DX folder")
    add_format(parser)
    parser.add_argument("--json", action="store_true", help="print the summary as JSON (for scripts)")
    parser.add_argument(
        "--strict", action="store_true", help="exit with an error if any file had to be skipped"
    )
    parser.add_argument(
        "--verify", action="store_true", help="fully decode every image to find truncated files (slow)"
    )
    parser.add_argument(
        "--body-part",
        metavar="P",
        nargs="+",
        action="extend",
        help="only these body parts: wrist, XR_WRIST, ... (default: all)",
    )
    parser.add_argument(
        "--split",
        choices=("train", "valid"),
        nargs="+",
        action="extend",
        help="only these official splits (default: both)",
    )
    parser.add_argument(
        "--no-sizes", action="store_true", help="skip reading image headers for size statistics"
    )
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    parser.set_defaults(handler=_summary)


def _register_synth(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "synth",
        help="write the synthetic MURA-layout dataset",
        description="Write a synthetic dataset in the MURA v1.1 layout (images, CSVs, ground-truth boxes).",
        epilog=_SYNTH_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("out", metavar="OUT", help="folder to write; MURA-v1.1/ is created inside it")
    parser.add_argument(
        "--patients", type=positive, default=200, help="number of patients (default: 200)"
    )
    parser.add_argument(
        "--max-side", type=positive, default=512, metavar="PX", help="longest image side (default: 512)"
    )
    parser.add_argument("--seed", type=int, default=0, help="random seed; same seed, same files (default: 0)")
    parser.add_argument(
        "--workers", type=positive, default=1, help="processes to draw with (default: 1)"
    )
    parser.add_argument(
        "--difficulty",
        choices=("realistic", "easy"),
        default="realistic",
        help="how visible the findings are. realistic (default): as subtle as real findings "
        "(hairline fractures, small lesions, some views miss the finding); the demo recipe reaches "
        "study AUROC about 0.90 on 1000 patients of it; on 3000, 0.93 from image labels alone and 0.95 "
        "with boxes on a quarter of the training images (README). easy: obvious "
        "findings (wide displaced fractures, larger lesions, every view shows the finding); "
        "everything else is identical",
    )
    parser.add_argument(
        "--findings",
        type=finding_kinds,
        default=("fracture", "hardware", "lesion"),
        metavar="KINDS",
        help="comma-separated kinds drawn in abnormal studies: fracture, hardware, lesion "
        "(default: all three). hardware alone is what a from-scratch CPU model learns in minutes",
    )
    parser.add_argument(
        "--layout",
        choices=("mura", "fracatlas", "grazpedwri"),
        default="mura",
        help="folder layout to write: mura (default, OUT/MURA-v1.1), fracatlas (OUT/FracAtlas as FracAtlas is "
        "released: JPEGs, dataset.csv, COCO JSON and YOLO boxes) or grazpedwri (OUT/GRAZPEDWRI-DX: 16-bit PNGs, "
        "dataset.csv, YOLO boxes); the same radiographs in each",
    )
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.set_defaults(handler=_synth)



def _print_help(parser: argparse.ArgumentParser) -> int:
    parser.print_help()
    return 2


# ---------------------------------------------------------------- handlers


def _summary(args: argparse.Namespace) -> int:
    import json
    import sys

    from xraylens.cli import CLIError
    from xraylens.data.formats import open_dataset
    from xraylens.data.summary import format_summary, summarize

    progress = not args.quiet and sys.stderr.isatty()
    try:
        index = open_dataset(
            args.root,
            format=args.format,
            splits=args.split or ("train", "valid"),
            body_parts=args.body_part or None,
            verify=args.verify,
            strict=args.strict,
            progress=progress,
        )
        summary = summarize(index, sizes=not args.no_sizes, progress=progress)
    except ValueError as exc:  # DataError and ImageReadError: the message names the file and the fix
        raise CLIError(str(exc)) from exc
    print(json.dumps(summary, indent=2) if args.json else format_summary(summary))
    return 0


def _synth(args: argparse.Namespace) -> int:
    from xraylens.cli import CLIError
    from xraylens.data.synthetic.layouts import generate_layout

    try:
        folder, manifest = generate_layout(
            args.out,
            args.layout,
            patients=args.patients,
            max_side=args.max_side,
            seed=args.seed,
            workers=args.workers,
            progress=not args.quiet,
            difficulty=args.difficulty,
            findings=args.findings,
        )
    except (ValueError, OSError) as exc:
        raise CLIError(str(exc)) from exc
    facts = ", ".join(
        f"{key} {value}"
        for key, value in manifest.items()
        if isinstance(value, int | float | str) and not isinstance(value, bool)
    )
    name = {"mura": "MURA v1.1", "fracatlas": "FracAtlas", "grazpedwri": "GRAZPEDWRI-DX"}[args.layout]
    print(f"wrote synthetic {name} dataset to {folder}" + (f" ({facts})" if facts else ""))
    print(f"next: xraylens data summary {folder}")
    return 0
