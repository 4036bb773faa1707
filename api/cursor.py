"""Opaque page cursors: the sort key of the last row of a page, for keyset paging.

A client passes `next` back unchanged; what is inside may change between versions. A cursor that
does not decode, or belongs to another listing, is invalid input (422), never a 500.
"""

from __future__ import annotations

import base64
import binascii
from datetime import datetime
from typing import Any

import orjson


class CursorError(ValueError):
    """The cursor is not one this listing handed out."""


def encode(kind: str, **key: Any) -> str:
    raw = orjson.dumps({"k": kind, **key})
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode(
    kind: str, cursor: str, fields: dict[str, type], optional: frozenset[str] = frozenset()
) -> dict[str, Any]:
    """The key fields of a cursor made by `encode(kind, …)`; datetimes come back as datetimes."""
    try:
        data = orjson.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
    except (binascii.Error, ValueError):
        raise CursorError("the cursor is not one this API handed out") from None
    if not isinstance(data, dict) or data.get("k") != kind:
        raise CursorError(f"the cursor does not belong to this listing ({kind})")
    out: dict[str, Any] = {}
    for name, expected in fields.items():
        value = data.get(name)
        try:
            if expected is datetime and isinstance(value, str):
                value = datetime.fromisoformat(value)
        except ValueError:
            raise CursorError("the cursor is not one this API handed out") from None
        if (value is None and name not in optional) or (
            value is not None and not isinstance(value, expected)
        ):
            raise CursorError("the cursor is not one this API handed out")
        out[name] = value
    return out
