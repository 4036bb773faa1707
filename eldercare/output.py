"""Command-line output: one JSON document with --json, readable tables otherwise, clear errors."""

from __future__ import annotations

import dataclasses
import re
import sys
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, NoReturn

import orjson
import typer
from rich.console import Console
from rich.table import Table

# Piped or logged, a table keeps every column whole (rich would fold it to 80 columns and cut
# figures to "16…"); in a terminal it fits the window.
console = Console(width=None if sys.stdout.isatty() else 1000)
err_console = Console(stderr=True)


def _default(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.asdict(value)
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="backslashreplace")
    raise TypeError(f"cannot serialise {type(value).__name__}")


def to_json(value: Any) -> bytes:
    return orjson.dumps(
        value, default=_default, option=orjson.OPT_INDENT_2 | orjson.OPT_NON_STR_KEYS
    )


def emit_json(value: Any) -> None:
    sys.stdout.buffer.write(to_json(value) + b"\n")
    sys.stdout.flush()


def fail(message: str, code: int = 1) -> NoReturn:
    err_console.print(f"[bold red]error:[/] {message}", highlight=False)
    raise typer.Exit(code)


def table(title: str, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    view = Table(title=title)
    for column in columns:
        view.add_column(column)
    for row in rows:
        view.add_row(*("" if cell is None else str(cell) for cell in row))
    console.print(view)


_DURATION = re.compile(r"^(\d+(?:\.\d+)?)(s|m|h|d)$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}


def parse_duration(text: str) -> timedelta:
    """'90s', '10m', '2h', '7d' → timedelta."""
    match = _DURATION.match(text.strip())
    if not match:
        raise typer.BadParameter(f"{text!r} is not a duration: use e.g. 90s, 10m, 2h or 7d")
    return timedelta(**{_UNITS[match.group(2)]: float(match.group(1))})


def since(text: str) -> datetime:
    """A duration ago ('10m') or an RFC 3339 time."""
    try:
        return datetime.now(UTC) - parse_duration(text)
    except typer.BadParameter:
        pass
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise typer.BadParameter(
            f"{text!r}: give a duration such as 10m or an RFC 3339 time"
        ) from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)
