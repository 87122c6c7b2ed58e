"""torch Dataset over an index table: decode (or read the cache), letterbox, augment, normalise.

An unreadable image never stops an epoch: the sample comes back as a black
image with ``ok=False`` and the training/evaluation loops drop it, and the path
is logged once. The index (``xraylens data summary --verify``) is where such
files should be caught first.

With ``boxes`` (``train.box_fraction > 0``) every sample also carries
``mask``, the (S, S) uint8 mask of its true boxes on the augmented square,
and ``boxed``, whether the image is one whose boxes train the map at all.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch.utils.data import Dataset

from xraylens.data.boxes import square_mask
from xraylens.data.images import ImageReadError, read_image
from xraylens.data.preprocess import Preprocessing, letterbox, to_tensor

log = logging.getLogger(__name__)

# (S, S) float32 in [0, 1] -> (S, S) float32 in [0, 1]; applied before normalisation.
SquareTransform = Callable[[torch.Tensor], torch.Tensor]


class RadiographDataset(Dataset):
    """One sample per row of ``table`` (needs columns ``file`` and ``label``).

    ``square_source`` (optional) returns the already-letterboxed uint8 square for a
    row position (the pre-resized cache), or ``None`` for an image the cache
    recorded as unreadable; otherwise the file is decoded each time.
    ``boxes`` maps a row position to its (K, 4) boxes on the letterboxed
    square (K may be 0: a normal image, "nothing here"); rows it lacks are
    not box-supervised. The transform must then move masks too (``with_mask``).
    """

    def __init__(
        self,
        table: pd.DataFrame,
        prep: Preprocessing,
        transform: SquareTransform | None = None,
        square_source: Callable[[int], np.ndarray | None] | None = None,
        boxes: dict[int, np.ndarray] | None = None,
    ) -> None:
        if boxes is not None and transform is not None and not hasattr(transform, "with_mask"):
            raise TypeError(f"{transform!r} cannot move box masks with the image; give it a with_mask method")
        self.table = table.reset_index(drop=True)
        self.files = self.table["file"].astype(str).tolist()
        labels = self.table["label"] if "label" in self.table else pd.Series(-1, index=self.table.index)
        self.labels = labels.astype("float32").to_numpy()
        self.prep = prep
        self.transform = transform
        self.square_source = square_source
        self.boxes = boxes
        self._warned: set[str] = set()

    def __len__(self) -> int:
        return len(self.files)

    def load_square(self, i: int) -> tuple[np.ndarray, bool]:
        """(S, S) float32 in [0, 1] and whether the image could be read."""
        if self.square_source is not None:
            square = self.square_source(i)
            if square is None:
                return np.zeros((self.prep.size, self.prep.size), np.float32), False
            return square.astype(np.float32) / 255.0, True
        try:
            image = read_image(self.files[i])
        except ImageReadError as exc:
            if self.files[i] not in self._warned:
                self._warned.add(self.files[i])
                log.warning("skipping unreadable image: %s", exc)
            return np.zeros((self.prep.size, self.prep.size), np.float32), False
        square, _ = letterbox(image, self.prep.size)
        return square, True

    def __getitem__(self, i: int) -> dict[str, Any]:
        square, ok = self.load_square(i)
        x = torch.from_numpy(square)  # (S, S) in [0, 1]
        if self.boxes is None:
            if self.transform is not None and ok:
                x = self.transform(x)
            return self._sample(i, x, ok)
        boxed = ok and i in self.boxes
        mask = torch.from_numpy(square_mask(self.boxes[i], self.prep.size) if boxed
                                else np.zeros((self.prep.size, self.prep.size), np.uint8))
        if self.transform is not None and ok:
            x, mask = self.transform.with_mask(x, mask)
        return {**self._sample(i, x, ok), "mask": mask, "boxed": boxed}

    def _sample(self, i: int, x: torch.Tensor, ok: bool) -> dict[str, Any]:
        return {
            "image": to_tensor(x.numpy(), self.prep),  # (C, S, S) normalised
            "label": torch.tensor(self.labels[i]),
            "index": i,
            "ok": ok,
        }
