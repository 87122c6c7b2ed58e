"""The page in a real browser: Debian's Chromium driven by Playwright against uvicorn on a free local port.

Skipped (with the reason) when Chromium or Playwright is missing, unless
XRAYLENS_REQUIRE_BROWSER=1 (CI sets it): then a missing browser is a failure.
Set XRAYLENS_SCREENSHOT=path.png to keep a screenshot of the page after a prediction.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

pytestmark = [pytest.mark.browser, pytest.mark.slow]

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run", "--disable-quic"]


def _require_browser() -> None:
    missing = []
    if not (Path(CHROMIUM).exists() or shutil.which("chromium")):
        missing.append(f"Chromium not found at {CHROMIUM} (Debian: apt-get install chromium)")
    for module in ("playwright", "uvicorn", "fastapi"):
        try:
            __import__(module)
        except ImportError:
            missing.append(f"Python package {module} not installed (pip install 'xraylens[dev]')")
    if missing:
        reason = "; ".join(missing)
        if os.environ.get("XRAYLENS_REQUIRE_BROWSER") == "1":
            pytest.fail(f"XRAYLENS_REQUIRE_BROWSER=1 but {reason}")
        pytest.skip(reason)


@pytest.fixture(scope="module")
def server_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    _require_browser()
    import uvicorn

    from xraylens.config import ModelConfig
    from xraylens.data.preprocess import Preprocessing
    from xraylens.inference import Predictor
    from xraylens.models import CheckpointMeta, create_model, save_checkpoint
    from xraylens.server.app import create_app

    meta = CheckpointMeta(model=ModelConfig(), preprocessing=Preprocessing.for_channels(64, 1))
    ckpt = save_checkpoint(tmp_path_factory.mktemp("ckpt") / "m.ckpt", create_model("mobilenet_v2"), meta)
    app = create_app(Predictor.from_checkpoint(ckpt))
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            pytest.fail("uvicorn did not start within 30 s")
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(timeout=10)


@pytest.fixture(scope="module")
def page(server_url: str):
    from playwright.sync_api import sync_playwright

    executable = CHROMIUM if Path(CHROMIUM).exists() else shutil.which("chromium")
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=executable, headless=True, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        page.goto(server_url + "/")
        yield page
        browser.close()


def xray_png(path: Path) -> Path:
    from PIL import Image

    from xraylens.export import synthetic_radiograph

    image = synthetic_radiograph(np.random.default_rng(0), 520, 400)
    Image.fromarray((image * 255).astype(np.uint8)).save(path)
    return path


def test_upload_shows_verdict_overlay_and_boxes(page, tmp_path: Path) -> None:
    from playwright.sync_api import expect

    expect(page.locator(".disclaimer")).to_contain_text("Research software — not for clinical use")
    expect(page.locator("#model-info")).to_contain_text("mobilenet_v2")
    page.set_input_files("#file-input", str(xray_png(tmp_path / "wrist.png")))
    expect(page.locator("#verdict")).to_have_text(re.compile(r"^(Normal|Abnormal)$"), timeout=60_000)
    heatmap = page.locator("#heatmap")
    expect(heatmap).to_be_visible()
    assert page.evaluate("document.getElementById('heatmap').naturalWidth") == 400
    assert page.evaluate("document.getElementById('xray').naturalHeight") == 520
    expect(page.locator("#probability")).to_contain_text("%")
    expect(page.locator("#explanation")).to_contain_text("P(abnormal)")
    assert page.locator("#boxes rect").count() >= 1
    shot = os.environ.get("XRAYLENS_SCREENSHOT")
    page.screenshot(path=shot or str(tmp_path / "page.png"), full_page=True)
    page.locator("#opacity").fill("80")  # the slider drives the overlay's opacity
    assert page.evaluate("getComputedStyle(document.getElementById('heatmap')).opacity") == "0.8"
    page.locator("#show-boxes").uncheck()
    expect(page.locator("#boxes")).to_be_hidden()


def test_bad_file_shows_a_clear_error(page, tmp_path: Path) -> None:
    from playwright.sync_api import expect

    fake = tmp_path / "notes.png"
    fake.write_text("not an image at all\n")
    page.set_input_files("#file-input", str(fake))
    error = page.locator("#error")
    expect(error).to_be_visible(timeout=30_000)
    expect(error).to_contain_text("notes.png")
    expect(error).to_contain_text("not a PNG, JPEG or DICOM")
