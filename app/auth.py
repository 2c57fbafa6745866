"""Bearer tokens for writes (`ATELIER_API_TOKENS`). Tokens travel only in the Authorization header."""

from __future__ import annotations

import hmac
from typing import Annotated

from fastapi import Depends, Request

from app.errors import Unauthorized
from app.settings import Settings


def token_is_valid(presented: bytes, allowed: list[str]) -> bool:
    """Constant-time over every configured token; compared as bytes (compare_digest refuses non-ASCII str)."""
    matched = False
    for token in allowed:
        matched |= hmac.compare_digest(presented, token.encode())
    return matched


def bearer_token(request: Request) -> bytes | None:
    """The raw bytes of a Bearer credential (Starlette decodes headers as latin-1; this undoes it)."""
    scheme, _, credentials = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not credentials.strip():
        return None
    return credentials.strip().encode("latin-1")


def has_valid_token(request: Request) -> bool:
    settings: Settings = request.state.settings
    token = bearer_token(request)
    return token is not None and token_is_valid(token, settings.api_tokens)


async def require_token(request: Request) -> None:
    if not has_valid_token(request):
        raise Unauthorized(headers={"WWW-Authenticate": "Bearer"})


TokenRequired = Annotated[None, Depends(require_token)]
