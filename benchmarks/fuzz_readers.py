"""Fuzz the image, DICOM and CSV readers: no input may raise anything but our own clear errors.

Not part of CI (it runs for as long as it is told). Each target gets
``--seconds``: hypothesis draws inputs (mutations of valid seed files: byte
flips, truncations, insertions; and raw random bytes or text), the reader
runs on them, and any exception other than the reader's documented one
(:class:`~xraylens.data.images.ImageReadError` for images and DICOM,
:class:`~xraylens.data.problems.DataError` for CSVs and the index) is a
finding: its type, message, the first line of our code it passed through, and
the input (saved under ``--out``) are printed, and the exit status is 1.
Whatever it finds gets fixed and kept as a test in tests/test_fuzz_regressions.py.

    pip install hypothesis   # in the dev extra
    python benchmarks/fuzz_readers.py --seconds 60               # every target, 60 s each
    python benchmarks/fuzz_readers.py --targets dicom --seconds 600
"""

from __future__ import annotations

import argparse
import io
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path

import numpy as np

MAX_PIXELS = 4_000_000  # keeps a mutated header from making every example a 200 MB decode; same code path


# ---------------------------------------------------------------- seed files


def _png(array: np.ndarray, mode: str | None = None) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(array, mode).save(buffer, "PNG")
    return buffer.getvalue()


def image_seeds() -> list[bytes]:
    from PIL import Image

    rng = np.random.default_rng(0)
    gray = rng.integers(0, 255, (24, 18), dtype=np.uint8)
    jpeg = io.BytesIO()
    Image.fromarray(gray).save(jpeg, "JPEG", quality=80)
    palette = io.BytesIO()
    Image.fromarray(gray).convert("P", palette=Image.Palette.ADAPTIVE, colors=8).save(palette, "PNG")
    rgba = np.dstack([gray, gray, gray, gray])
    return [_png(gray), _png(gray.astype(np.uint16) * 257), _png(rgba, "RGBA"), palette.getvalue(), jpeg.getvalue()]


def dicom_seeds() -> list[bytes]:
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian, RLELossless, generate_uid

    out = []
    stored = (np.arange(24 * 18).reshape(24, 18) * 9 % 4096).astype(np.uint16)
    for photometric, syntax, window, rle in (("MONOCHROME2", ExplicitVRLittleEndian, (2000, 4000), False),
                                             ("MONOCHROME1", ImplicitVRLittleEndian, None, False),
                                             ("MONOCHROME2", ExplicitVRLittleEndian, None, True)):
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.1.1"
        meta.MediaStorageSOPInstanceUID = generate_uid()
        meta.TransferSyntaxUID = syntax
        ds = FileDataset("seed.dcm", {}, file_meta=meta, preamble=b"\0" * 128)
        ds.SOPClassUID, ds.SOPInstanceUID, ds.Modality = meta.MediaStorageSOPClassUID, generate_uid(), "DX"
        ds.set_pixel_data(stored, photometric, 12)
        ds.RescaleSlope, ds.RescaleIntercept = 1.0, -10.0
        if window:
            ds.WindowCenter, ds.WindowWidth = window
        if rle:
            ds.compress(RLELossless)
        buffer = io.BytesIO()
        ds.save_as(buffer, enforce_file_format=True)
        out.append(buffer.getvalue())
    return out


IMAGE_CSV = "\n".join(f"MURA-v1.1/train/XR_WRIST/patient0000{p}/study1_{s}/image{v}.png"
                      for p, s in ((1, "positive"), (2, "negative")) for v in (1, 2)) + "\n"
LABEL_CSV = ("MURA-v1.1/train/XR_WRIST/patient00001/study1_positive/,1\n"
             "MURA-v1.1/train/XR_WRIST/patient00002/study1_negative/,0\n")
BOX_CSV = ("path,x0,y0,x1,y1,kind\nMURA-v1.1/train/XR_WRIST/patient00001/study1_positive/image1.png,"
           "1,2,10,12,fracture\n")


# ---------------------------------------------------------------- strategies


def mutated(seeds: list[bytes]):
    """A seed file with byte flips, a cut, an inserted run, or raw bytes (1 in 8)."""
    from hypothesis import strategies as st

    @st.composite
    def draw(draw) -> bytes:
        if draw(st.integers(0, 7)) == 0:
            return draw(st.binary(max_size=600))
        data = bytearray(draw(st.sampled_from(seeds)))
        for _ in range(draw(st.integers(0, 12))):
            data[draw(st.integers(0, len(data) - 1))] = draw(st.integers(0, 255))
        if draw(st.booleans()):
            at = draw(st.integers(0, len(data)))
            data[at:at] = draw(st.binary(max_size=64))
        if draw(st.integers(0, 3)) == 0:
            del data[draw(st.integers(0, len(data))):]
        return bytes(data)

    return draw()


# ---------------------------------------------------------------- targets


def _write(folder: Path, name: str, data: bytes) -> Path:
    path = folder / name
    path.write_bytes(data)
    return path


