"""Shared test helpers (not a test module): tiny FracAtlas and GRAZPEDWRI-DX folders in their released layouts.

Written here, by hand, rather than by ``xraylens data synth --layout`` so that
the reader tests check the published formats, not our generator's idea of
them. Each finding is drawn as a bright rectangle exactly where its box is,
so a test can check that a box lands on the finding in the image as read.
Quirks of the real releases are built in: a UTF-8 BOM and CRLF line endings
in dataset.csv, an EXIF-rotated and a truncated JPEG, an image id stored in
both FracAtlas folders and one listed twice, 16-bit PNGs holding 12-bit
data, empty YOLO files, a text box and a malformed YOLO line.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

Box = tuple[int, int, int, int]  # x0, y0, x1, y1 (exclusive) on the stored pixels


@dataclass(frozen=True)
class FracImage:
    stem: str
    fractured: int
    parts: tuple[str, ...]  # of hand, leg, hip, shoulder
    views: tuple[str, ...]  # of frontal, lateral, oblique
    size: tuple[int, int]  # stored (width, height)
    boxes: tuple[Box, ...] = ()
    orientation: int = 1  # EXIF orientation tag
    mixed: int = 0


FRACATLAS_IMAGES: tuple[FracImage, ...] = (
    FracImage("IMG0000001", 1, ("hand",), ("frontal",), (96, 80), ((10, 12, 40, 30),)),
    FracImage("IMG0000002", 1, ("leg",), ("lateral",), (80, 96), ((20, 50, 50, 70), (5, 5, 20, 20))),
    FracImage("IMG0000003", 1, ("hip",), ("frontal",), (96, 64), ((60, 10, 90, 30),), orientation=6),
    FracImage("IMG0000004", 1, ("shoulder",), ("frontal", "lateral"), (72, 72), ((30, 30, 60, 50),)),
    FracImage("IMG0000005", 1, ("hand", "leg"), ("oblique",), (90, 70), ((40, 20, 70, 45),), mixed=1),
    FracImage("IMG0000006", 0, ("hand",), ("frontal",), (64, 80)),
    FracImage("IMG0000007", 0, ("leg",), ("frontal",), (80, 64)),
    FracImage("IMG0000008", 0, ("hip",), ("lateral",), (72, 64)),  # truncated on disk
    FracImage("IMG0000009", 0, ("shoulder",), ("frontal",), (64, 72)),
    FracImage("IMG0000010", 0, ("hand",), ("lateral",), (70, 90)),  # listed twice in dataset.csv
    FracImage("IMG0000011", 0, ("leg",), ("oblique",), (64, 64)),
    FracImage("IMG0000012", 0, ("shoulder",), ("frontal",), (80, 80)),
)
TRUNCATED = "IMG0000008"
IN_BOTH_FOLDERS = "IMG0000004"
LISTED_TWICE = "IMG0000010"
OFFICIAL = {"train": ("IMG0000002", "IMG0000004"), "valid": ("IMG0000005",), "test": ("IMG0000001", "IMG0000003")}
FRACATLAS_HEADER = ("image_id", "hand", "leg", "hip", "shoulder", "mixed", "hardware", "multiscan", "fractured",
                    "fracture_count", "frontal", "lateral", "oblique")


def _radiograph(width: int, height: int, boxes: tuple[Box, ...], seed: int, low: float = 0.25,
                high: float = 0.95) -> np.ndarray:
    """(H, W) float in [0, 1]: a dim noisy film with each box filled bright."""
    rng = np.random.default_rng(seed)
    image = np.clip(rng.normal(low, 0.03, (height, width)), 0, 1)
    for x0, y0, x1, y1 in boxes:
        image[y0:y1, x0:x1] = high
    return image


def _crlf_bom_csv(path: Path, header: tuple[str, ...], rows: list[list[str]]) -> None:
    """Exactly as the releases ship dataset.csv: UTF-8 with BOM, CRLF line endings."""
    lines = [",".join(header)] + [",".join(r) for r in rows]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"\xef\xbb\xbf" + ("\r\n".join(lines) + "\r\n").encode())


@dataclass
class FracAtlasFixture:
    root: Path  # the FracAtlas folder
    images: tuple[FracImage, ...] = FRACATLAS_IMAGES
    upright_boxes: dict[str, list[tuple[float, float, float, float]]] = field(default_factory=dict)

    def path_of(self, stem: str) -> str:
        image = next(i for i in self.images if i.stem == stem)
        return f"images/{'Fractured' if image.fractured else 'Non_fractured'}/{stem}.jpg"


def write_fracatlas(parent: Path, *, coco: bool = True, yolo: bool = True) -> FracAtlasFixture:
    """``parent/FracAtlas`` with dataset.csv, images, COCO JSON and/or YOLO files, and the official split."""
    root = parent / "FracAtlas"
    fixture = FracAtlasFixture(root)
    rows, coco_images, coco_annotations = [], [], []
    for n, image in enumerate(FRACATLAS_IMAGES):
        folder = root / "images" / ("Fractured" if image.fractured else "Non_fractured")
        folder.mkdir(parents=True, exist_ok=True)
        pixels = (_radiograph(*image.size, image.boxes, seed=n) * 255).astype(np.uint8)
        target = folder / f"{image.stem}.jpg"
        exif = Image.Exif()
        if image.orientation != 1:
            exif[0x0112] = image.orientation
        Image.fromarray(pixels).save(target, format="JPEG", quality=95, exif=exif.tobytes())
        if image.stem == TRUNCATED:
            target.write_bytes(target.read_bytes()[: target.stat().st_size // 2])
        if image.stem == IN_BOTH_FOLDERS:
            copy = root / "images" / "Non_fractured" / target.name
            copy.parent.mkdir(parents=True, exist_ok=True)
            copy.write_bytes(target.read_bytes())
        flags = {p: int(p in image.parts) for p in ("hand", "leg", "hip", "shoulder")}
        views = {v: int(v in image.views) for v in ("frontal", "lateral", "oblique")}
        row = [f"{image.stem}.jpg", *map(str, flags.values()), str(image.mixed), "0", str(int(len(image.views) > 1)),
               str(image.fractured), str(len(image.boxes)), *map(str, views.values())]
        rows.append(row)
        if image.stem == LISTED_TWICE:
            rows.append(row)
        width, height = image.size
        coco_images.append({"id": n + 1, "file_name": f"{image.stem}.jpg", "width": width, "height": height})
        for box in image.boxes:
            x0, y0, x1, y1 = box
            coco_annotations.append({"id": len(coco_annotations) + 1, "image_id": n + 1, "category_id": 1,
                                     "bbox": [x0, y0, x1 - x0, y1 - y0], "area": (x1 - x0) * (y1 - y0),
                                     "segmentation": [[x0, y0, x1, y0, x1, y1, x0, y1]], "iscrowd": 0})
        if yolo:
            lines = [f"0 {(b[0] + b[2]) / 2 / width:.6f} {(b[1] + b[3]) / 2 / height:.6f} "
                     f"{(b[2] - b[0]) / width:.6f} {(b[3] - b[1]) / height:.6f}" for b in image.boxes]
            label = root / "Annotations" / "YOLO" / f"{image.stem}.txt"
            label.parent.mkdir(parents=True, exist_ok=True)
            label.write_text("\n".join(lines) + ("\n" if lines else ""))  # empty for non-fractured images
        fixture.upright_boxes[image.stem] = [_upright(b, image) for b in image.boxes]
    _crlf_bom_csv(root / "dataset.csv", FRACATLAS_HEADER, rows)
    if coco:
        target = root / "Annotations" / "COCO JSON" / "COCO_fracture_masks.json"
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(json.dumps({"images": coco_images, "annotations": coco_annotations,
                                      "categories": [{"id": 1, "name": "fractured"}]}))
    for name, stems in OFFICIAL.items():
        _crlf_bom_csv(root / "Utilities" / "Fracture Split" / f"{name}.csv", ("image_id",),
                      [[f"{s}.jpg"] for s in stems])
    return fixture


def _upright(box: Box, image: FracImage) -> tuple[float, float, float, float]:
    """Where a stored-pixel box is once the image is turned upright (only orientation 6 is used here)."""
    if image.orientation == 1:
        return tuple(float(v) for v in box)
    assert image.orientation == 6  # a quarter turn clockwise: (x, y) -> (H - y, x)
    x0, y0, x1, y1 = box
    height = image.size[1]
    return (float(height - y1), float(x0), float(height - y0), float(x1))


# ---------------------------------------------------------------- GRAZPEDWRI-DX


@dataclass(frozen=True)
class WristImage:
    patient: str
    study: int
    projection: int
    fracture_visible: int
    boxes: tuple[tuple[int, Box], ...] = ()  # (YOLO class, box)
    part: int = 1  # images_part<N>
    label_file: bool = True

    @property
    def stem(self) -> str:
        return f"{self.patient}_{1297860395 + self.study}_{self.study:02d}_WRI-L{self.projection}_M014"


WRIST_IMAGES: tuple[WristImage, ...] = (
    WristImage("0001", 1, 1, 1, ((3, (10, 10, 30, 24)), (8, (2, 2, 12, 8)))),  # fracture + burned-in text
    WristImage("0001", 1, 2, 0),  # the study's lateral view shows nothing: the study is still abnormal
    WristImage("0001", 2, 1, 0, ((4, (20, 30, 40, 50)),), part=2),  # metal only
    WristImage("0002", 1, 1, 1, ((3, (30, 12, 50, 30)), (5, (8, 40, 20, 56)))),  # + periosteal reaction
    WristImage("0002", 1, 2, 1, ((3, (28, 10, 46, 26)),)),
    WristImage("0003", 1, 1, 0, ((8, (40, 2, 60, 10)),)),  # text only: a normal image
    WristImage("0003", 1, 2, 0, label_file=False),
    WristImage("0004", 1, 1, 1, ((1, (12, 20, 30, 40)), (3, (40, 40, 60, 60))), part=2),  # lesion + fracture
    WristImage("0005", 1, 1, 0),  # an empty label file
    WristImage("0006", 1, 1, 1, ((3, (16, 16, 36, 36)),), part=3),
    WristImage("0007", 1, 1, 0, part=3),
    WristImage("0008", 1, 1, 1, ((3, (20, 8, 44, 30)),), part=4),
)
WRIST_LISTED_TWICE = WRIST_IMAGES[3].stem
WRIST_STORED_TWICE = WRIST_IMAGES[9].stem  # also in images_part1
WRIST_BAD_LINE = WRIST_IMAGES[7].stem  # its label file gains a malformed line
WRIST_SIZE = (64, 72)  # width, height
GRAZ_HEADER = ("filestem", "patient_id", "study_number", "timehash", "gender", "age", "laterality", "projection",
               "initial_exam", "ao_classification", "cast", "diagnosis_uncertain", "osteopenia", "fracture_visible",
               "metal", "pixel_spacing", "device_manufacturer")


@dataclass
class GrazFixture:
    root: Path
    images: tuple[WristImage, ...] = WRIST_IMAGES

    def path_of(self, stem: str) -> str:
        """Where the reader finds ``stem``: a copy in an earlier part wins."""
        image = next(i for i in self.images if i.stem == stem)
        return f"images_part{1 if stem == WRIST_STORED_TWICE else image.part}/{stem}.png"


def write_grazpedwri(parent: Path) -> GrazFixture:
    """``parent/GRAZPEDWRI-DX`` with dataset.csv, 16-bit PNGs (12-bit data) in four parts and YOLO labels."""
    root = parent / "GRAZPEDWRI-DX"
    rows = []
    width, height = WRIST_SIZE
    for n, image in enumerate(WRIST_IMAGES):
        film = _radiograph(width, height, tuple(b for _, b in image.boxes), seed=100 + n)
        pixels = np.rint(film * 4095).astype(np.uint16)  # 12-bit data in a 16-bit PNG
        target = root / f"images_part{image.part}" / f"{image.stem}.png"
        target.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(pixels).save(target, format="PNG")
        assert Image.open(target).mode.startswith("I;16")
        if image.stem == WRIST_STORED_TWICE:
            (root / "images_part1").mkdir(parents=True, exist_ok=True)
            (root / "images_part1" / target.name).write_bytes(target.read_bytes())
        metal = int(any(cls == 4 for cls, _ in image.boxes))
        row = [image.stem, image.patient, str(image.study), "1297860395", "M", "14", "L", str(image.projection),
               "1", "", "", "", "", "1" if image.fracture_visible else "", "1" if metal else "", "0.144", "AGFA"]
        rows.append(row)
        if image.stem == WRIST_LISTED_TWICE:
            rows.append(row)
        if image.label_file:
            lines = [f"{cls} {(b[0] + b[2]) / 2 / width:.6f} {(b[1] + b[3]) / 2 / height:.6f} "
                     f"{(b[2] - b[0]) / width:.6f} {(b[3] - b[1]) / height:.6f}" for cls, b in image.boxes]
            if image.stem == WRIST_BAD_LINE:
                lines.append("3 0.5 0.5")
            label = root / "folder_structure" / "yolov5" / "labels" / f"{image.stem}.txt"
            label.parent.mkdir(parents=True, exist_ok=True)
            label.write_text("\n".join(lines) + ("\n" if lines else ""))
    _crlf_bom_csv(root / "dataset.csv", GRAZ_HEADER, rows)
    return GrazFixture(root)
