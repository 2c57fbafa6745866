"""Typed payloads as the fields of one log entry (a Redis Streams entry), and back, exactly.

`encode(payload)` gives the entry's fields: `t`, the event type, and `d`, its value: a `text` delta as the
bare string (the hot path: most entries are deltas, so no JSON for them), every other payload as the JSON of
its dataclass fields (not `data()`, which is the wire shape and loses e.g. a datetime's offset). Decoding
rebuilds the same frozen dataclass: datetimes with their offset, `Usage` or None, `OutlineSection` tuples.
Fields the codec does not know (the broker adds its own, e.g. a writer nonce) are ignored. No SSE here.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import fields
from datetime import datetime
from typing import Any

from app.streaming.events import (
    Continued,
    Done,
    Error,
    Metadata,
    Outline,
    OutlineSection,
    Payload,
    Section,
    Text,
    Usage,
)

Fields = Mapping[bytes | str, bytes | str]

TYPE_FIELD = "t"
DATA_FIELD = "d"

_CLASSES: dict[str, type[Payload]] = {
    cls.type: cls for cls in (Metadata, Text, Continued, Outline, Section, Done, Error)
}


class CodecError(ValueError):
    """An entry that is not an encoded payload (unknown type, missing field, bad JSON)."""


def encode(payload: Payload) -> dict[str, str]:
    if isinstance(payload, Text):
        return {TYPE_FIELD: "text", DATA_FIELD: payload.delta}
    values = {field.name: _plain(getattr(payload, field.name)) for field in fields(payload)}
    return {
        TYPE_FIELD: payload.type,
        DATA_FIELD: json.dumps(values, ensure_ascii=False, separators=(",", ":")),
    }


def decode(entry: Fields) -> Payload:
    kind = _text(_get(entry, TYPE_FIELD))
    data = _text(_get(entry, DATA_FIELD))
    if kind == "text":
        return Text(data)
    cls = _CLASSES.get(kind)
    if cls is None:
        raise CodecError(f"unknown event type {kind!r}")
    try:
        values: dict[str, Any] = json.loads(data)
        if cls is Metadata:
            values["started_at"] = datetime.fromisoformat(values["started_at"])
        elif cls is Outline:
            values["sections"] = tuple(OutlineSection(title, words) for title, words in values["sections"])
        elif cls is Done and values["usage"] is not None:
            values["usage"] = Usage(*values["usage"])
        return cls(**values)
    except (ValueError, TypeError, KeyError) as exc:
        raise CodecError(f"bad {kind} entry: {exc}") from exc


def _plain(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()  # keeps the offset (or its absence): fromisoformat gives the same value
    if isinstance(value, Usage):
        return [value.prompt_tokens, value.completion_tokens]
    if isinstance(value, tuple):
        return [[section.title, section.target_words] for section in value]
    return value


def _get(entry: Fields, name: str) -> bytes | str:
    value = entry.get(name)
    if value is None:
        value = entry.get(name.encode())
    if value is None:
        raise CodecError(f"entry has no {name!r} field")
    return value


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
