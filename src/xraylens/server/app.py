"""The web app: one static page and a small JSON API around one shared :class:`~xraylens.inference.Predictor`.

Safety, because uploads are untrusted and may be large:

* the body is counted while it is received and refused with 413 past the
  limit (a declared Content-Length over the limit is refused before reading);
* the type is decided by the file's first bytes (PNG, JPEG, DICOM magic), never
  by its name or Content-Type: anything else is 415;
* the upload is copied to a private temporary file (``mkstemp``: mode 0600, a
  name we choose) and deleted after the request; the pixel count is checked
  from the header before decoding; a corrupt image is 422 with the reason;
* the model is loaded once; the endpoint is a plain ``def`` so FastAPI runs
  requests in its thread pool, and the predictor serialises access to the
  torch model itself;
* at most ``max_concurrent`` uploads are decoded and predicted at a time and
  ``max_queue`` more wait; beyond that the answer is 503 with ``Retry-After``
  (:mod:`xraylens.server.admission`), which bounds peak memory under load.
"""

import base64
import contextlib
import functools
import os
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Annotated, Any

import numpy as np

from xraylens._version import __version__
from xraylens.data.images import DEFAULT_MAX_PIXELS, ImageReadError, read_image, sniff_kind
from xraylens.inference.predictor import Predictor
from xraylens.server.admission import Admission, Busy

STATIC_DIR = Path(__file__).with_name("static")
DISPLAY_MAX_SIDE = 1024  # images sent back to the page are at most this long; boxes stay in original pixels
_MULTIPART_SLACK = 64 * 1024  # boundaries and part headers around the file in a multipart body
_SUFFIX = {"png": ".png", "jpeg": ".jpg", "dicom": ".dcm"}
_CHUNK = 1 << 20
DISCLAIMER = "Research software, not a medical device: not for clinical use."
_CSP = ("default-src 'self'; img-src 'self' data: blob:; style-src 'self'; script-src 'self'; "
        "connect-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'")


def create_app(predictor: Predictor, *, max_upload_bytes: int = 20 * 2**20, max_pixels: int | None = None,
               max_concurrent: int = 2, max_queue: int = 32, queue_wait_s: float = 60.0) -> Any:
    """A FastAPI app serving ``/`` (the page), ``/api/predict``, ``/api/health``, ``/api/model``, ``/docs``."""
    try:
        from fastapi import FastAPI, File, HTTPException, UploadFile
        from fastapi.responses import FileResponse
        from fastapi.staticfiles import StaticFiles
    except ImportError as exc:
        raise ImportError("the web app needs FastAPI: pip install 'xraylens[app]'") from exc
    ErrorOut, HealthOut, ModelOut, PredictionOut = _schemas()

    max_pixels = max_pixels or DEFAULT_MAX_PIXELS
    admission = Admission(max_concurrent, max_queue, queue_wait_s)

    @contextlib.asynccontextmanager
    async def lifespan(app: Any) -> AsyncIterator[None]:
        yield
        admission.close()  # the computing threads end with the app

    app = FastAPI(
        lifespan=lifespan,
        title="xraylens",
        version=__version__,
        description=("Normal/abnormal classification of musculoskeletal radiographs with heatmaps. "
                     f"**{DISCLAIMER}**"),
    )
    app.state.predictor = predictor
    app.add_middleware(BodyLimit, max_bytes=max_upload_bytes + _MULTIPART_SLACK)
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
    errors = {413: {"model": ErrorOut, "description": "upload or image too large"},
              415: {"model": ErrorOut, "description": "not a PNG, JPEG or DICOM file (by content)"},
              422: {"model": ErrorOut, "description": "corrupt or unreadable image"},
              503: {"model": ErrorOut, "description": "busy: too many requests at once (see Retry-After)"}}

    @app.get("/", include_in_schema=False)
    def index() -> FileResponse:
        return FileResponse(STATIC_DIR / "index.html", media_type="text/html",
                            headers={"Content-Security-Policy": _CSP, "X-Content-Type-Options": "nosniff",
                                     "Cache-Control": "no-cache"})

    @app.get("/api/health", response_model=HealthOut)
    def health() -> dict[str, Any]:
        return {"status": "ok", "version": __version__, "engine": predictor.engine.name,
                "architecture": predictor.card.architecture, "load": admission.status()}

    @app.get("/api/model", response_model=ModelOut)
    def model() -> dict[str, Any]:
        return {**predictor.info(), "max_upload_bytes": max_upload_bytes, "max_pixels": max_pixels,
                "max_concurrent": max_concurrent, "max_queue": max_queue, "disclaimer": DISCLAIMER}

    @app.post("/api/predict", response_model=PredictionOut, responses=errors)
    def predict(file: Annotated[UploadFile, File(description="a radiograph: PNG, JPEG or DICOM")]) -> dict[str, Any]:
        """Classify one radiograph; with a torch model also a heatmap, boxes and a sentence.

        Boxes are in original pixel coordinates; the images returned are scaled so
        their long side is at most 1024 px (``display_scale`` = their size / original).
        """
        name = _safe_name(file.filename)
        tmp = _save_upload(file, max_upload_bytes, HTTPException, name)
        try:
            kind = sniff_kind(tmp)
            if kind is None:
                raise HTTPException(415, f"{name}: not a PNG, JPEG or DICOM file (the type is read from the "
                                         "file's content, not its name); upload the radiograph itself")
            typed = tmp.with_suffix(_SUFFIX[kind])
            os.replace(tmp, typed)
            tmp = typed
            upload = tmp

            def work() -> dict[str, Any]:  # decoding, the network, the answer's images: the memory-hungry part
                try:
                    image = read_image(upload, max_pixels=max_pixels)
                except ImageReadError as exc:
                    raise HTTPException(422, str(exc).replace(str(upload), name)) from exc
                upload.unlink(missing_ok=True)
                prediction = predictor.predict_image(image, explain=predictor.can_explain)
                return _response(prediction, image, predictor, name)

            return admission.run(work)
        except Busy as exc:
            raise HTTPException(503, str(exc), headers={"Retry-After": str(exc.retry_after)}) from exc
        finally:
            tmp.unlink(missing_ok=True)

    return app


