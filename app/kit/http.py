"""HTTP details shared by routes of any package."""

from __future__ import annotations

from starlette.requests import Request


def not_modified(request: Request, etag: str) -> bool:
    """Whether `If-None-Match` names `etag` (or `*`).

    The weak comparison (RFC 9110 13.1.2): W/"x" matches "x" (a gzipping proxy weakens ETags, and its
    clients send them back so)."""
    candidates = [
        tag.strip().removeprefix("W/") for tag in request.headers.get("if-none-match", "").split(",")
    ]
    return etag in candidates or "*" in candidates
