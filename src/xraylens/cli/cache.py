"""`xraylens data cache`: letterbox every image once into a memory-mapped cache that training reads.

Only argparse is imported here; numpy, the index and the image reader load inside the handler.
Wired into ``xraylens data`` by :mod:`xraylens.cli.data` through :func:`add_cache_parser`.
"""

from __future__ import annotations

import argparse

from xraylens.cli.arguments import add_format, positive

_EPILOG = """\
Decoding and shrinking full-size radiographs every epoch costs more than the
network at 128-320 px. The cache stores each image's letterboxed S x S square
(8-bit) in one memory-mapped file under ROOT/.xraylens_cache/sizeS/ (about
S*S bytes per image: 37k MURA training+valid images at 320 px take ~3.8 GB).

`xraylens train` uses the cache automatically when one exists for its
data.image_size (data.cache: auto); data.cache=off ignores it, and
data.cache=PATH names a cache folder elsewhere (see --out). Rebuild after
adding or replacing images: training ignores a cache that lacks any image.

examples:
  xraylens data cache data/synth --size 128
  xraylens data cache ~/MURA-v1.1 --size 320 --workers 8
  xraylens data cache /readonly/MURA-v1.1 --size 224 --out /scratch/mura224
  xraylens train --data /readonly/MURA-v1.1 --out runs/m2 --config mura_mobilenetv2 \\
      --set data.cache=/scratch/mura224
"""


def add_cache_parser(data_subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = data_subparsers.add_parser(
        "cache",
        help="pre-resize every image once for faster training epochs",
        description="Letterbox every image of a dataset folder to SIZE x SIZE into a memory-mapped cache.",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("root", metavar="ROOT", help="the MURA-v1.1 folder or its parent, or a FracAtlas / "
                                                     "GRAZPEDWRI-DX folder")
    add_format(parser)
    parser.add_argument("--size", type=positive, required=True, metavar="S",
                        help="square side in pixels; must equal the training config's data.image_size")
    parser.add_argument("--out", metavar="DIR", help="cache folder (default: ROOT/.xraylens_cache/sizeS)")
    parser.add_argument("--workers", type=positive, default=2, metavar="W",
                        help="decoding processes (default: 2)")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    parser.set_defaults(handler=_cache)
    return parser


def _cache(args: argparse.Namespace) -> int:
    from xraylens.cli import CLIError
    from xraylens.data.cache import CacheError, build_cache, open_cache_folder
    from xraylens.data.problems import DataError

    try:
        folder = build_cache(args.root, args.size, out=args.out, workers=args.workers, progress=not args.quiet,
                             format=args.format)
        cache = open_cache_folder(folder, args.size)
    except (CacheError, DataError, ValueError) as exc:
        raise CLIError(str(exc)) from exc
    unreadable = int((~cache.ok).sum())
    print(f"cache: {len(cache)} images at {args.size} px in {folder}"
          + (f" ({unreadable} unreadable, skipped in training)" if unreadable else ""))
    if args.out:
        print(f"use it with: xraylens train ... --set data.cache={folder}")
    else:
        print(f"`xraylens train` picks it up for data.image_size={args.size} (data.cache: auto)")
    return 0

