"""Who is asking: Bearer tokens for writes (`ATELIER_API_TOKENS`; tokens travel only in the Authorization
header), and the client address a new generation is counted against.

The client is the peer address, or the address its trusted proxies forwarded for (`ATELIER_TRUSTED_PROXIES`).
uvicorn applies this, with ATELIER_TRUSTED_PROXIES as its `forwarded_allow_ips` (`atelier serve` passes it; a
plain uvicorn command must too: docs/deployment.md); the app takes the address as given, so X-Forwarded-For
is read in one place only.
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


def client_address(request: Request) -> str:
    """The client address as the server gives it.

    X-Forwarded-For is interpreted in one place: uvicorn's proxy-headers middleware, which runs before the app
    and takes the client from the header when the peer is one of its `forwarded_allow_ips`. `atelier serve`
    passes it ATELIER_TRUSTED_PROXIES; a plain uvicorn command passes the same list as
    `--forwarded-allow-ips` (docs/deployment.md). The app cannot undo that rewrite, and reading the header
    again here could only drift from uvicorn's reading, so the address is taken as given; `app.kit.forwarding`
    only notices (and logs once) a server that trusts a hop the list does not.
    """
    return request.client.host if request.client else "unknown"


async def _client(request: Request) -> Client:
    return Client(trusted=has_valid_token(request), address=client_address(request))


ClientDep = Annotated[Client, Depends(_client)]
