"""Where a study lives: an SQLite file, a journal file, or a database server.

* ``sqlite:////abs/path`` (SQLAlchemy's form; default ``OUTPUT/study.db``): one machine, a
  few processes.
* ``journal:///abs/path`` (or ``journal://relative/path``): Optuna's
  :class:`~optuna.storages.JournalStorage` on an append-only file; many processes on one
  machine or on NFS.
* ``postgresql://user:pass@host/db``, ``mysql+pymysql://...``: several machines (needs the
  database's Python driver: ``psycopg[binary]``, SQLAlchemy's default for ``postgresql://``, is
  pinned in requirements.txt; ``postgresql+psycopg2://`` selects ``psycopg2-binary``).

Database storages record a heartbeat of each running trial: a trial whose process stopped
beating for :data:`GRACE_SECONDS` is marked failed and retried by the next worker that looks
(:func:`d2seg.tuning.worker.retry_trial`). Journal files have no heartbeat; there a worker
checks whether the process that runs a trial is still alive on its machine.

Example::

    from d2seg.tuning.storage import open_storage

    storage = open_storage("journal:///tmp/study.log")
"""

import os
import warnings
from collections.abc import Callable
from pathlib import Path

import optuna
from optuna.storages import BaseStorage, JournalStorage, RDBStorage
from optuna.storages.journal import JournalFileBackend

from d2seg.errors import ConfigError

HEARTBEAT_SECONDS = 20
GRACE_SECONDS = 60
_SCHEMES = "sqlite:///PATH, journal:///PATH, postgresql://..., mysql://..."


def default_storage_url(output: str | os.PathLike) -> str:
    return f"sqlite:///{Path(output).resolve() / 'study.db'}"


def check_storage_url(url: str) -> None:
    """Refuse a URL of no supported kind, or a file URL whose folder does not exist, before
    anything is created."""
    scheme = url.split("://", 1)[0] if "://" in url else ""
    if scheme in ("sqlite", "journal"):
        path = _file_path(url)
        if not path or not Path(path).parent.is_dir():
            raise ConfigError(
                f"--storage {url}: folder {Path(path).parent if path else '?'} does not exist; "
                f"fix: create it first"
            )
        return
    if scheme.split("+")[0] not in ("postgresql", "mysql"):
        raise ConfigError(f"--storage {url}: unknown kind of storage; fix: use one of {_SCHEMES}")


def open_storage(url: str, on_stale: Callable[[optuna.Study, optuna.trial.FrozenTrial], None]
                 | None = None) -> BaseStorage:
    """The Optuna storage at ``url`` (see the module docstring); ``on_stale`` is called for
    each trial a database heartbeat declares dead. A storage that cannot be opened raises
    :class:`ConfigError` naming the URL."""
    check_storage_url(url)
    if url.startswith("journal:"):
        try:
            return JournalStorage(JournalFileBackend(_file_path(url)))
        except OSError as e:
            raise ConfigError(f"--storage {url}: cannot open the journal file ({e}); fix: "
                              f"give a writable path") from None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return RDBStorage(
                url,
                heartbeat_interval=HEARTBEAT_SECONDS,
                grace_period=GRACE_SECONDS,
                heartbeat_stale_trial_callback=on_stale,
            )
    except ImportError as e:
        raise ConfigError(
            f"--storage {url}: no database driver ({e}); fix: pip install the driver, e.g. "
            f"'psycopg[binary]' for postgresql://, pymysql for mysql+pymysql://"
        ) from None
    except Exception as e:  # sqlalchemy's connection and URL errors have no common base
        message = " ".join(str(e).split())[:300]
        raise ConfigError(f"--storage {url}: cannot be opened ({message}); fix: check the URL, "
                          f"the server and its credentials") from None


def _file_path(url: str) -> str:
    """The file of a ``sqlite:///`` URL (SQLAlchemy's rule: ``sqlite:////abs``, ``sqlite:///rel``)
    or a ``journal://`` URL (what follows ``journal://``: ``journal:///abs``, ``journal://rel``)."""
    if url.startswith("sqlite:///"):
        return url[len("sqlite:///"):]
    return url[len("journal://"):]