# ---------------------------------------------------------------- response schemas (for /docs)


@functools.cache
def _schemas() -> tuple[type, type, type, type]:
    """Pydantic models, built on first use so importing this module does not need pydantic."""
    from pydantic import BaseModel, Field

    class ErrorOut(BaseModel):
        detail: str

    class HealthOut(BaseModel):
        status: str
        version: str
        engine: str
        architecture: str
        load: dict[str, int] = Field(description="requests in progress (computing or waiting) and the limits")

    class ModelOut(BaseModel):
        architecture: str
        input_size: int
        in_channels: int
        class_names: list[str]
        threshold: float
        temperature: float
        xraylens_version: str
        engine: str
        cam_method: str | None
        summary: dict[str, Any]
        max_upload_bytes: int
        max_pixels: int
        max_concurrent: int
        max_queue: int
        disclaimer: str

    class BoxOut(BaseModel):
        x0: float = Field(description="left edge, original pixels")
        y0: float = Field(description="top edge, original pixels")
        x1: float = Field(description="right edge (exclusive), original pixels")
        y1: float = Field(description="bottom edge (exclusive), original pixels")
        score: float
        area_fraction: float
        region: str

    class PredictionOut(BaseModel):
        filename: str
        probability: float = Field(description="calibrated P(abnormal)")
        verdict: str
        threshold: float
        boxes: list[BoxOut]
        explanation: str
        image_png_base64: str = Field(description="the radiograph as read (display size)")
        heatmap_png_base64: str | None = Field(description="colour heatmap (display size); null without CAMs")
        overlay_png_base64: str | None = Field(description="heatmap blended over the image (display size)")
        width: int = Field(description="original width in pixels")
        height: int = Field(description="original height in pixels")
        display_scale: float = Field(description="returned images' size / original size")
        model: dict[str, Any]
        disclaimer: str

    return ErrorOut, HealthOut, ModelOut, PredictionOut


# ---------------------------------------------------------------- the upload


class BodyLimit:
    """Pure ASGI middleware: refuse request bodies over ``max_bytes`` with 413, counting as they arrive."""

    def __init__(self, app: Any, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["method"] not in ("POST", "PUT", "PATCH"):
            await self.app(scope, receive, send)
            return
        from fastapi import HTTPException
        from fastapi.responses import JSONResponse

        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > self.max_bytes):
            status = 413 if declared.isdigit() else 400
            detail = (f"upload too large ({int(declared):,} bytes; the limit is about {self.max_bytes:,})"
                      if status == 413 else "invalid Content-Length header")
            await JSONResponse({"detail": detail}, status_code=status, headers={"Connection": "close"})(
                scope, receive, send)
            return
        received = 0

        async def counted() -> dict:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise HTTPException(413, f"upload too large (over {self.max_bytes:,} bytes)")
            return message

        await self.app(scope, counted, send)


