"""The HTTP service: :func:`create_app` builds the FastAPI app ``tools/serve.py`` runs.

Routes: ``POST /v1/predict`` (an image as the raw body or the multipart field ``file``;
``render=json|overlay|labelme``, ``score_threshold``, ``polygons``), ``GET /v1/health``,
``GET /v1/model``, the page at ``/`` (``static/``), OpenAPI at ``/docs`` and
``/openapi.json``. Every error is JSON ``{"error": {"status", "message"}, "request_id"}``,
never a stack trace; every request is logged with its id (also the ``X-Request-ID`` header),
status and latency. With a token, every route but ``/v1/health`` and the page's files needs
``Authorization: Bearer <token>`` (the page asks for it and sends it).
"""

import asyncio
import hmac
import json
import logging
import os
import time
import uuid
from contextlib import asynccontextmanager
from enum import Enum
from pathlib import Path

from fastapi import FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from fastapi_offline import FastAPIOffline
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

import d2seg
from d2seg.engine.predictor import DefaultPredictor
from d2seg.serving.decode import decode_image
from d2seg.serving.errors import ApiError
from d2seg.engine.model_source import ModelSource
from d2seg.serving.service import ModelService, filter_instances
from d2seg.serving.settings import TOKEN_ENV, ServeSettings

logger = logging.getLogger("d2seg.serving")

STATIC = Path(__file__).with_name("static")
APP_ENV = "D2SEG_SERVE_APP"  # the model and settings of app_from_environment, as JSON
UPLOAD_FIELD = "file"
_PUBLIC = ("/", "/v1/health")
_RAW_TYPES = ("image/", "application/octet-stream")
# The page loads nothing from elsewhere; it shows uploads as blob: URLs.
_PAGE_POLICY = "default-src 'self'; img-src 'self' blob: data:; object-src 'none'"


class Render(str, Enum):
    json = "json"
    overlay = "overlay"
    labelme = "labelme"


def _error(status: int, message: str, request: Request,
           headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": {"status": status, "message": message},
                         "request_id": getattr(request.state, "request_id", None)},
                        status_code=status, headers=headers)


def _authorized(request: Request, token: str) -> bool:
    scheme, _, given = request.headers.get("authorization", "").partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(given.strip().encode(),
                                                              token.encode())


async def read_body(request: Request, max_bytes: int) -> bytes:
    """The request body, refused (413) as soon as it is known to exceed ``max_bytes``: from
    ``Content-Length`` before reading anything, else while it streams in."""
    declared = request.headers.get("content-length")
    if declared is not None and not declared.isdigit():
        raise ApiError(400, f"bad Content-Length {declared!r}; fix: send the body's size")
    if declared is not None and int(declared) > max_bytes:
        raise ApiError(413, f"the body is {declared} bytes, more than the server's --max-bytes "
                            f"{max_bytes}; fix: send a smaller image")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > max_bytes:
            raise ApiError(413, f"the body is more than the server's --max-bytes {max_bytes} "
                                f"bytes; fix: send a smaller image")
        chunks.append(chunk)
    return b"".join(chunks)


async def read_upload(request: Request, max_bytes: int) -> tuple[bytes, str | None]:
    """The uploaded image's bytes and its file name (multipart only): the raw body for
    ``image/*`` or ``application/octet-stream``, the field ``file`` of a multipart form."""
    content_type = request.headers.get("content-type", "application/octet-stream").lower()
    multipart = content_type.startswith("multipart/form-data")
    if not multipart and not content_type.startswith(_RAW_TYPES):
        raise ApiError(415, f"Content-Type {content_type} is not an image; fix: send the image "
                            f"as the body (Content-Type image/jpeg, image/png, image/tiff) or "
                            f"as the multipart field '{UPLOAD_FIELD}' (curl: -H 'Content-Type: "
                            f"image/jpeg' --data-binary @photo.jpg, or -F {UPLOAD_FIELD}=@photo.jpg)")
    body = await read_body(request, max_bytes)
    if not multipart:
        return body, None

    async def replay() -> dict:
        return {"type": "http.request", "body": body, "more_body": False}

    try:
        form = await Request(request.scope, replay).form(max_files=1, max_fields=8,
                                                         max_part_size=max_bytes)
    except StarletteHTTPException as e:  # a malformed multipart body
        raise ApiError(422, f"the multipart body cannot be parsed ({e.detail}); fix: send "
                            f"one file in the field '{UPLOAD_FIELD}'") from e
    upload = form.get(UPLOAD_FIELD)
    if upload is None or isinstance(upload, str):
        raise ApiError(422, f"the multipart form has no file field '{UPLOAD_FIELD}'; fix: "
                            f"curl -F {UPLOAD_FIELD}=@photo.jpg ...")
    return await upload.read(), Path(upload.filename or "").name or None


