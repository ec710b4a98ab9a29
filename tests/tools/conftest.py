"""Fixtures of the tool tests: small generated datasets in the layouts the converters read, and
a throw-away PostgreSQL server."""

import glob
import os
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image


@pytest.fixture
def camvid_folder(tmp_path) -> Path:
    """``images/`` + ``labels/*_L.png``: 4 images with label maps, sky (0) on top, road (1)
    below (one component each), a void strip (11) on the left."""
    root = tmp_path / "camvid"
    (root / "images").mkdir(parents=True)
    (root / "labels").mkdir()
    values = np.zeros((24, 32), np.uint8)
    values[12:] = 1
    values[:, :2] = 11
    for stem in ("a", "b", "c", "d"):
        Image.new("RGB", (32, 24), (1, 2, 3)).save(root / "images" / f"{stem}.png")
        Image.fromarray(values).save(root / "labels" / f"{stem}_L.png")
    return root


def _postgres_bin() -> Path:
    """The newest ``/usr/lib/postgresql/<version>/bin`` (Debian's layout)."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"),
                   key=lambda p: int(Path(p).parent.parent.name))
    if not found:
        pytest.fail("no PostgreSQL server in /usr/lib/postgresql/*/bin; fix: run make system-deps "
                    "(installs Debian's postgresql package)")
    return Path(found[-1]).parent


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """``postgresql://d2seg:PASSWORD@127.0.0.1:PORT/tune`` of a server started for the session:
    a fresh cluster (initdb, as the ``postgres`` user when the tests run as root, which initdb
    refuses) listening on 127.0.0.1 only, with its unix socket in the same temporary folder
    (outside pytest's 0700 basetemp, which that user cannot enter); stopped and deleted after."""
    bin_dir = _postgres_bin()
    as_server_user = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
    root = Path(tempfile.mkdtemp(prefix="d2seg-pg-"))
    password = os.urandom(8).hex()
    (root / "pw").write_text(password, encoding="utf-8")
    if as_server_user:
        shutil.chown(root, "postgres")
        shutil.chown(root / "pw", "postgres")
    data, port = root / "data", _free_port()

    def server(tool: str, *args: str) -> None:
        try:
            subprocess.run([*as_server_user, str(bin_dir / tool), *args], check=True,
                           capture_output=True, text=True, timeout=120)
        except subprocess.CalledProcessError as e:
            log = root / "server.log"
            pytest.fail(f"PostgreSQL: {tool} failed: {e.stderr.strip()}"
                        + (f"\n{log.read_text()[-2000:]}" if log.exists() else ""))

    try:
        server("initdb", "-D", str(data), "-U", "d2seg", f"--pwfile={root / 'pw'}",
               "--auth-local=trust", "--auth-host=scram-sha-256", "-E", "UTF8", "--locale=C",
               "--no-sync")
        server("pg_ctl", "-D", str(data), "-l", str(root / "server.log"), "-w", "-o",
               f"-c listen_addresses=127.0.0.1 -p {port} -c unix_socket_directories={root} "
               f"-c fsync=off", "start")
        try:
            server("createdb", "-h", str(root), "-p", str(port), "-U", "d2seg", "tune")
            yield f"postgresql://d2seg:{password}@127.0.0.1:{port}/tune"
        finally:
            server("pg_ctl", "-D", str(data), "-m", "fast", "-w", "stop")
    finally:
        shutil.rmtree(root, ignore_errors=True)
