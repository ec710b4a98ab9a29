"""Soak and bad input: ``tools/serve.py`` in its own process takes 300 requests, 10% of them
malformed, from 4 concurrent clients; each malformed one gets its 4xx, nothing gets a 5xx,
health still answers and the server's memory grows by less than 50 MB."""

import os
import random
import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import psutil
import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
REQUESTS, MALFORMED_SHARE, CLIENTS = 300, 0.10, 4
MAX_RSS_GROWTH = 50 * 2**20
TOKEN = "soak-test-token"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def server(balloon_run, tmp_path):
    """``(base URL, psutil.Process)`` of ``tools/serve.py`` on the tiny model, with a token
    and a 200 kB body limit; terminated at the end."""
    (tmp_path / "token.txt").write_text(TOKEN + "\n")
    port = _free_port()
    log = open(tmp_path / "server.log", "w")
    process = subprocess.Popen(
        [sys.executable, str(REPO_ROOT / "tools" / "serve.py"), "--run", str(balloon_run["run"]),
         "--port", str(port), "--token-file", str(tmp_path / "token.txt"),
         "--max-bytes", "200000", "--max-batch", "4"],
        stdout=log, stderr=subprocess.STDOUT, cwd=REPO_ROOT,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(
            [str(REPO_ROOT), *filter(None, [os.environ.get("PYTHONPATH")])])},
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            assert process.poll() is None, (tmp_path / "server.log").read_text()
            try:
                if httpx.get(f"{url}/v1/health", timeout=5).json()["model_loaded"]:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, (tmp_path / "server.log").read_text()
            time.sleep(0.2)
        yield url, psutil.Process(process.pid)
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
        log.close()


@pytest.mark.slow
def test_300_requests_with_malformed_ones_no_5xx_bounded_memory(server, balloon_run,
                                                                bad_uploads):
    url, process = server
    photos = [p.read_bytes() for p in sorted(balloon_run["images"].glob("*.jpg"))]
    auth = {"Authorization": f"Bearer {TOKEN}"}
    kinds = {name: (body, {**auth, "Content-Type": content_type}, status)
             for name, (body, content_type, status) in bad_uploads.items() if name != "text"}
    kinds["wrong token"] = (photos[0], {"Authorization": "Bearer nope",
                                        "Content-Type": "image/jpeg"}, 401)
    malformed = round(REQUESTS * MALFORMED_SHARE)
    plan = [(name, *kinds[name]) for name in list(kinds) * (malformed // len(kinds))]
    plan += [("photo", photos[i % len(photos)], {**auth, "Content-Type": "image/jpeg"}, 200)
             for i in range(REQUESTS - len(plan))]
    random.Random(0).shuffle(plan)
    assert len(plan) == REQUESTS and sum(p[0] != "photo" for p in plan) == malformed

    with httpx.Client(timeout=120) as client:
        def send(request):
            name, body, headers, _ = request
            return client.post(f"{url}/v1/predict", content=body, headers=headers).status_code

        for photo in photos[:8]:  # warm-up: first-touch allocations are not growth
            assert client.post(f"{url}/v1/predict", content=photo,
                               headers={**auth, "Content-Type": "image/jpeg"}).status_code == 200
        before = process.memory_info().rss
        with ThreadPoolExecutor(CLIENTS) as pool:
            statuses = list(pool.map(send, plan))
        after = process.memory_info().rss
        health = client.get(f"{url}/v1/health")
    wrong = [(p[0], p[3], s) for p, s in zip(plan, statuses) if s != p[3]]
    assert not wrong, wrong[:10]
    assert all(s < 500 for s in statuses)
    assert health.status_code == 200 and health.json()["status"] == "ok"
    assert after - before < MAX_RSS_GROWTH, f"RSS grew {(after - before) / 2**20:.1f} MB"
