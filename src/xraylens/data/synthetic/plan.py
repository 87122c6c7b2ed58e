"""Who is in the dataset: patients, their studies, labels, number of views and stray files.

The plan is drawn serially from the seed and is cheap; every image is then
drawn from its own random stream keyed on ``(seed, what, patient, part,
study, view)``, so images can be rendered in any order, in any process, and
come out the same.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np

from xraylens.config import BODY_PARTS

MURA_DIR = "MURA-v1.1"
VALID_SHARE = 0.2
ABNORMAL_SHARE = 0.4
# MURA v1.1 train images per part: the synthetic mix follows the real one
PART_WEIGHTS = {
    "XR_ELBOW": 4931,
    "XR_FINGER": 5106,
    "XR_FOREARM": 1825,
    "XR_HAND": 5543,
    "XR_HUMERUS": 1272,
    "XR_SHOULDER": 8379,
    "XR_WRIST": 9752,
}
VIEWS_P = (0.12, 0.33, 0.4, 0.15)  # 1, 2, 3, 4 views per study, for normal and abnormal alike
STUDIES_P = (0.65, 0.25, 0.1)  # 1, 2, 3 studies per patient
JUNK_SHARE = 0.04  # studies with a macOS "._imageN.png" file, as in the real download

# random streams
PATIENT, STUDY_ANATOMY, STUDY_FINDINGS, VIEW_ACQUISITION, VIEW_POSE, VIEW_FINDINGS, VIEW_LOOKALIKE = range(7)


def rng_for(seed: int, *key: int) -> np.random.Generator:
    """An independent generator for one (seed, stream, identity...) tuple."""
    return np.random.default_rng(np.random.SeedSequence(seed, spawn_key=tuple(int(k) for k in key)))


@dataclass(frozen=True)
class StudyPlan:
    split: str
    part: str
    patient: int
    study: int  # numbered per patient per body part, from 1
    label: int  # 1 = abnormal
    views: int
    junk: tuple[int, ...] = ()  # image numbers that get a "._imageN.png" sibling

    @property
    def part_index(self) -> int:
        return BODY_PARTS.index(self.part)

    @property
    def key(self) -> tuple[int, int, int]:
        return self.patient, self.part_index, self.study

    @property
    def folder(self) -> str:
        sign = "positive" if self.label else "negative"
        return f"{MURA_DIR}/{self.split}/{self.part}/patient{self.patient:05d}/study{self.study}_{sign}/"

    def image_path(self, view: int) -> str:
        """Path of image ``view`` (0-based) as the CSVs write it."""
        return f"{self.folder}image{view + 1}.png"


def make_plan(patients: int, seed: int) -> list[StudyPlan]:
    """All studies, in the order the official CSVs list them (split, body part, patient, study)."""
    if patients < 1:
        raise ValueError(f"patients must be at least 1, got {patients}")
    if seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed}")
    rng = rng_for(seed, 99)
    n_valid = int(round(patients * VALID_SHARE)) if patients > 1 else 0
    parts = list(PART_WEIGHTS)
    weights = np.array([PART_WEIGHTS[p] for p in parts], float)
    weights /= weights.sum()
    studies: list[StudyPlan] = []
    for pid in range(1, patients + 1):
        split = "valid" if pid > patients - n_valid else "train"
        count: dict[str, int] = {}
        part = str(rng.choice(parts, p=weights))
        for _ in range(int(rng.choice([1, 2, 3], p=STUDIES_P))):
            count[part] = count.get(part, 0) + 1
            views = int(rng.choice([1, 2, 3, 4], p=VIEWS_P))
            label = int(rng.random() < ABNORMAL_SHARE)
            studies.append(StudyPlan(split, part, pid, count[part], label, views))
            if rng.random() < 0.4:  # the next study is of another body part
                part = str(rng.choice(parts, p=weights))
    # a few studies get a stray "._imageN.png" (at least one, so readers always meet one)
    for k in rng.choice(len(studies), size=max(1, int(round(JUNK_SHARE * len(studies)))), replace=False):
        s = studies[k]
        studies[k] = dataclasses.replace(s, junk=(int(rng.integers(1, s.views + 1)),))
    return sorted(studies, key=lambda s: (s.split != "train", s.part, s.patient, s.study))