def target_image(folder: Path) -> tuple[Callable[[bytes], None], object, tuple[type, ...]]:
    from xraylens.data.images import ImageReadError, image_size, read_image, sniff_kind

    def run(data: bytes) -> None:
        path = _write(folder, "x.png", data)
        sniff_kind(path)
        image_size(path)
        read_image(path, max_pixels=MAX_PIXELS)

    return run, mutated(image_seeds()), (ImageReadError,)


def target_dicom(folder: Path) -> tuple[Callable[[bytes], None], object, tuple[type, ...]]:
    from xraylens.data.images import ImageReadError, image_size, read_image

    def run(data: bytes) -> None:
        path = _write(folder, "x.dcm", data)
        image_size(path)
        read_image(path, max_pixels=MAX_PIXELS)

    return run, mutated(dicom_seeds()), (ImageReadError,)


def target_csv(folder: Path) -> tuple[Callable[[bytes], None], object, tuple[type, ...]]:
    """Both MURA lists and the box table, fuzzed together, read by themselves and through the whole index."""
    from hypothesis import strategies as st

    from xraylens.data.boxes import read_box_table
    from xraylens.data.mura import index_dataset
    from xraylens.data.mura_layout import read_image_csv, read_label_csv
    from xraylens.data.problems import DataError

    mura = folder / "MURA-v1.1"
    for rel in ("train/XR_WRIST/patient00001/study1_positive/image1.png",
                "train/XR_WRIST/patient00002/study1_negative/image1.png"):
        (mura / rel).parent.mkdir(parents=True, exist_ok=True)
        (mura / rel).write_bytes(image_seeds()[0])

    def run(data: bytes) -> None:
        images, labels, boxes = data.split(b"\x00SEP\x00", 2) if data.count(b"\x00SEP\x00") >= 2 else (data,) * 3
        image_list = _write(mura, "train_image_paths.csv", images)
        label_list = _write(mura, "train_labeled_studies.csv", labels)
        read_image_csv(image_list, "train")
        read_label_csv(label_list, "train")
        read_box_table(_write(folder, "boxes.csv", boxes))
        index_dataset(folder, splits=("train",), progress=False)

    seeds = [f"{IMAGE_CSV}\x00SEP\x00{LABEL_CSV}\x00SEP\x00{BOX_CSV}".encode()]
    return run, st.one_of(mutated(seeds), st.text(max_size=300).map(str.encode)), (DataError,)


TARGETS = {"image": target_image, "dicom": target_dicom, "csv": target_csv}


# ---------------------------------------------------------------- the loop


def fuzz(name: str, seconds: float, out: Path) -> tuple[int, list[str]]:
    """Examples run and findings (one line each) for one target within ``seconds``."""
    from hypothesis import HealthCheck, given, settings

    findings: dict[str, bytes] = {}
    count = 0
    with tempfile.TemporaryDirectory() as tmp:
        run, strategy, allowed = TARGETS[name](Path(tmp))
        deadline = time.monotonic() + seconds

        @settings(max_examples=200, deadline=None, database=None, derandomize=False,
                  suppress_health_check=list(HealthCheck))
        @given(strategy)
        def one(data: bytes) -> None:
            nonlocal count
            if time.monotonic() > deadline:
                return
            count += 1
            try:
                run(data)
            except allowed:
                pass
            except Exception as exc:  # noqa: BLE001 - every other exception is what we are looking for
                ours = [f for f in traceback.extract_tb(exc.__traceback__) if "xraylens" in f.filename]
                where = f"{Path(ours[-1].filename).name}:{ours[-1].lineno}" if ours else "outside xraylens"
                key = f"{type(exc).__name__} at {where}: {str(exc).splitlines()[0][:160] if str(exc) else ''}"
                findings.setdefault(key, data)

        while time.monotonic() < deadline:
            one()
    lines = []
    for i, (key, data) in enumerate(findings.items()):
        out.mkdir(parents=True, exist_ok=True)
        saved = out / f"{name}-{i}.bin"
        saved.write_bytes(data)
        lines.append(f"{key}  (input: {saved})")
    return count, lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=60.0, help="time per target (default: 60)")
    parser.add_argument("--targets", nargs="+", choices=sorted(TARGETS), default=list(TARGETS))
    parser.add_argument("--out", type=Path, default=Path("fuzz_findings"), help="where failing inputs go")
    args = parser.parse_args(argv)
    import logging
    import warnings

    logging.disable(logging.WARNING)  # the readers log every odd window; the findings are what matters
    warnings.simplefilter("ignore")  # pydicom warns about every invalid value it meets
    total = 0
    print("| target | seconds | inputs tried | findings |\n|---|---|---|---|")
    report = []
    for name in args.targets:
        started = time.monotonic()
        count, lines = fuzz(name, args.seconds, args.out)
        print(f"| {name} | {time.monotonic() - started:.0f} | {count} | {len(lines)} |", flush=True)
        report += [f"{name}: {line}" for line in lines]
        total += len(lines)
    for line in report:
        print(line)
    return 1 if total else 0


if __name__ == "__main__":
    sys.exit(main())
