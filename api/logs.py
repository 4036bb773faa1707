"""Logging of the HTTP server without secrets: uvicorn's access log writes whole request lines, so
query parameters that carry credentials (a stream ticket, or a token some client put in a URL)
are replaced by `[redacted]` before any handler sees them."""

from __future__ import annotations

import copy
import logging
import re
from typing import Any
from urllib.parse import unquote_plus

import uvicorn.config

SECRET_PARAMETERS = frozenset(
    {"access_token", "token", "ticket", "api_key", "apikey", "key", "password", "secret"}
)
REDACTED = "[redacted]"
_QUERY = re.compile(r"\?[^\s\"]*")


def redact_query(text: str) -> str:
    """`text` with the values of credential-carrying query parameters replaced (names are matched
    case-insensitively and after percent-decoding, as the server itself would read them)."""

    def one(match: re.Match[str]) -> str:
        parts = []
        for pair in match.group(0)[1:].split("&"):
            name, sep, _value = pair.partition("=")
            if sep and unquote_plus(name).strip().lower() in SECRET_PARAMETERS:
                pair = f"{name}={REDACTED}"
            parts.append(pair)
        return "?" + "&".join(parts)

    return _QUERY.sub(one, text)


class RedactSecrets(logging.Filter):
    """Rewrites a record's message arguments (uvicorn's access log passes the path as one)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple):
            record.args = tuple(redact_query(a) if isinstance(a, str) else a for a in record.args)
        if isinstance(record.msg, str) and "?" in record.msg:
            record.msg = redact_query(record.msg)
        return True


def uvicorn_log_config() -> dict[str, Any]:
    """uvicorn's own logging configuration with RedactSecrets on its loggers."""
    config = copy.deepcopy(uvicorn.config.LOGGING_CONFIG)
    config.setdefault("filters", {})["redact_secrets"] = {"()": f"{__name__}.RedactSecrets"}
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        config["loggers"].setdefault(name, {})["filters"] = ["redact_secrets"]
    for handler in config["handlers"].values():
        handler["filters"] = ["redact_secrets"]
    return config
