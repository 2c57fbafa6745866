"""Who is asking: Bearer tokens for writes (`ATELIER_API_TOKENS`; tokens travel only in the Authorization
header), and the client address a new generation is counted against.

The client is the peer address, or the address its trusted proxies forwarded for (`ATELIER_TRUSTED_PROXIES`):
X-Forwarded-For is read right to left, and the first address that is not a trusted proxy is the client, so a
client cannot forge its way around the generation limit.
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass
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


@dataclass(frozen=True)
class Client:
    """Who a request comes from: `trusted` holds a valid token (may refresh, is never rate limited)."""

    trusted: bool
    address: str


def client_address(request: Request, trusted_proxies: list[str]) -> str:
    peer = request.client.host if request.client else "unknown"
    if peer not in trusted_proxies:
        return peer
    forwarded = [
        part.strip() for part in request.headers.get("x-forwarded-for", "").split(",") if part.strip()
    ]
    for address in reversed(forwarded):
        if address not in trusted_proxies:
            return address
    return peer


async def _client(request: Request) -> Client:
    settings: Settings = request.state.settings
    return Client(trusted=has_valid_token(request), address=client_address(request, settings.trusted_proxies))


ClientDep = Annotated[Client, Depends(_client)]
