"""The one error type a request handler raises: an HTTP status and a message for the client."""


class ApiError(Exception):
    """A request the server refuses: ``status`` (4xx, or 503 when busy), a one-line
    ``message`` that says what was wrong and how to fix it, and extra response ``headers``
    (e.g. ``Retry-After``)."""

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers or {}
