"""Atomic file and folder writes: readers never see a half-written output."""

import contextlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Iterator

from d2seg.errors import OutputExistsError

_TEMP_SUFFIX = ".tmp"


def _temp_prefix(target: Path) -> str:
    return f".{target.name}."


def interrupted_writes(folder: str | os.PathLike) -> dict[Path, str]:
    """Temp files that :func:`atomic_open` / :func:`atomic_directory` left in ``folder`` when
    their process was killed mid-write, mapped to the name of the file they were writing (which
    such a kill leaves untouched)."""
    folder = Path(folder)
    if not folder.is_dir():
        return {}
    leftovers = {}
    for path in folder.iterdir():
        if path.name.startswith(".") and path.name.endswith(_TEMP_SUFFIX):
            # ".{target}.{random, no dots}.tmp"
            leftovers[path] = path.name[1:].rsplit(".", 2)[0]
    return leftovers


def _default_mode(base: int) -> int:
    """``base`` (0o666 files, 0o777 folders) less the process umask: what open() would give."""
    umask = os.umask(0)
    os.umask(umask)
    return base & ~umask


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike, mode: str = "w", **kwargs: Any) -> Iterator[Any]:
    """Open a temp file beside ``path``; on success it replaces ``path`` in one rename.

    On an exception the temp file is removed and ``path`` keeps its previous content.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=_temp_prefix(path), suffix=_TEMP_SUFFIX, dir=path.parent)
    try:
        with os.fdopen(fd, mode, **kwargs) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        # mkstemp creates the file 0600; give it the mode a plain open() would have.
        os.chmod(tmp, _default_mode(0o666))
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def atomic_write_json(path: str | os.PathLike, obj: Any, indent: int | None = None) -> None:
    """Write ``obj`` as JSON to ``path`` atomically."""
    with atomic_open(path, "w", encoding="utf-8") as f:
        json.dump(obj, f, indent=indent)


@contextlib.contextmanager
def atomic_directory(path: str | os.PathLike, what: str = "output folder") -> Iterator[Path]:
    """Yield a temp folder beside ``path`` that becomes ``path`` when the block succeeds.

    ``path`` must not exist yet (a run never overwrites a previous run's outputs): if it does,
    :class:`OutputExistsError` names it as ``what`` (e.g. ``"--output"``) and nothing is
    created. Enter the block before slow work, so that the error comes first. On an exception
    the temp folder is deleted and ``path`` is never created.
    """
    path = Path(path)
    if path.exists():
        raise OutputExistsError(
            f"{what} {path} already exists; fix: choose a new {what} or delete it (a run never "
            f"overwrites a previous run's outputs)"
        )
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=_temp_prefix(path), suffix=_TEMP_SUFFIX, dir=path.parent))
    try:
        yield tmp
        os.chmod(tmp, _default_mode(0o777))
        os.replace(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
