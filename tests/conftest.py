"""Shared fixtures: a tiny MURA v1.1 tree written by hand, so data tests know every count in advance.

The tree is built here rather than by ``xraylens.data.synthetic`` so that the
index, split and summary tests check the real format, not the generator's
idea of it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

# (split, body part, patient, study, folder sign, number of images)
TINY_STUDIES: tuple[tuple[str, str, str, str, str, int], ...] = (
    ("train", "XR_WRIST", "patient00001", "study1", "positive", 2),
    ("train", "XR_WRIST", "patient00001", "study2", "negative", 1),
    ("train", "XR_WRIST", "patient00002", "study1", "negative", 2),
    ("train", "XR_ELBOW", "patient00003", "study1", "positive", 3),
    ("train", "XR_ELBOW", "patient00004", "study1", "negative", 1),
    ("train", "XR_HAND", "patient00004", "study1", "positive", 1),  # one patient, two body parts
    ("valid", "XR_WRIST", "patient11185", "study1", "positive", 2),
    ("valid", "XR_HUMERUS", "patient11186", "study1", "negative", 1),
)


@dataclass
class TinyMura:
    """A written tree plus what was written, for exact assertions."""

    root: Path  # the folder that contains MURA-v1.1
    images: list[dict] = field(default_factory=list)  # one dict per image: path, split, body_part, ...

    @property
    def mura_dir(self) -> Path:
        return self.root / "MURA-v1.1"

    def write(self, rel: str, data: bytes) -> Path:
        """Write raw bytes at a MURA-relative path (junk files, truncated images)."""
        target = self.root / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
        return target

    def write_png(self, rel: str, height: int = 12, width: int = 16) -> Path:
        target = self.root / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        pixels = (np.arange(height * width) % 256).astype(np.uint8).reshape(height, width)
        Image.fromarray(pixels).save(target)
        return target

    def append_line(self, csv_name: str, line: str) -> None:
        with open(self.mura_dir / csv_name, "a") as handle:
            handle.write(line + "\n")

    def drop_csvs(self) -> None:
        for csv in self.mura_dir.glob("*.csv"):
            csv.unlink()

    def count(self, split: str, what: str, body_part: str | None = None) -> int:
        """Expected images / studies / patients / abnormal_studies for a split (and part)."""
        rows = [r for r in self.images if r["split"] == split and body_part in (None, r["body_part"])]
        if what == "images":
            return len(rows)
        if what == "studies":
            return len({r["study_id"] for r in rows})
        if what == "patients":
            return len({r["patient_id"] for r in rows})
        if what == "abnormal_studies":
            return len({r["study_id"] for r in rows if r["label"] == 1})
        raise ValueError(what)


def build_tiny_mura(root: Path) -> TinyMura:
    tree = TinyMura(root=root)
    image_lines: dict[str, list[str]] = {"train": [], "valid": []}
    study_lines: dict[str, list[str]] = {"train": [], "valid": []}
    for n, (split, part, patient, study, sign, count) in enumerate(TINY_STUDIES):
        study_path = f"MURA-v1.1/{split}/{part}/{patient}/{study}_{sign}/"
        study_lines[split].append(f"{study_path},{int(sign == 'positive')}")
        for j in range(1, count + 1):
            path = f"{study_path}image{j}.png"
            height, width = 10 + n, 20 + 2 * j
            tree.write_png(path, height, width)
            image_lines[split].append(path)
            tree.images.append(
                {
                    "path": path,
                    "split": split,
                    "body_part": part,
                    "patient_id": patient,
                    "study_id": f"{split}/{part}/{patient}/{study}",
                    "label": int(sign == "positive"),
                    "height": height,
                    "width": width,
                }
            )
    for split in ("train", "valid"):
        (tree.mura_dir / f"{split}_image_paths.csv").write_text("\n".join(image_lines[split]) + "\n")
        (tree.mura_dir / f"{split}_labeled_studies.csv").write_text("\n".join(study_lines[split]) + "\n")
    return tree


@pytest.fixture
def tiny_mura(tmp_path: Path) -> TinyMura:
    """A clean 13-image MURA v1.1 tree with official-style CSVs under ``tmp_path / "mura"``."""
    return build_tiny_mura(tmp_path / "mura")


@pytest.fixture
def one_torch_thread():
    """Small convolutions on a shared 2-core CPU run faster on one torch thread than on two fighting."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def pytest_terminal_summary(terminalreporter, exitstatus, config) -> None:
    """Print the bad-input table (kinds x entry points) when tests/test_bad_inputs.py ran, whatever -s says."""
    import sys

    module = sys.modules.get("bad_inputs")
    if module is None or not module.OUTCOMES:
        return
    terminalreporter.section("bad inputs: what each entry point did with each kind")
    terminalreporter.write_line(module.format_table())