def create_app(model: str | os.PathLike | ModelSource | DefaultPredictor,
               settings: ServeSettings | None = None) -> FastAPI:
    """The serving app of one model.

    Args:
        model: a training run's folder (config.yaml + checkpoints), a :class:`ModelSource`,
            or a loaded :class:`DefaultPredictor`. A run or source is loaded when the app
            starts, in a thread: ``/v1/health`` answers ``model_loaded: false`` and
            ``/v1/predict`` 503 until it is ready.
        settings: batching, limits, token and CORS (default :class:`ServeSettings`).

    Example::

        # app.py, then: uvicorn app:app --host 127.0.0.1 --port 8000
        from d2seg.serving import create_app

        app = create_app("output/demo/balloons_run")
    """
    settings = settings or ServeSettings()
    if isinstance(model, (str, os.PathLike)):
        model = ModelSource(run=os.fspath(model))
    service = ModelService(model, settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        loading = asyncio.create_task(run_in_threadpool(service.load))
        yield
        await loading
        service.stop()

    # fastapi-offline serves Swagger UI's files itself: /docs works without a CDN, offline.
    app = FastAPIOffline(title="d2seg serve", version=d2seg.__version__, lifespan=lifespan,
                         description="Segmentation predictions of one trained d2seg model.",
                         redoc_url=None, static_url="/docs-static")
    app.state.service = service

    @app.exception_handler(ApiError)
    async def api_error(request: Request, e: ApiError) -> JSONResponse:
        return _error(e.status, e.message, request, e.headers)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, e: StarletteHTTPException) -> JSONResponse:
        return _error(e.status_code, str(e.detail), request, e.headers)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, e: RequestValidationError) -> JSONResponse:
        problems = "; ".join(f"{'.'.join(map(str, err['loc']))}: {err['msg']}"
                             for err in e.errors())
        return _error(422, f"invalid request: {problems}", request)

    @app.exception_handler(Exception)
    async def internal(request: Request, e: Exception) -> JSONResponse:
        logger.exception(f"{getattr(request.state, 'request_id', '-')} failed")
        return _error(500, "internal error; the server log has the details", request)

    @app.middleware("http")
    async def guard_and_log(request: Request, call_next) -> Response:
        request.state.request_id = uuid.uuid4().hex[:12]
        started = time.perf_counter()
        path = request.url.path
        public = path in _PUBLIC or path.startswith("/static/")
        status = 500
        try:
            if settings.token is not None and not public and not _authorized(request,
                                                                             settings.token):
                response = _error(401, "missing or wrong access token; fix: send "
                                       "'Authorization: Bearer <token>'", request,
                                  {"WWW-Authenticate": "Bearer"})
            else:
                response = await call_next(request)
            status = response.status_code
        finally:
            logger.info(f"{request.state.request_id} {request.method} {path} {status} "
                        f"{(time.perf_counter() - started) * 1000:.1f} ms")
        response.headers["X-Request-ID"] = request.state.request_id
        response.headers["X-Content-Type-Options"] = "nosniff"
        return response

    if settings.cors_origins:  # added last: outside the token check, so preflights pass
        app.add_middleware(CORSMiddleware, allow_origins=list(settings.cors_origins),
                           allow_methods=["GET", "POST"],
                           allow_headers=["Authorization", "Content-Type"])

    @app.post("/v1/predict", summary="Predict on one image",
              response_description="records (JSON), an overlay (image/png) or a Labelme file")
    async def predict(
        request: Request,
        render: Render = Render.json,
        score_threshold: float | None = Query(None, ge=0, le=1, description=(
            "drop instances scoring below (default: the model's SCORE_THRESH_TEST)")),
        polygons: bool = Query(False, description="add outer-contour polygons to instances"),
    ) -> Response:
        """The image as the body (``image/jpeg|png|tiff``) or the multipart field ``file``."""
        started = time.perf_counter()
        input_format, channels = service.decoding()
        data, filename = await read_upload(request, settings.max_bytes)
        image, suffix = await run_in_threadpool(decode_image, data, input_format, channels,
                                                settings.max_pixels)
        decoded = time.perf_counter()
        result = await service.submit(image)
        predicted = time.perf_counter()
        outputs = filter_instances(result.outputs, score_threshold)
        height, width = image.shape[:2]
        if render is Render.overlay:
            return Response(await run_in_threadpool(service.overlay_png, image, outputs),
                            media_type="image/png")
        if render is Render.labelme:
            return JSONResponse(await run_in_threadpool(
                service.labelme, outputs, data, filename or f"image{suffix}", height, width))
        answer = await run_in_threadpool(service.records, outputs, height, width, polygons)
        done = time.perf_counter()
        answer["batch_size"] = result.batch_size
        answer["timing_ms"] = {
            "decode": round((decoded - started) * 1000, 2),
            "queue": round(result.queued_s * 1000, 2),
            "inference": round(result.inference_s * 1000, 2),
            "encode": round((done - predicted) * 1000, 2),
            "total": round((done - started) * 1000, 2),
        }
        return JSONResponse(answer)

    @app.get("/v1/health", summary="Liveness and whether the model is loaded")
    async def health() -> dict:
        status = "ok" if service.loaded else ("error" if service.error else "loading")
        answer = {"status": status, "model_loaded": service.loaded,
                  "queue_depth": service.queue.depth if service.queue else 0}
        if service.error:
            answer["error"] = service.error
        return answer

    @app.get("/v1/model", summary="The model: tasks, classes, input format, weights sha256")
    async def model_info() -> dict:
        service.decoding()  # 503 until loaded
        return service.info

    @app.get("/", include_in_schema=False)
    async def page() -> FileResponse:
        return FileResponse(STATIC / "index.html", headers={"Content-Security-Policy":
                                                            _PAGE_POLICY})

    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    return app


def app_from_environment() -> FastAPI:
    """The app of ``$D2SEG_SERVE_APP`` (``{"source": ModelSource fields, "settings":
    ServeSettings fields}``, JSON) with the token of ``$D2SEG_SERVE_TOKEN``: the factory each
    ``tools/serve.py --workers N`` process calls (``uvicorn --factory``)."""
    spec = json.loads(os.environ[APP_ENV])
    settings = {**spec["settings"], "cors_origins": tuple(spec["settings"]["cors_origins"])}
    return create_app(ModelSource.from_dict(spec["source"]),
                      ServeSettings(**settings, token=os.environ.get(TOKEN_ENV) or None))
