"""What ``tools/serve.py`` lets a user choose: batching, queue and size limits, the access
token and CORS; and the rule that binds anything but loopback only with a token."""

import dataclasses
import ipaddress
import os
from dataclasses import dataclass
from pathlib import Path

from d2seg.errors import ConfigError

TOKEN_ENV = "D2SEG_SERVE_TOKEN"
_LOOPBACK_NAMES = ("localhost",)


@dataclass(frozen=True, kw_only=True)
class ServeSettings:
    """Limits and security of one server.

    Attributes:
        max_batch: requests grouped into one model call, at most.
        batch_timeout_ms: how long the first request of a batch waits for others (ms).
        max_queue: requests waiting for the model, at most; more are answered 503.
        max_bytes: largest request body (bytes); larger ones are answered 413 unread.
        max_pixels: largest image (width × height); larger ones are answered 413 from the
            header, before their pixels are decoded.
        token: the Bearer token every request but ``/v1/health`` and the page must carry
            (None: no check, allowed on loopback only).
        cors_origins: origins allowed by CORS (empty: CORS off).
    """

    max_batch: int = 8
    batch_timeout_ms: float = 10.0
    max_queue: int = 64
    max_bytes: int = 20_000_000
    max_pixels: int = 40_000_000
    token: str | None = None
    cors_origins: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        for name in ("max_batch", "max_queue", "max_bytes", "max_pixels"):
            if getattr(self, name) < 1:
                raise ConfigError(f"--{name.replace('_', '-')} {getattr(self, name)}; fix: give "
                                  f"a positive number")
        if self.batch_timeout_ms < 0:
            raise ConfigError(f"--batch-timeout-ms {self.batch_timeout_ms}; fix: give 0 or more")
        if self.token is not None and not self.token:
            raise ConfigError("the access token is empty; fix: put a long random string in "
                              "--token-file (e.g. python -c 'import secrets; "
                              "print(secrets.token_urlsafe(32))')")

    def public(self) -> dict:
        """The settings without the token (safe to log or pass on in the environment)."""
        return {k: v for k, v in dataclasses.asdict(self).items() if k != "token"}


def read_token(token_file: str | os.PathLike | None) -> str | None:
    """The access token: the first line of ``token_file``, else ``$D2SEG_SERVE_TOKEN``, else
    None."""
    if token_file is not None:
        path = Path(token_file)
        if not path.is_file():
            raise ConfigError(f"--token-file {path} not found; fix: write the token into it "
                              f"(one line) or set {TOKEN_ENV}")
        lines = path.read_text(encoding="utf-8").splitlines()
        return lines[0].strip() if lines else ""
    return os.environ.get(TOKEN_ENV) or None


def is_loopback(host: str) -> bool:
    """Whether ``host`` is reachable from this machine only (127.0.0.0/8, ::1, localhost)."""
    if host.lower() in _LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:  # a host name: it may resolve to any interface
        return False


def check_exposure(host: str, token: str | None) -> None:
    """Refuse to bind a non-loopback ``host`` without a token."""
    if token is None and not is_loopback(host):
        raise ConfigError(
            f"--host {host} makes the model reachable from other machines; fix: pass "
            f"--token-file FILE (or set {TOKEN_ENV}) so that requests need "
            f"'Authorization: Bearer <token>', or keep the default --host 127.0.0.1"
        )
