"""The web API: answers, limits (413/415/422), content sniffing, temp files, concurrency, and `xraylens serve`."""

from __future__ import annotations

import base64
import io
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("fastapi")
pytest.importorskip("httpx")

from fastapi.testclient import TestClient  # noqa: E402
from PIL import Image  # noqa: E402

from bad_inputs import bomb_png  # noqa: E402
from xraylens.config import ModelConfig  # noqa: E402
from xraylens.data.preprocess import Preprocessing  # noqa: E402
from xraylens.inference import Predictor  # noqa: E402
from xraylens.models import CheckpointMeta, create_model, save_checkpoint  # noqa: E402
from xraylens.server.app import create_app  # noqa: E402

LIMIT = 300_000


def png_bytes(shape: tuple[int, int] = (90, 70), seed: int = 0, noise: float = 0.05) -> bytes:
    rng = np.random.default_rng(seed)
    ys, xs = np.mgrid[0 : shape[0], 0 : shape[1]]
    img = 0.2 + 0.5 * (np.hypot(xs - shape[1] / 2, ys - shape[0] / 2) < min(shape) / 3) + rng.normal(0, noise, shape)
    buf = io.BytesIO()
    Image.fromarray((np.clip(img, 0, 1) * 255).astype(np.uint8)).save(buf, "PNG")
    return buf.getvalue()


@pytest.fixture(scope="module")
def predictor(tmp_path_factory: pytest.TempPathFactory) -> Predictor:
    meta = CheckpointMeta(model=ModelConfig(), preprocessing=Preprocessing.for_channels(64, 1),
                          summary={"best_val_loss": 0.42, "epochs": 3})
    path = save_checkpoint(tmp_path_factory.mktemp("ckpt") / "m.ckpt", create_model("mobilenet_v2"), meta)
    return Predictor.from_checkpoint(path)


@pytest.fixture
def client(predictor: Predictor, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))  # uploads land here: we can check they are deleted
    with TestClient(create_app(predictor, max_upload_bytes=LIMIT, max_pixels=2_000_000)) as c:
        yield c
    assert list(tmp_path.iterdir()) == [], "upload temp files must be deleted"


def post(client: TestClient, data: bytes, name: str = "x.png", content_type: str = "image/png"):
    return client.post("/api/predict", files={"file": (name, data, content_type)})


def decode_png(b64: str) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(b64))))


def test_predict_returns_verdict_images_and_boxes(client: TestClient) -> None:
    response = post(client, png_bytes((90, 70)))
    assert response.status_code == 200, response.text
    body = response.json()
    assert {"probability", "verdict", "threshold", "boxes", "explanation", "heatmap_png_base64",
            "overlay_png_base64", "width", "height", "model"} <= set(body)
    assert 0 <= body["probability"] <= 1 and body["verdict"] in ("normal", "abnormal")
    assert (body["width"], body["height"]) == (70, 90)
    assert decode_png(body["overlay_png_base64"]).shape == (90, 70, 3)
    assert decode_png(body["heatmap_png_base64"]).shape == (90, 70, 3)
    assert decode_png(body["image_png_base64"]).shape == (90, 70)
    for box in body["boxes"]:
        assert 0 <= box["x0"] < box["x1"] <= 70 and 0 <= box["y0"] < box["y1"] <= 90
    assert body["model"]["architecture"] == "mobilenet_v2" and body["explanation"]


def test_large_image_is_returned_at_display_size(client: TestClient) -> None:
    body = post(client, png_bytes((1500, 600), noise=0.0)).json()  # small file, big image
    assert (body["width"], body["height"]) == (600, 1500)
    assert decode_png(body["overlay_png_base64"]).shape[:2] == (1024, 410)
    assert body["display_scale"] == pytest.approx(1024 / 1500)


def test_type_is_decided_by_content_not_name(client: TestClient) -> None:
    response = post(client, b"hello, I am text\n" * 10, "scan.png", "image/png")
    assert response.status_code == 415
    assert "scan.png: not a PNG, JPEG or DICOM" in response.json()["detail"]
    jpeg = io.BytesIO()
    Image.fromarray(np.full((40, 30), 128, np.uint8)).save(jpeg, "JPEG")
    assert post(client, jpeg.getvalue(), "named-wrong.png", "text/plain").status_code == 200


