"""Pre-resized cache: same squares as the on-the-fly letterbox, atomic build, unreadable images kept as ok=0."""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from xraylens.data.cache import CacheError, build_cache, default_cache_dir, find_cache, open_cache
from xraylens.data.dataset import RadiographDataset
from xraylens.data.images import read_image
from xraylens.data.mura import index_dataset
from xraylens.data.preprocess import Preprocessing, letterbox

SIZE = 24


def _table(root: Path) -> pd.DataFrame:
    return index_dataset(root, progress=False).table


def test_cache_squares_equal_the_on_the_fly_letterbox(tiny_mura) -> None:
    folder = build_cache(tiny_mura.root, SIZE, workers=1, progress=False)
    assert folder == default_cache_dir(tiny_mura.root, SIZE) == tiny_mura.root / ".xraylens_cache" / f"size{SIZE}"
    cache = open_cache(tiny_mura.root, SIZE)
    table = _table(tiny_mura.root)
    assert len(cache) == len(table) == len(tiny_mura.images)  # both splits
    for row in table.itertuples():
        square = cache[row.path]
        expected, _ = letterbox(read_image(row.file), SIZE)  # float32 in [0, 1]
        assert square.dtype == np.uint8 and square.shape == (SIZE, SIZE)
        # The cache is the letterbox rounded to 8 bits: at most half a grey level away.
        assert np.abs(square / 255.0 - expected).max() <= 0.5 / 255 + 1e-6
        np.testing.assert_array_equal(square, np.rint(expected * 255).astype(np.uint8))


def test_dataset_reads_the_same_images_from_the_cache(tiny_mura) -> None:
    build_cache(tiny_mura.root, SIZE, workers=1, progress=False)
    table = _table(tiny_mura.root)
    prep = Preprocessing.for_channels(SIZE, 1)
    cached = RadiographDataset(table, prep, square_source=open_cache(tiny_mura.root, SIZE).source_for(table["path"]))
    direct = RadiographDataset(table, prep)
    for i in range(len(table)):
        a, b = cached[i], direct[i]
        assert a["ok"] and b["ok"] and a["label"] == b["label"]
        assert (a["image"] - b["image"]).abs().max() <= 0.5 / 255 / prep.std[0] + 1e-5


def test_unreadable_image_is_recorded_and_dropped_from_samples(tiny_mura) -> None:
    broken = tiny_mura.images[0]["path"]
    data = (tiny_mura.root / broken).read_bytes()
    tiny_mura.write(broken, data[: len(data) // 2])  # PNG magic intact, pixels truncated
    folder = build_cache(tiny_mura.root, SIZE, workers=1, progress=False)
    cache = open_cache(tiny_mura.root, SIZE)
    assert cache[broken] is None and int((~cache.ok).sum()) == 1
    assert pd.read_csv(folder / "index.csv").set_index("path").loc[broken, "ok"] == 0
    table = _table(tiny_mura.root)
    dataset = RadiographDataset(table, Preprocessing.for_channels(SIZE, 1), square_source=cache.source_for(table["path"]))
    oks = [dataset[i]["ok"] for i in range(len(table))]
    assert oks.count(False) == 1 and not oks[table.index[table["path"] == broken][0]]


def test_rebuild_replaces_in_place_and_leaves_no_temporary_folders(tiny_mura) -> None:
    first = build_cache(tiny_mura.root, SIZE, workers=1, progress=False)
    before = np.load(first / "squares.npy").copy()
    second = build_cache(tiny_mura.root, SIZE, workers=2, progress=False)  # the process-pool path
    assert first == second
    np.testing.assert_array_equal(np.load(second / "squares.npy"), before)
    leftovers = sorted(p.name for p in (tiny_mura.root / ".xraylens_cache").iterdir())
    assert leftovers == [f"size{SIZE}"]


def test_cache_settings_auto_off_and_path(tiny_mura, tmp_path: Path) -> None:
    assert find_cache("auto", tiny_mura.root, SIZE) is None  # none built yet: decode on the fly
    elsewhere = build_cache(tiny_mura.root, SIZE, out=tmp_path / "c24", workers=1, progress=False)
    assert find_cache("auto", tiny_mura.root, SIZE) is None  # built elsewhere, not the default place
    assert find_cache(str(elsewhere), tiny_mura.root, SIZE).size == SIZE
    with pytest.raises(CacheError, match="32px"):
        find_cache(str(elsewhere), tiny_mura.root, 32)
    build_cache(tiny_mura.root, SIZE, workers=1, progress=False)
    assert find_cache("auto", tiny_mura.root, SIZE) is not None
    assert find_cache("off", tiny_mura.root, SIZE) is None
    with pytest.raises(CacheError, match="xraylens data cache"):
        open_cache(tiny_mura.root, 40)


def test_source_for_refuses_images_missing_from_the_cache(tiny_mura) -> None:
    build_cache(tiny_mura.root, SIZE, workers=1, progress=False)
    cache = open_cache(tiny_mura.root, SIZE)
    with pytest.raises(CacheError, match="not in the cache"):
        cache.source_for(["MURA-v1.1/train/XR_WRIST/patient99999/study1_positive/image1.png"])


def test_cli_cache_command(tiny_mura, capsys) -> None:
    from xraylens.cli.cache import add_cache_parser

    parser = argparse.ArgumentParser()
    add_cache_parser(parser.add_subparsers())
    args = parser.parse_args(["cache", str(tiny_mura.root), "--size", str(SIZE), "--workers", "1", "--quiet"])
    assert args.handler(args) == 0
    assert "picks it up" in capsys.readouterr().out
    assert open_cache(tiny_mura.root, SIZE).size == SIZE
