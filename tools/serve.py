#!/usr/bin/env python
"""Serve a trained model over HTTP: a JSON API and a web page for acceptance testing.

    python tools/serve.py --run runs/balloon                      # http://127.0.0.1:8000/
    python tools/serve.py --config-file F.yaml MODEL.WEIGHTS W.pth --port 8080
    python tools/serve.py --run runs/balloon --host 0.0.0.0 --token-file token.txt

Routes: POST /v1/predict (an image as the body or the multipart field 'file'; ?render=overlay
gives a PNG, ?render=labelme a Labelme file; ?score_threshold=, ?polygons=true), GET /v1/health,
GET /v1/model, the page at /, OpenAPI at /docs. Requests arriving together are batched
(--max-batch, --batch-timeout-ms); when --max-queue wait already the answer is 503 with
Retry-After.

Safe by default: it binds 127.0.0.1; any other --host needs --token-file (or
$D2SEG_SERVE_TOKEN), and then every request but /v1/health and the page needs
'Authorization: Bearer <token>'. Bodies over --max-bytes and images over --max-pixels are
refused with 413 before they are read or decoded; CORS is off unless --cors-origin.

Exit status: 2 for a usage error (no such run, no weights, a public --host without a token).
"""

import argparse
import json
import logging
import os

from d2seg.errors import ConfigError
from d2seg.utils.cli import run_cli


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=__doc__.split("\n\n", 2)[2],
    )
    model = parser.add_argument_group("model")
    model.add_argument("--run", help="a training run's OUTPUT_DIR (config.yaml + checkpoints)")
    model.add_argument("--weights", help="with --run: a checkpoint other than the run's best")
    model.add_argument("--config-file", help="a config file (then MODEL.WEIGHTS in opts)")
    model.add_argument("opts", nargs=argparse.REMAINDER, default=[],
                       help="KEY VALUE config overrides, e.g. MODEL.WEIGHTS w.pth MODEL.DEVICE cpu")
    net = parser.add_argument_group("network and security")
    net.add_argument("--host", default="127.0.0.1",
                     help="address to bind (default 127.0.0.1: this machine only)")
    net.add_argument("--port", type=int, default=8000)
    net.add_argument("--token-file", help="file whose first line is the Bearer token (required "
                     "for a --host other than loopback, unless D2SEG_SERVE_TOKEN is set)")
    net.add_argument("--cors-origin", action="append", default=[], metavar="ORIGIN",
                     help="allow browser pages from ORIGIN (repeatable; default: CORS off)")
    net.add_argument("--workers", type=int, default=1,
                     help="uvicorn worker processes, one model each")
    limits = parser.add_argument_group("batching and limits")
    limits.add_argument("--max-batch", type=int, default=8, help="images per model call")
    limits.add_argument("--batch-timeout-ms", type=float, default=10.0,
                        help="how long a batch waits for more requests (ms)")
    limits.add_argument("--max-queue", type=int, default=64,
                        help="requests waiting for the model before 503 + Retry-After")
    limits.add_argument("--max-bytes", type=int, default=20_000_000,
                        help="largest request body in bytes (413 beyond)")
    limits.add_argument("--max-pixels", type=int, default=40_000_000,
                        help="largest image, width × height (413 beyond)")
    return parser


def main() -> int:
    args = build_parser().parse_args()
    if args.opts[:1] == ["--"]:
        args.opts = args.opts[1:]
    try:
        import uvicorn

        from d2seg.serving.app import APP_ENV, create_app
    except ImportError as e:
        raise ConfigError(f"serving needs the [serve] extra ({e}); fix: pip install "
                          f"'d2seg[serve]' (fastapi, uvicorn, python-multipart)") from e
    from d2seg.engine.model_source import ModelSource
    from d2seg.serving.settings import TOKEN_ENV, ServeSettings, check_exposure, read_token

    if args.workers < 1:
        raise ConfigError(f"--workers {args.workers}; fix: at least 1")
    settings = ServeSettings(
        max_batch=args.max_batch, batch_timeout_ms=args.batch_timeout_ms,
        max_queue=args.max_queue, max_bytes=args.max_bytes, max_pixels=args.max_pixels,
        token=read_token(args.token_file), cors_origins=tuple(args.cors_origin),
    )
    check_exposure(args.host, settings.token)
    source = ModelSource(run=args.run, weights=args.weights, config_file=args.config_file,
                         opts=tuple(args.opts))
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    # Loaded here, not in the server: a wrong run or weights file is exit 2 with its message.
    predictor = source.load()
    print(f"serving {source.name} on http://{args.host}:{args.port}/ (API: /v1/predict, "
          f"docs: /docs{'; token required' if settings.token else ''})", flush=True)
    server = {"host": args.host, "port": args.port, "access_log": False}
    if args.workers == 1:
        uvicorn.run(create_app(predictor, settings), **server)
        return 0
    del predictor  # each worker process loads its own
    os.environ[APP_ENV] = json.dumps({"source": source.to_dict(), "settings": settings.public()})
    if settings.token is not None:
        os.environ[TOKEN_ENV] = settings.token
    uvicorn.run("d2seg.serving.app:app_from_environment", factory=True, workers=args.workers,
                **server)
    return 0


if __name__ == "__main__":
    run_cli(main)
