"""Pre-resized cache: every image of a MURA tree letterboxed once into one memory-mapped uint8 array.

Why: decoding a 2,000-pixel PNG and shrinking it costs far more than the
network's forward pass at 128-320 px, and it is repeated every epoch. The
cache stores the finished (S, S) squares, so an epoch reads a few kilobytes
per image from the page cache instead.

Layout (``ROOT/.xraylens_cache/size{S}/`` by default)::

    squares.npy   (N, S, S) uint8, memory-mapped; row i is the letterboxed image of index.csv row i
    index.csv     path (MURA-relative, as in the index table), ok (0 = unreadable when the cache was built)
    meta.json     size, count, format version

The folder is built under a temporary name and renamed into place, so a
half-built cache never looks complete. Squares are the on-the-fly letterbox
rounded to 8 bits (at most half a grey level apart, the precision of MURA's
8-bit PNGs anyway).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from collections.abc import Iterable
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd

from xraylens.data.images import ImageReadError, read_image
from xraylens.data.preprocess import letterbox

log = logging.getLogger(__name__)

CACHE_DIR = ".xraylens_cache"
CACHE_FORMAT_VERSION = 1
SQUARES_FILE = "squares.npy"
INDEX_FILE = "index.csv"
META_FILE = "meta.json"
_CHUNK = 64  # images per worker task: large enough to amortise pickling, small enough for a live progress bar


class CacheError(ValueError):
    """A cache folder that is missing, incomplete, or built for another image size."""


def default_cache_dir(root: str | Path, size: int) -> Path:
    """``ROOT/.xraylens_cache/size{S}``: ROOT contains ``MURA-v1.1``, or is the FracAtlas / GRAZPEDWRI-DX folder."""
    from xraylens.data.formats import detect_format
    from xraylens.data.mura_layout import MURA_DIR, resolve_root

    given = Path(root).expanduser().absolute()
    if given.name == MURA_DIR or (given / MURA_DIR).is_dir():
        return resolve_root(given) / CACHE_DIR / f"size{size}"
    return detect_format(given)[1] / CACHE_DIR / f"size{size}"


def square_uint8(file: str | Path, size: int) -> np.ndarray | None:
    """The (S, S) uint8 letterboxed square of one image, or ``None`` when it cannot be read."""
    try:
        image = read_image(file)
    except ImageReadError as exc:
        log.warning("cache: skipping unreadable image: %s", exc)
        return None
    square, _ = letterbox(image, size)  # float32 in [0, 1]
    return np.rint(square * 255.0).clip(0, 255).astype(np.uint8)


def _squares(files: list[str], size: int) -> list[np.ndarray | None]:
    return [square_uint8(f, size) for f in files]


def build_cache(
    root: str | Path,
    size: int,
    *,
    out: str | Path | None = None,
    workers: int = 2,
    progress: bool = True,
    format: str = "auto",
) -> Path:
    """Letterbox every image of the dataset at ``root`` (all splits) into a cache; returns its folder.

    ``format``: the dataset's layout (:mod:`xraylens.data.formats`), detected by default.

    An existing cache at the destination is replaced only once the new one is
    complete. Unreadable images are kept as black rows with ``ok=0`` so the
    cache covers the whole index and training drops them like the on-the-fly path.
    """
    from tqdm.auto import tqdm

    from xraylens.data.formats import open_dataset

    if size < 8:
        raise ValueError(f"cache size must be at least 8 pixels, got {size}")
    index = open_dataset(root, format=format, progress=progress)
    table = index.table
    if table.empty:
        raise CacheError(f"{index.root}: no images found to cache")
    dest = Path(out) if out is not None else default_cache_dir(index.root, size)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", suffix=".tmp", dir=dest.parent))
    try:
        files = table["file"].astype(str).tolist()
        squares = np.lib.format.open_memmap(tmp / SQUARES_FILE, mode="w+", dtype=np.uint8,
                                            shape=(len(files), size, size))
        ok = np.zeros(len(files), dtype=bool)
        chunks = [files[i : i + _CHUNK] for i in range(0, len(files), _CHUNK)]
        bar = tqdm(total=len(files), desc=f"caching {size}px squares", unit="img", disable=not progress)
        for start, results in zip(range(0, len(files), _CHUNK), _map_chunks(chunks, size, workers), strict=True):
            for offset, square in enumerate(results):
                if square is not None:
                    squares[start + offset] = square
                    ok[start + offset] = True
            bar.update(len(results))
        bar.close()
        squares.flush()
        del squares
        pd.DataFrame({"path": table["path"].astype(str), "ok": ok.astype(int)}).to_csv(tmp / INDEX_FILE, index=False)
        meta = {"format_version": CACHE_FORMAT_VERSION, "size": size, "count": len(files),
                "unreadable": int((~ok).sum()), "root": str(index.root)}
        (tmp / META_FILE).write_text(json.dumps(meta, indent=2) + "\n")
        _swap_into_place(tmp, dest)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    log.info("cache: %d squares of %d px in %s (%d unreadable)", len(files), size, dest, int((~ok).sum()))
    return dest


def _map_chunks(chunks: list[list[str]], size: int, workers: int) -> Iterable[list[np.ndarray | None]]:
    if workers <= 1 or len(chunks) <= 1:
        return (_squares(chunk, size) for chunk in chunks)
    pool = ProcessPoolExecutor(max_workers=workers)
    return _drain(pool, pool.map(_squares, chunks, [size] * len(chunks)))


def _drain(pool: ProcessPoolExecutor, results: Iterable[list[np.ndarray | None]]) -> Iterable[list[np.ndarray | None]]:
    with pool:
        yield from results


def _swap_into_place(tmp: Path, dest: Path) -> None:
    """Rename the finished folder over ``dest``; an older cache is moved aside first, then deleted."""
    old = None
    if dest.exists():
        old = dest.with_name(f".{dest.name}.old-{os.getpid()}")
        os.replace(dest, old)
    os.replace(tmp, dest)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


# ---------------------------------------------------------------- reading


class SquareCache:
    """A built cache: the memory-mapped squares and a lookup from MURA-relative path to row."""

    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder)
        missing = [n for n in (SQUARES_FILE, INDEX_FILE, META_FILE) if not (self.folder / n).is_file()]
        if missing:
            raise CacheError(f"{self.folder}: not a complete xraylens cache (missing {', '.join(missing)}); "
                             "rebuild it with `xraylens data cache ROOT --size S`")
        self.meta = json.loads((self.folder / META_FILE).read_text())
        if self.meta.get("format_version", 0) > CACHE_FORMAT_VERSION:
            raise CacheError(f"{self.folder}: written by a newer xraylens; rebuild it or upgrade")
        self.size = int(self.meta["size"])
        index = pd.read_csv(self.folder / INDEX_FILE, dtype={"path": str, "ok": int})
        self.rows: dict[str, int] = {p: i for i, p in enumerate(index["path"])}
        self.ok = index["ok"].to_numpy().astype(bool)
        try:  # allow_pickle stays False: an object array (a pickle payload) is refused, never unpickled
            self.squares = np.load(self.folder / SQUARES_FILE, mmap_mode="r")  # (N, S, S) uint8
        except (ValueError, OSError) as exc:
            raise CacheError(f"{self.folder / SQUARES_FILE}: not a cache array ({exc}); rebuild the cache with "
                             "`xraylens data cache ROOT --size S`") from exc
        if self.squares.dtype != np.uint8:
            raise CacheError(f"{self.folder / SQUARES_FILE}: holds {self.squares.dtype}, not uint8 squares; "
                             "rebuild the cache with `xraylens data cache ROOT --size S`")
        if self.squares.shape != (len(index), self.size, self.size):
            raise CacheError(f"{self.folder}: squares {self.squares.shape} do not match index.csv "
                             f"({len(index)} rows of {self.size} px); rebuild the cache")

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, path: str) -> np.ndarray | None:
        """The (S, S) uint8 square of a MURA-relative path; ``None`` if it was unreadable at build time."""
        row = self.rows[path]
        return np.array(self.squares[row]) if self.ok[row] else None

    def missing(self, paths: Iterable[str]) -> list[str]:
        return [p for p in paths if p not in self.rows]

    def source_for(self, paths: Iterable[str]) -> CacheSource:
        """A ``RadiographDataset(square_source=...)`` callable for a table whose ``path`` column is ``paths``."""
        paths = list(paths)
        absent = self.missing(paths)
        if absent:
            raise CacheError(f"{self.folder}: {len(absent)} image(s) are not in the cache (first: {absent[0]}); "
                             "rebuild it with `xraylens data cache ROOT --size S`")
        return CacheSource(self.folder / SQUARES_FILE, np.array([self.rows[p] for p in paths], dtype=np.int64),
                           self.ok)


class CacheSource:
    """Dataset position -> (S, S) uint8 square, or ``None`` for an unreadable image.

    Pickles as the file name and row numbers (never the array), so DataLoader
    workers each map the file themselves instead of receiving a copy.
    """

    def __init__(self, squares_file: Path, rows: np.ndarray, ok: np.ndarray) -> None:
        self.squares_file = squares_file
        self.rows = rows
        self.ok = ok
        self._squares: np.ndarray | None = None

    def __call__(self, i: int) -> np.ndarray | None:
        row = int(self.rows[i])
        if not self.ok[row]:
            return None
        if self._squares is None:
            self._squares = np.load(self.squares_file, mmap_mode="r")
        return np.array(self._squares[row])

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_squares": None}


def open_cache(root: str | Path, size: int) -> SquareCache:
    """The cache of ``root`` built for ``size`` px; raises :class:`CacheError` when there is none."""
    folder = default_cache_dir(root, size)
    if not folder.is_dir():
        raise CacheError(f"no {size}px cache at {folder}; build it with `xraylens data cache {root} --size {size}`")
    return open_cache_folder(folder, size)


def open_cache_folder(folder: str | Path, size: int | None = None) -> SquareCache:
    cache = SquareCache(folder)
    if size is not None and cache.size != size:
        raise CacheError(f"{folder}: cache holds {cache.size}px squares but {size}px were asked for; "
                         f"build one with `xraylens data cache ROOT --size {size}`")
    return cache


def find_cache(setting: str, root: str | Path, size: int) -> SquareCache | None:
    """Resolve ``data.cache``: ``off`` -> None, ``auto`` -> the default cache if present, else a folder path."""
    if setting == "off":
        return None
    if setting == "auto":
        folder = default_cache_dir(root, size)
        return open_cache_folder(folder, size) if folder.is_dir() else None
    return open_cache_folder(setting, size)

