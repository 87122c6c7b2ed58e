"""`xraylens serve`: the web page and the JSON API on one port.

Only argparse is imported here; FastAPI, uvicorn and the model load in the handler.
"""

from __future__ import annotations

import argparse
import ipaddress
import sys

_EPILOG = """\
Open http://HOST:PORT/ for the page (drop an X-ray, see the verdict, the
heatmap and the boxes), http://HOST:PORT/docs for the API.

  curl -F file=@xray.png http://127.0.0.1:8000/api/predict

The server binds 127.0.0.1 (this machine only) by default. It has no
authentication and no TLS: never expose it beyond a trusted network, and never
use it for clinical decisions (research software, not a medical device).

examples:
  xraylens serve runs/demo/checkpoints/best.ckpt
  xraylens serve best.ckpt --onnx best.onnx --port 8080 --max-upload-mb 50
"""


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "serve",
        help="web page + JSON API for predictions with heatmaps",
        description="Serve a checkpoint: a one-page web app and a JSON API (FastAPI + uvicorn).",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("checkpoint", metavar="CKPT", help="a .ckpt, or a .onnx export (then without heatmaps)")
    parser.add_argument("--host", default="127.0.0.1", help="interface to bind (default: 127.0.0.1, local only)")
    parser.add_argument("--port", type=int, default=8000, help="port (default: 8000)")
    parser.add_argument("--engine", choices=("torch", "onnx"), default=None,
                        help="inference engine (default: onnx for a .onnx file or with --onnx, else torch)")
    parser.add_argument("--onnx", metavar="FILE", default=None,
                        help="with a .ckpt: serve this ONNX export of it (heatmaps from the .ckpt); a .onnx is "
                             "only ever loaded when named here or as CKPT")
    parser.add_argument("--max-upload-mb", type=float, default=20.0, help="largest upload accepted (default: 20)")
    parser.add_argument("--max-pixels", type=int, default=None, help="largest image (pixels) accepted")
    parser.add_argument("--max-concurrent", type=int, default=2, metavar="N",
                        help="uploads decoded and predicted at once (default: 2); with --max-pixels this bounds "
                             "peak memory")
    parser.add_argument("--max-queue", type=int, default=32, metavar="M",
                        help="requests that may wait for a slot (default: 32); more get 503 with Retry-After")
    parser.add_argument("--method", default=None, help="CAM method (default: the checkpoint's, e.g. gradcam)")
    parser.add_argument("--device", default="cpu", help="cpu or cuda[:N] (default: cpu)")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from xraylens.cli import CLIError

    try:
        import uvicorn

        from xraylens.server.app import create_app
    except ImportError as exc:
        raise CLIError(f"the web app needs FastAPI and uvicorn: pip install 'xraylens[app]' ({exc})") from exc
    from xraylens.data.images import DEFAULT_MAX_PIXELS
    from xraylens.inference.predictor import Predictor
    from xraylens.models import CheckpointError

    if not 0 < args.max_upload_mb <= 1024:
        raise CLIError(f"--max-upload-mb must be in (0, 1024], got {args.max_upload_mb}")
    if args.max_concurrent < 1 or args.max_queue < 0:
        raise CLIError(f"--max-concurrent must be >= 1 and --max-queue >= 0, got {args.max_concurrent}, "
                       f"{args.max_queue}")
    max_pixels = args.max_pixels or DEFAULT_MAX_PIXELS
    if not is_loopback(args.host):
        print(_EXPOSED_WARNING.format(host=args.host), file=sys.stderr)
    try:
        predictor = Predictor.from_checkpoint(args.checkpoint, engine=args.engine, device=args.device,
                                              method=args.method, max_pixels=max_pixels, onnx=args.onnx)
    except (CheckpointError, FileNotFoundError, ImportError, ValueError) as exc:
        raise CLIError(str(exc)) from exc
    app = create_app(predictor, max_upload_bytes=int(args.max_upload_mb * 2**20), max_pixels=max_pixels,
                     max_concurrent=args.max_concurrent, max_queue=args.max_queue)
    print(f"xraylens: serving {args.checkpoint} ({predictor.card.architecture}, {predictor.engine.name}) "
          f"on http://{_url_host(args.host)}:{args.port}/  (API docs: /docs; Ctrl-C stops)", file=sys.stderr)
    uvicorn.run(app, host=args.host, port=args.port, log_level="info")
    return 0


_EXPOSED_WARNING = """\
############################################################################
WARNING: binding {host}: the server will be reachable from other machines.
It has NO authentication and NO TLS, and uploads may contain patient data.
Only do this on a trusted, isolated network. Research software: not for
clinical use. Use the default (--host 127.0.0.1) to keep it local.
############################################################################"""


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host
