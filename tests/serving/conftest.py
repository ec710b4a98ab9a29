"""Fixtures of the serving tests: a tiny trained balloon model, and a server on a free
loopback port in a thread of the test process that is stopped at the end of the block."""

import contextlib
import socket
import threading
import time
from pathlib import Path
from typing import Iterator

import httpx
import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def balloon_run(tmp_path_factory, train_run, balloon_split) -> dict:
    """A 12-iteration Mask R-CNN on the synthetic balloons (it finds a few, with low scores)."""
    run = tmp_path_factory.mktemp("serve_balloons") / "run"
    train_run(
        str(REPO_ROOT / "configs" / "tiny" / "mask_rcnn_R_18_tiny.yaml"), run,
        "DATASETS.TRAIN", f"('{balloon_split['train']}',)", "DATASETS.TEST", "()",
        "MODEL.ROI_HEADS.NUM_CLASSES", "0", "INPUT.MIN_SIZE_TEST", "96",
        "INPUT.MAX_SIZE_TEST", "128", "SOLVER.MAX_ITER", "12", "DATALOADER.NUM_WORKERS", "0",
    )
    return {"run": run, **balloon_split}


@contextlib.contextmanager
def serving(app, timeout: float = 60.0) -> Iterator[str]:
    """Run ``app`` with uvicorn on 127.0.0.1 (a free port) until the block ends; yields the
    base URL once ``/v1/health`` reports the model loaded."""
    import uvicorn

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + timeout
        while True:
            try:
                health = httpx.get(f"{url}/v1/health", timeout=5).json()
                if health["status"] != "loading":
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "the server did not start"
            time.sleep(0.1)
        yield url
    finally:
        server.should_exit = True
        thread.join(timeout=30)
        sock.close()


@pytest.fixture
def serve():
    """``with serve(app) as url:`` (see :func:`serving`)."""
    return serving


def _png_header(width: int, height: int) -> bytes:
    """A PNG that declares ``width``×``height`` RGB pixels but holds almost none: a
    decompression bomb's header."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header)
            + chunk(b"IDAT", zlib.compress(b"\0" * 1024)) + chunk(b"IEND", b""))


@pytest.fixture(scope="session")
def png_header():
    """``png_header(width, height) -> bytes``: a decompression bomb's PNG header."""
    return _png_header


@pytest.fixture(scope="session")
def bad_uploads(balloon_split) -> dict[str, tuple[bytes, str, int]]:
    """Malformed uploads: name → (body, Content-Type, the status the server must answer).
    ``oversized`` is 300 kB: serve it with ``max_bytes`` below that."""
    import numpy as np

    photo = sorted(balloon_split["images"].glob("*.jpg"))[0].read_bytes()
    random_bytes = np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes()
    return {
        "random bytes": (random_bytes, "image/jpeg", 415),
        "truncated JPEG": (photo[: len(photo) // 3], "image/jpeg", 422),
        "30000x30000 PNG header": (_png_header(30000, 30000), "image/png", 413),
        "empty body": (b"", "image/jpeg", 422),
        "text": (b"hello", "text/plain", 415),
        "oversized": (photo + b"\0" * 300_000, "image/jpeg", 413),
    }
