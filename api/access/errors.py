"""The one error of access checks: an HTTP status, a message for the caller, and maybe Retry-After."""

from __future__ import annotations


class AccessError(Exception):
    def __init__(self, status: int, message: str, *, retry_after_s: int | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        # For a 429: when trying again can succeed (the Retry-After header), so that apps and
        # platforms back off instead of hammering the limit and extending it.
        self.retry_after_s = retry_after_s
