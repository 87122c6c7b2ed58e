"""Prediction: one path from a file to a verdict, for the CLI, the server and ONNX parity checks.

The package's rooms: ``predictor`` (``Predictor``, ``OnnxPredictor``), ``engines``
(torch, and the lock that makes sharing safe), ``onnx_runtime`` (ONNX Runtime
sessions and the card an exported file carries), ``model_card``, ``results``,
``inputs`` (which files to read) and ``outputs`` (the CSV/JSON written).
Importing it imports neither torch nor onnxruntime.
"""

from xraylens.inference.engines import Engine, TorchEngine
from xraylens.inference.inputs import IMAGE_SUFFIXES, collect_inputs
from xraylens.inference.model_card import ModelCard
from xraylens.inference.onnx_runtime import OnnxEngine
from xraylens.inference.outputs import write_predictions
from xraylens.inference.predictor import ENGINES, OnnxPredictor, Predictor
from xraylens.inference.results import (
    Failure,
    ImagePrediction,
    Predictions,
    StudyPrediction,
    body_part_of,
    study_of,
)

__all__ = [
    "ENGINES", "IMAGE_SUFFIXES", "Engine", "Failure", "ImagePrediction", "ModelCard", "OnnxEngine", "OnnxPredictor",
    "Predictions", "Predictor", "StudyPrediction", "TorchEngine", "body_part_of", "collect_inputs", "study_of",
    "write_predictions",
]
