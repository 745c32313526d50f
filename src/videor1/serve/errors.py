"""The one error type of the serving layer: a request the server answers with a 4xx/5xx and a message."""

from __future__ import annotations


class RequestError(Exception):
    """A request that cannot be served; `status` is the HTTP status to answer with."""

    def __init__(self, status: int, message: str, *, param: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.param = param
