#!/usr/bin/env python
"""tools/serve.py over loopback HTTP vs calling DefaultPredictor in-process, on the same model.

The model is the tiny Mask R-CNN (random init, eval; configs/tiny/mask_rcnn_R_18_tiny.yaml at
a 512 px test size). The script starts ``tools/serve.py`` itself (127.0.0.1, a free port) and
sends ``--requests`` JPEGs of 512² from ``--concurrency`` concurrent httpx clients. Prints:

- ``serve_throughput_ratio``: requests/s of the server (``--max-batch 8``) ÷ images/s of a loop
  calling ``DefaultPredictor`` on the decoded images one by one (target ≥ 0.8 on CPU): what
  HTTP, JPEG decoding, the queue and the JSON/RLE records cost;
- ``serve_vs_worker_thread_ratio``: the same, against the loop run in a worker thread, as the
  server runs its model (on a loaded machine the main thread's loop is the slower of the two,
  and the first ratio then exceeds 1);
- ``batching_gain``: requests/s with ``--max-batch 8`` ÷ with ``--max-batch 1`` (on a CPU the
  model's work grows with the batch, so it may be near 1);
- p50 / p99 request latency (ms) of each server.
"""

import argparse
import asyncio
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import cv2
import httpx
import numpy as np
import torch

from d2seg.config import get_cfg
from d2seg.data.synthetic import render_sample
from d2seg.engine.predictor import DefaultPredictor
from d2seg.modeling import build_model

REPO_ROOT = Path(__file__).resolve().parents[1]
CONFIG = REPO_ROOT / "configs" / "tiny" / "mask_rcnn_R_18_tiny.yaml"
WARMUP = 8


def model_opts(size: int) -> list[str]:
    return ["MODEL.ROI_HEADS.NUM_CLASSES", "1", "INPUT.MIN_SIZE_TEST", str(size),
            "INPUT.MAX_SIZE_TEST", str(size), "DATASETS.THING_CLASSES", "('balloon',)"]


def in_process(predictor: DefaultPredictor, images: list[np.ndarray]) -> float:
    """Images/s of the predictor called on each decoded RGB image in turn (the server decodes
    the same JPEGs to the same pixels: a random-init model's detection count, and so its mask
    work, depends on the channel order)."""
    for image in images[:2]:
        predictor(image, format="RGB")
    start = time.perf_counter()
    for image in images:
        predictor(image, format="RGB")
    return len(images) / (time.perf_counter() - start)


def in_worker_thread(predictor: DefaultPredictor, images: list[np.ndarray]) -> float:
    """:func:`in_process`, run in a thread of its own as the server runs its model: on a
    loaded machine torch's intra-op threads serve the main thread much worse than a worker
    thread, so this is the like-for-like reference of the server's own cost."""
    rate: list[float] = []
    worker = threading.Thread(target=lambda: rate.append(in_process(predictor, images)))
    worker.start()
    worker.join()
    return rate[0]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


async def _load(url: str, bodies: list[bytes], concurrency: int) -> tuple[float, np.ndarray]:
    """(requests/s, latencies in ms) of POSTing every body, ``concurrency`` at a time."""
    limit = asyncio.Semaphore(concurrency)
    latencies = []
    async with httpx.AsyncClient(timeout=300, limits=httpx.Limits(
            max_connections=concurrency)) as client:
        async def post(body: bytes, record: bool) -> None:
            async with limit:
                started = time.perf_counter()
                response = await client.post(f"{url}/v1/predict", content=body,
                                             headers={"Content-Type": "image/jpeg"})
                assert response.status_code == 200, response.text
                if record:
                    latencies.append((time.perf_counter() - started) * 1000)

        await asyncio.gather(*(post(b, False) for b in bodies[:WARMUP]))
        start = time.perf_counter()
        await asyncio.gather(*(post(b, True) for b in bodies))
        seconds = time.perf_counter() - start
    return len(bodies) / seconds, np.asarray(latencies)


def served(weights: Path, size: int, max_batch: int, bodies: list[bytes],
           concurrency: int) -> tuple[float, np.ndarray]:
    """Start tools/serve.py with ``max_batch``, load it, stop it."""
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    process = subprocess.Popen(
        [sys.executable, str(REPO_ROOT / "tools" / "serve.py"), "--config-file", str(CONFIG),
         "--port", str(port), "--max-batch", str(max_batch), "--max-queue", "256",
         "MODEL.WEIGHTS", str(weights), *model_opts(size)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=REPO_ROOT,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(
            [str(REPO_ROOT), *filter(None, [os.environ.get("PYTHONPATH")])])},
    )
    try:
        deadline = time.monotonic() + 300
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"tools/serve.py exited {process.returncode}")
            try:
                if httpx.get(f"{url}/v1/health", timeout=5).json()["model_loaded"]:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("tools/serve.py did not start within 300 s")
            time.sleep(0.2)
        return asyncio.run(_load(url, bodies, concurrency))
    finally:
        process.terminate()
        process.wait(timeout=60)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--concurrency", type=int, default=8)
    args = parser.parse_args()
    images = [np.ascontiguousarray(render_sample("balloons", seed=1, size=(args.size, args.size),
                                                 index=i)["image"]) for i in range(16)]
    bodies = [cv2.imencode(".jpg", images[i % len(images)][:, :, ::-1])[1].tobytes()
              for i in range(args.requests)]
    with tempfile.TemporaryDirectory() as tmp:
        cfg = get_cfg()
        cfg.merge_from_file(str(CONFIG))
        cfg.merge_from_list(model_opts(args.size))
        torch.manual_seed(0)
        weights = Path(tmp) / "random.pth"
        torch.save(build_model(cfg).state_dict(), weights)
        cfg.MODEL.WEIGHTS = str(weights)
        cfg.MODEL.DEVICE = "auto"  # as tools/serve.py
        print(f"--- tiny Mask R-CNN (random init), {args.size}² JPEGs, {args.requests} requests "
              f"at concurrency {args.concurrency}")
        decoded = [cv2.imdecode(np.frombuffer(b, np.uint8), cv2.IMREAD_COLOR)[:, :, ::-1].copy()
                   for b in bodies]
        predictor = DefaultPredictor(cfg)
        reference = in_process(predictor, decoded)
        print(f"in-process DefaultPredictor: {reference:.2f} images/s")
        threaded = in_worker_thread(predictor, decoded)
        print(f"in-process DefaultPredictor in a worker thread: {threaded:.2f} images/s")
        del predictor
        results = {}
        for max_batch in (8, 1):
            rate, latencies = served(weights, args.size, max_batch, bodies, args.concurrency)
            results[max_batch] = rate
            p50, p99 = np.percentile(latencies, [50, 99])
            print(f"tools/serve.py --max-batch {max_batch}: {rate:.2f} requests/s, latency p50 "
                  f"{p50:.0f} ms, p99 {p99:.0f} ms")
    print(f"serve_throughput_ratio: {results[8] / reference:.3f}")
    print(f"serve_vs_worker_thread_ratio: {results[8] / threaded:.3f}  (what HTTP, decoding, "
          f"the queue and the records cost; 1 = nothing)")
    print(f"batching_gain: {results[8] / results[1]:.3f}")


if __name__ == "__main__":
    main()