def test_corrupt_image_is_422_with_clear_message(client: TestClient) -> None:
    data = png_bytes((200, 200), seed=3)
    response = post(client, data[: len(data) // 2], "half.png")
    assert response.status_code == 422
    detail = response.json()["detail"]
    assert detail.startswith("half.png: truncated or corrupt PNG") and "xraylens-upload" not in detail
    assert post(client, b"", "empty.png").status_code == 422


def test_pixel_limit_is_422(client: TestClient) -> None:
    buf = io.BytesIO()
    Image.new("L", (2000, 1001)).save(buf, "PNG")  # tiny file, 2 MP
    response = post(client, buf.getvalue(), "wide.png")
    assert response.status_code == 422 and "over the limit of 2,000,000" in response.json()["detail"]


def test_oversize_upload_is_413(client: TestClient) -> None:
    big = b"\x89PNG\r\n\x1a\n" + b"\0" * (LIMIT + 10)
    response = post(client, big)  # declared Content-Length over the limit: refused before reading
    assert response.status_code == 413 and "too large" in response.json()["detail"]
    just_over = b"\x89PNG\r\n\x1a\n" + b"\0" * (LIMIT - 4)  # body within slack, file over the limit
    assert post(client, just_over).status_code == 413


def test_streamed_body_without_length_is_counted(client: TestClient) -> None:
    boundary = "xraylensboundary"
    head = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.png\"\r\n"
            "Content-Type: image/png\r\n\r\n").encode()

    def chunks():
        yield head
        for _ in range(20):
            yield b"\0" * 65536  # 1.3 MB in total, never declared
        yield f"\r\n--{boundary}--\r\n".encode()

    response = client.post("/api/predict", content=chunks(),
                           headers={"Content-Type": f"multipart/form-data; boundary={boundary}"})
    assert response.status_code == 413 and "upload too large (over" in response.json()["detail"]  # counted


def test_dicom_upload(client: TestClient, tmp_path_factory: pytest.TempPathFactory) -> None:
    pytest.importorskip("pydicom")
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.1.1"
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    path = tmp_path_factory.mktemp("dcm") / "upload"  # no extension: content decides
    ds = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID, ds.SOPInstanceUID, ds.Modality = meta.MediaStorageSOPClassUID, generate_uid(), "DX"
    ds.set_pixel_data((np.arange(80 * 60).reshape(80, 60) % 4096).astype(np.uint16), "MONOCHROME1", 12)
    ds.save_as(path, enforce_file_format=True)
    response = post(client, path.read_bytes(), "study", "application/octet-stream")
    assert response.status_code == 200, response.text
    assert (response.json()["width"], response.json()["height"]) == (60, 80)


def test_concurrent_requests(client: TestClient) -> None:
    uploads = [png_bytes((60 + 10 * i, 64), seed=i) for i in range(6)]
    sequential = [post(client, data).json()["probability"] for data in uploads]
    with ThreadPoolExecutor(max_workers=6) as pool:
        responses = list(pool.map(lambda data: post(client, data), uploads))
    assert [r.status_code for r in responses] == [200] * 6
    assert [r.json()["probability"] for r in responses] == pytest.approx(sequential, abs=1e-6)


def test_health_model_docs_and_page(client: TestClient) -> None:
    assert client.get("/api/health").json()["status"] == "ok"
    model = client.get("/api/model").json()
    assert model["architecture"] == "mobilenet_v2" and model["input_size"] == 64
    assert model["class_names"] == ["normal", "abnormal"] and model["summary"]["best_val_loss"] == 0.42
    assert model["max_upload_bytes"] == LIMIT
    assert client.get("/docs").status_code == 200
    assert "/api/predict" in client.get("/openapi.json").json()["paths"]
    page = client.get("/")
    assert page.status_code == 200 and "not for clinical use" in page.text
    assert "default-src 'self'" in page.headers["content-security-policy"]
    assert "http" not in page.text.replace("http-equiv", "")  # no CDN: everything is served locally
    assert client.get("/static/app.js").status_code == 200 and client.get("/static/style.css").status_code == 200


def test_serve_warns_when_binding_beyond_localhost(predictor, monkeypatch: pytest.MonkeyPatch,
                                                   capsys: pytest.CaptureFixture) -> None:
    import uvicorn

    from xraylens.cli import main
    from xraylens.cli.serve import is_loopback

    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost")
    assert not is_loopback("0.0.0.0") and not is_loopback("192.168.1.10")
    calls = []
    monkeypatch.setattr(uvicorn, "run", lambda app, **kw: calls.append(kw))
    assert main(["serve", predictor.source, "--host", "0.0.0.0", "--port", "9"]) == 0
    assert calls == [{"host": "0.0.0.0", "port": 9, "log_level": "info"}]
    assert "WARNING: binding 0.0.0.0" in capsys.readouterr().err
    assert main(["serve", predictor.source, "--port", "9"]) == 0
    assert calls[-1]["host"] == "127.0.0.1" and "WARNING" not in capsys.readouterr().err


# ---------------------------------------------------------------- hostile uploads and load (issue 11)


def rss_bytes() -> int:
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * 4096


@pytest.mark.parametrize(("width", "height", "refusal"), [
    (100_000, 100_000, "refused by Pillow's decompression-bomb limit"),  # 10 gigapixels: Pillow's own guard
    (20_000, 5_000, "20000x5000 = 100,000,000 pixels is over the limit of 2,000,000"),  # below Pillow's: ours
])
def test_decompression_bomb_is_refused_without_memory_growth(client: TestClient, width: int, height: int,
                                                             refusal: str) -> None:
    bomb = bomb_png(width, height)  # a 1 kB file
    assert len(bomb) < 2000
    post(client, png_bytes())  # warm up, so the measurement is of the bomb alone
    before = rss_bytes()
    response = post(client, bomb, "bomb.png")
    assert response.status_code == 422
    assert response.json()["detail"].startswith(f"bomb.png: {refusal}")
    assert rss_bytes() - before < 50 * 2**20  # decoding would need width x height bytes (x4 as float32)


def test_dicom_declaring_a_huge_pixel_array_is_refused(client: TestClient, tmp_path: Path) -> None:
    pytest.importorskip("pydicom")
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.1.1"
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    path = tmp_path / "huge.dcm"
    ds = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID, ds.SOPInstanceUID, ds.Modality = meta.MediaStorageSOPClassUID, generate_uid(), "DX"
    ds.Rows, ds.Columns, ds.BitsAllocated, ds.BitsStored, ds.HighBit = 65535, 65535, 16, 16, 15
    ds.SamplesPerPixel, ds.PhotometricInterpretation, ds.PixelRepresentation = 1, "MONOCHROME2", 0
    ds.PixelData = b"\0" * 64  # 8.6 GB declared, 64 bytes present
    ds.save_as(path, enforce_file_format=True)
    data = path.read_bytes()
    path.unlink()
    before = rss_bytes()
    response = post(client, data, "huge.dcm", "application/dicom")
    assert response.status_code == 422
    assert "huge.dcm: 65535x65535" in response.json()["detail"] and "before decoding" in response.json()["detail"]
    assert rss_bytes() - before < 50 * 2**20


@pytest.fixture
def held(predictor: Predictor, monkeypatch: pytest.MonkeyPatch):
    """Predictions that wait for ``release`` (after signalling ``entered``): requests pile up on demand."""
    import threading

    entered, release = threading.Semaphore(0), threading.Event()
    real = predictor.predict_image

    def slow(*args, **kwargs):
        entered.release()
        assert release.wait(30)
        return real(*args, **kwargs)

    monkeypatch.setattr(predictor, "predict_image", slow)
    yield entered, release
    release.set()


def test_past_its_limits_the_server_answers_503_with_retry_after(predictor: Predictor, held) -> None:
    """--max-concurrent 1 --max-queue 1: one computes, one waits, the third is told to come back later."""
    entered, release = held
    with TestClient(create_app(predictor, max_upload_bytes=LIMIT, max_concurrent=1, max_queue=1)) as c, \
            ThreadPoolExecutor(max_workers=2) as pool:
        first = pool.submit(post, c, png_bytes(seed=1))
        assert entered.acquire(timeout=30)  # the first is computing
        second = pool.submit(post, c, png_bytes(seed=2))
        for _ in range(300):  # until the second is inside, waiting for the slot
            if c.get("/api/health").json()["load"]["in_progress"] == 2:
                break
            time.sleep(0.05)
        assert c.get("/api/health").json()["load"] == {"in_progress": 2, "max_concurrent": 1, "max_queue": 1}
        third = post(c, png_bytes(seed=3))
        assert third.status_code == 503
        assert int(third.headers["Retry-After"]) >= 1 and "server busy" in third.json()["detail"]
        release.set()
        assert first.result(timeout=60).status_code == 200 and second.result(timeout=60).status_code == 200
        assert c.get("/api/health").json()["load"]["in_progress"] == 0
        assert post(c, png_bytes(seed=3)).status_code == 200  # once the load has passed, served again
        assert c.get("/api/model").json()["max_concurrent"] == 1


def test_serve_passes_the_concurrency_limits(predictor, monkeypatch: pytest.MonkeyPatch) -> None:
    import uvicorn

    from xraylens.cli import main

    apps = []
    monkeypatch.setattr(uvicorn, "run", lambda app, **kw: apps.append(app))
    assert main(["serve", predictor.source, "--max-concurrent", "3", "--max-queue", "5"]) == 0
    with TestClient(apps[0]) as c:
        assert c.get("/api/health").json()["load"] == {"in_progress": 0, "max_concurrent": 3, "max_queue": 5}
    assert main(["serve", predictor.source, "--max-concurrent", "0"]) == 2
