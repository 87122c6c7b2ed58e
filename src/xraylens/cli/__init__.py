"""The ``xraylens`` command line: parses arguments, configures logging, calls the library.

One module per subcommand group keeps each parser next to the few lines that
call the library. Parser modules import only ``argparse`` at the top so that
``xraylens --help`` answers instantly; torch and friends load inside handlers.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

from xraylens._version import __version__

# Order here is the order in ``xraylens --help``.
_COMMAND_MODULES = (
    "demo",
    "data",
    "train",
    "evaluate",
    "explain",
    "predict",
    "export",
    "serve",
)

_EPILOG = """\
typical session:
  xraylens demo --out xraylens_demo            # synth data -> train -> evaluate -> explain, on CPU
  xraylens data synth data/synth --patients 200 --difficulty easy
  xraylens data summary data/synth
  xraylens train --data data/synth --out runs/demo --config demo_cpu
  xraylens evaluate runs/demo/checkpoints/best.ckpt --data data/synth --out runs/demo/eval
  xraylens explain runs/demo/checkpoints/best.ckpt some_xray.png --out heatmaps/

research software, not a medical device: never use it for clinical decisions.
"""


class CLIError(Exception):
    """An error the user can fix; printed as one line, exit status 2."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="xraylens",
        description=("Read musculoskeletal radiographs (MURA v1.1; FracAtlas and GRAZPEDWRI-DX with their boxes): "
                     "normal or abnormal, and why."),
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"xraylens {__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="debug log output")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in _COMMAND_MODULES:
        module = importlib.import_module(f"xraylens.cli.{name}")
        module.register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "handler", None):
        parser.print_help()
        return 2
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO, format="%(levelname)s %(name)s: %(message)s"
    )
    # Lightning installs its own console handler; without this every line of it prints twice.
    for name in ("lightning.pytorch", "lightning.fabric"):
        logging.getLogger(name).propagate = False
    from xraylens.atomic import AtomicWriteError  # stdlib only: keeps --help instant

    try:
        result = args.handler(args)
    except CLIError as exc:
        print(f"xraylens {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except AtomicWriteError as exc:  # a full disk mid-run: one line naming the file, not a traceback
        print(f"xraylens {args.command}: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    return int(result or 0)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
