"""Prediction files: the JSON and CSV that ``xraylens predict --out`` writes.

Apart from the predictor because the file layout is a contract with whoever
reads the files (spreadsheets, scripts), not part of how a probability is made.
Writes are atomic, so a rerun never leaves half a file.
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

from xraylens.atomic import atomic_write_json, atomic_write_text
from xraylens.inference.results import Predictions


def write_predictions(predictions: Predictions, path: str | Path) -> Path:
    """``.json`` (images, studies, failures) or ``.csv`` (one row per image and per study), atomically."""
    path = Path(path)
    if path.suffix.lower() == ".json":
        return atomic_write_json(path, predictions.to_dict())
    if path.suffix.lower() != ".csv":
        raise ValueError(f"--out must end in .csv or .json, got {path.name}")
    buffer = io.StringIO()
    columns = ["level", "path", "study", "body_part", "probability", "verdict", "n_images", "width", "height",
               "boxes", "explanation", "error"]
    writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    for p in predictions.images:
        writer.writerow({"level": "image", "path": p.source, "study": p.study, "body_part": p.body_part,
                         "probability": f"{p.probability:.6f}", "verdict": p.verdict, "n_images": 1,
                         "width": p.width, "height": p.height,
                         "boxes": json.dumps([b.to_dict() for b in p.boxes]) if p.explanation else "",
                         "explanation": p.explanation or ""})
    for s in predictions.studies:
        writer.writerow({"level": "study", "path": s.study, "study": s.study, "body_part": s.body_part,
                         "probability": f"{s.probability:.6f}", "verdict": s.verdict, "n_images": s.n_images})
    for f in predictions.failures:
        writer.writerow({"level": "failed", "path": f.path, "error": f.reason})
    return atomic_write_text(path, buffer.getvalue())
