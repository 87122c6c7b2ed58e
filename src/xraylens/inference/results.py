"""What a prediction returns: per image, per study, and the inputs that failed.

Plain dataclasses with ``to_dict`` so the CLI, the server's JSON and the
prediction files all show the same fields. A study is the folder holding its
views, and MURA paths name the body part, so both are read off the source path.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from xraylens.explain.regions import Box


@dataclass(frozen=True)
class ImagePrediction:
    """One radiograph's result; boxes and the heatmap are in original pixel coordinates."""

    source: str  # file path, or "<array>"
    probability: float  # calibrated P(abnormal)
    verdict: str  # a class name: "abnormal" when probability >= threshold
    threshold: float
    width: int
    height: int
    study: str | None = None  # the folder holding the view
    body_part: str | None = None  # "XR_WRIST" when the path says so
    boxes: tuple[Box, ...] = ()
    explanation: str | None = None
    heatmap: np.ndarray | None = field(default=None, repr=False)  # (height, width) float32 in [0, 1]

    @property
    def size(self) -> tuple[int, int]:
        return self.width, self.height

    def to_dict(self) -> dict[str, Any]:
        return {"path": self.source, "study": self.study, "body_part": self.body_part,
                "probability": round(self.probability, 6), "verdict": self.verdict, "threshold": self.threshold,
                "width": self.width, "height": self.height, "boxes": [b.to_dict() for b in self.boxes],
                "explanation": self.explanation}


@dataclass(frozen=True)
class StudyPrediction:
    study: str
    probability: float  # mean of the views' probabilities
    verdict: str
    n_images: int
    body_part: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"study": self.study, "body_part": self.body_part, "probability": round(self.probability, 6),
                "verdict": self.verdict, "n_images": self.n_images}


@dataclass(frozen=True)
class Failure:
    path: str
    reason: str


@dataclass
class Predictions:
    images: list[ImagePrediction]
    studies: list[StudyPrediction]
    failures: list[Failure]

    def to_dict(self) -> dict[str, Any]:
        return {"images": [p.to_dict() for p in self.images], "studies": [s.to_dict() for s in self.studies],
                "failures": [{"path": f.path, "reason": f.reason} for f in self.failures]}


def study_of(source: str) -> str | None:
    return None if source.startswith("<") else str(Path(source).parent)


def body_part_of(source: str) -> str | None:
    """MURA paths name the body part (``.../XR_WRIST/patient.../study1_positive/image1.png``)."""
    return next((part.upper() for part in Path(source).parts if part.upper().startswith("XR_")), None)