def _save_upload(file: Any, max_bytes: int, http_error: type, name: str) -> Path:
    """Copy the upload into a private temporary file, refusing it past ``max_bytes``."""
    fd, tmp_name = tempfile.mkstemp(prefix="xraylens-upload-", suffix=".bin")
    path = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as out:
            file.file.seek(0)
            total = 0
            while chunk := file.file.read(_CHUNK):
                total += len(chunk)
                if total > max_bytes:
                    raise http_error(413, f"{name}: upload too large (more than {max_bytes:,} bytes; "
                                          f"the limit is {max_bytes / 2**20:.1f} MB)")
                out.write(chunk)
        if total == 0:
            raise http_error(422, f"{name}: the uploaded file is empty (0 bytes)")
    except BaseException:
        path.unlink(missing_ok=True)
        raise
    return path


def _safe_name(filename: str | None) -> str:
    """The client's file name for messages only (never a path we use): basename, printable, short."""
    base = os.path.basename((filename or "upload").replace("\\", "/")) or "upload"
    cleaned = "".join(c if c.isprintable() else "?" for c in base)
    return cleaned[:120]


# ---------------------------------------------------------------- the answer


def _response(prediction: Any, image: np.ndarray, predictor: Predictor, name: str) -> dict[str, Any]:
    from xraylens.plots.style import heatmap_rgb, overlay_rgb

    h, w = image.shape
    scale = min(1.0, DISPLAY_MAX_SIDE / max(h, w))
    small = _resize(image, scale)
    heat_b64 = overlay_b64 = None
    if prediction.heatmap is not None:
        heat = np.clip(_resize(prediction.heatmap, scale), 0, 1)
        heat_b64 = _png_b64(heatmap_rgb(heat))
        overlay_b64 = _png_b64(overlay_rgb(small, heat, alpha=0.4))
    return {
        "filename": name,
        "probability": prediction.probability,
        "verdict": prediction.verdict,
        "threshold": prediction.threshold,
        "boxes": [b.to_dict() for b in prediction.boxes],
        "explanation": prediction.explanation or _plain_sentence(prediction),
        "image_png_base64": _png_b64((np.clip(small, 0, 1) * 255 + 0.5).astype(np.uint8)),
        "heatmap_png_base64": heat_b64,
        "overlay_png_base64": overlay_b64,
        "width": w,
        "height": h,
        "display_scale": scale,
        "model": {"architecture": predictor.card.architecture, "engine": predictor.engine.name,
                  "input_size": predictor.card.preprocessing.size, "version": predictor.card.xraylens_version,
                  "cam_method": predictor.method if predictor.can_explain else None},
        "disclaimer": DISCLAIMER,
    }


def _plain_sentence(prediction: Any) -> str:
    return (f"{prediction.verdict.capitalize()} (P(abnormal) = {prediction.probability:.2f}, decision threshold "
            f"{prediction.threshold:.2f}). No heatmap: this server runs an ONNX model without its checkpoint.")


def _resize(array: np.ndarray, scale: float) -> np.ndarray:
    import cv2

    if scale >= 1.0:
        return array.astype(np.float32, copy=False)
    h, w = array.shape[:2]
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    return cv2.resize(array.astype(np.float32, copy=False), size, interpolation=cv2.INTER_AREA)


def _png_b64(pixels: np.ndarray) -> str:
    """(H, W) uint8 gray or (H, W, 3) uint8 RGB -> base64 PNG."""
    import cv2

    if pixels.ndim == 3:
        pixels = pixels[..., ::-1]  # OpenCV writes BGR
    ok, data = cv2.imencode(".png", np.ascontiguousarray(pixels), [cv2.IMWRITE_PNG_COMPRESSION, 3])
    if not ok:  # pragma: no cover - only on a broken OpenCV build
        raise RuntimeError("PNG encoding failed")
    return base64.b64encode(data.tobytes()).decode("ascii")

