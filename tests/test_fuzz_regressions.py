"""What benchmarks/fuzz_readers.py found, kept: each input now fails with our clear error naming the file.

Found in its first runs (2 x 20 s and 3 x 60 s per target): a malformed DICOM
element (unknown VR, an odd byte count for a 16-bit value, two values where
one belongs) raised pydicom's NotImplementedError / BytesLengthException /
TypeError out of the header checks, and a PNG whose IHDR chunk is cut short
raised Pillow's plain ValueError: callers that skip unreadable files (the
training loader, evaluate, predict) would have crashed on them.
"""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
import pytest

from xraylens.data.images import ImageReadError, image_size, read_image


def _element(group: int, element: int, vr: bytes, value: bytes) -> bytes:
    """One explicit-VR little-endian element with a short (2-byte) length."""
    return struct.pack("<HH", group, element) + vr + struct.pack("<H", len(value)) + value


@pytest.fixture(scope="module")
def dicom_bytes(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    pytest.importorskip("pydicom")
    from test_dicom import write_dicom

    path = tmp_path_factory.mktemp("seed") / "seed.dcm"
    return write_dicom(path, np.zeros((24, 18), np.uint16), bits=12, window=(2000, 4000)).read_bytes()


ROWS = _element(0x0028, 0x0010, b"US", struct.pack("<H", 24))


@pytest.mark.parametrize(("name", "old", "new"), [
    ("unknown VR in Columns", struct.pack("<HH", 0x0028, 0x0011) + b"US", struct.pack("<HH", 0x0028, 0x0011) + b"\x55\xaf"),
    ("odd byte count for a 16-bit Rows", ROWS, _element(0x0028, 0x0010, b"US", b"\x18\x00\x00")),
    ("two values in Rows", ROWS, _element(0x0028, 0x0010, b"US", struct.pack("<HH", 24, 24))),
    ("unknown VR in Window Center", struct.pack("<HH", 0x0028, 0x1050) + b"DS",
     struct.pack("<HH", 0x0028, 0x1050) + b"\x44\xff"),
])
def test_malformed_dicom_element_is_a_clear_error(dicom_bytes: bytes, tmp_path: Path, name: str, old: bytes,
                                                  new: bytes) -> None:
    assert dicom_bytes.count(old) == 1, name
    path = tmp_path / "broken.dcm"
    path.write_bytes(dicom_bytes.replace(old, new))
    for read in (read_image, image_size):
        try:
            read(path)
        except ImageReadError as exc:
            assert str(exc).startswith(f"{path}: "), exc
        # pydicom may also accept a variant silently (then there is nothing to refuse): no other exception


def test_png_with_a_cut_ihdr_chunk_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "cut.png"
    # the IHDR chunk declares 3 bytes where the header needs 13 (the fuzzer's input, cut to its first chunk)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + struct.pack(">I", 3) + b"IHDR" + b"\x00\x00\x00" + b"\x00" * 4
                     + struct.pack(">I", 0) + b"IEND" + b"\xaeB`\x82")
    for read in (read_image, image_size):
        with pytest.raises(ImageReadError, match=r"cut\.png: looks like png but its header is corrupt"):
            read(path)
