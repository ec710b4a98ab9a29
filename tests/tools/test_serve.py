"""``tools/serve.py`` as a user runs it: usage errors are one line and exit 2 before anything
binds; ``--workers 2`` serves from two processes."""

import contextlib
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import psutil
import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def serve_tool(run_tool):
    return lambda *argv: run_tool("serve", *argv)


def test_usage_errors_exit_2_with_one_line(serve_tool, tmp_path, monkeypatch):
    monkeypatch.delenv("D2SEG_SERVE_TOKEN", raising=False)
    (tmp_path / "empty.txt").write_text("")
    missing_run = str(tmp_path / "no_run")
    cases = [
        (["--run", missing_run, "--host", "0.0.0.0"], "--token-file"),
        (["--run", missing_run, "--host", "192.168.1.20"], "reachable from other machines"),
        (["--run", missing_run], "config.yaml not found"),
        (["--run", missing_run, "--token-file", tmp_path / "nope.txt"], "nope.txt not found"),
        (["--run", missing_run, "--token-file", tmp_path / "empty.txt"], "token is empty"),
        (["--run", missing_run, "--max-batch", "0"], "--max-batch 0"),
        (["--run", missing_run, "--config-file", "x.yaml"], "both given"),
        ([], "no model"),
    ]
    for argv, message in cases:
        code, _, err = serve_tool(*argv)
        assert code == 2, (argv, err)
        assert message in err and len(err.strip().splitlines()) == 1, (argv, err)
    # A token from the environment allows a public address: then it fails on the model.
    monkeypatch.setenv("D2SEG_SERVE_TOKEN", "from-the-environment")
    code, _, err = serve_tool("--run", missing_run, "--host", "0.0.0.0")
    assert code == 2 and "config.yaml not found" in err


@pytest.mark.slow
def test_two_workers_serve_the_model(train_run, balloon_split, tmp_path):
    run = tmp_path / "run"
    train_run(str(REPO_ROOT / "configs" / "tiny" / "mask_rcnn_R_18_tiny.yaml"), run,
              "DATASETS.TRAIN", f"('{balloon_split['train']}',)", "DATASETS.TEST", "()",
              "MODEL.ROI_HEADS.NUM_CLASSES", "0", "SOLVER.MAX_ITER", "2")
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    (tmp_path / "token.txt").write_text("worker-token\n")
    process = subprocess.Popen(
        [sys.executable, str(REPO_ROOT / "tools" / "serve.py"), "--run", str(run), "--port",
         str(port), "--workers", "2", "--token-file", str(tmp_path / "token.txt")],
        stdout=subprocess.DEVNULL, stderr=open(tmp_path / "log.txt", "w"), cwd=REPO_ROOT,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(
            [str(REPO_ROOT), *filter(None, [os.environ.get("PYTHONPATH")])])},
    )
    url = f"http://127.0.0.1:{port}"
    auth = {"Authorization": "Bearer worker-token"}
    try:
        deadline = time.monotonic() + 600  # two processes importing torch on a loaded CPU
        while True:
            assert process.poll() is None, (tmp_path / "log.txt").read_text()[-3000:]
            try:
                if httpx.get(f"{url}/v1/health", timeout=5).json()["model_loaded"]:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, (tmp_path / "log.txt").read_text()[-3000:]
            time.sleep(0.3)
        workers = []
        for child in psutil.Process(process.pid).children():
            with contextlib.suppress(psutil.NoSuchProcess):  # short-lived helpers come and go
                workers.append(child.name())
        photo = sorted(balloon_split["images"].glob("*.jpg"))[0]

        def predict() -> httpx.Response:
            while True:  # 503 + Retry-After while the other worker still loads its model
                answer = httpx.post(f"{url}/v1/predict", content=photo.read_bytes(), timeout=60,
                                    headers={**auth, "Content-Type": "image/jpeg"})
                if answer.status_code != 503 or time.monotonic() > deadline:
                    return answer
                time.sleep(0.5)

        answers = [predict() for _ in range(4)]
        model = httpx.get(f"{url}/v1/model", headers=auth)
        unauthorized = httpx.get(f"{url}/v1/model")
    finally:
        process.terminate()
        process.wait(timeout=60)
    assert len([name for name in workers if "python" in name.lower()]) >= 2
    assert all(a.status_code == 200 for a in answers)
    assert model.json()["name"] == "run" and unauthorized.status_code == 401
