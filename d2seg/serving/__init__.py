"""Serving a trained model over HTTP (``tools/serve.py``; extra ``[serve]``: fastapi, uvicorn,
python-multipart): :func:`create_app` is the FastAPI app, importable for gunicorn/uvicorn."""

from d2seg.serving.app import create_app
from d2seg.engine.model_source import ModelSource
from d2seg.serving.settings import ServeSettings

__all__ = ["ModelSource", "ServeSettings", "create_app"]
