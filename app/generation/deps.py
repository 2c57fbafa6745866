"""The generation package's FastAPI dependencies: the portrait service the lifespan built
(`request.state.portraits`), where a reader says it was (`Last-Event-ID`), and the refusal of requests
another site made a browser send to start a generation (CSRF)."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Header, Query, Request

from app.auth import has_valid_token
from app.errors import Forbidden
from app.generation.portrait import PortraitService
from app.kit.cross_site import cross_site_refusal, origin_of


async def _portraits(request: Request) -> PortraitService:
    portraits: PortraitService = request.state.portraits
    return portraits


PortraitsDep = Annotated[PortraitService, Depends(_portraits)]


async def _last_event_id(
    last_event_id: Annotated[
        str | None, Query(max_length=200, description="For clients that cannot set headers")
    ] = None,
    last_event_id_header: Annotated[str | None, Header(alias="Last-Event-ID", max_length=200)] = None,
) -> str | None:
    """The reader's last event id, as sent (header first, then query); read by `positions.py`."""
    return last_event_id_header or last_event_id


LastEventIdDep = Annotated[str | None, Depends(_last_event_id)]


async def _refuse_cross_site(request: Request) -> None:
    """403 `forbidden` for a request a browser sent for another site's page (`app/kit/cross_site.py` says
    how that is told), unless it carries a valid token: another site's page cannot make a browser send an
    Authorization header without CORS, which Atelier does not grant.

    The request's own origin is its scheme and Host as the server sees them: behind a TLS-ending proxy the
    scheme is the one uvicorn took from a trusted proxy's X-Forwarded-Proto, and the proxy must pass the
    Host the browser used, port included. Browsers that send `Sec-Fetch-Site` (every current one, to an
    HTTPS or loopback address) are judged by it without comparing origins at all.
    """
    own_origin = origin_of(request.url.scheme, request.url.netloc)
    refusal = cross_site_refusal(
        request.headers.get("sec-fetch-site"), request.headers.get("origin"), own_origin
    )
    if refusal is not None and not has_valid_token(request):
        raise Forbidden(
            f"{refusal}: a portrait can be started only from Atelier's own pages, or with an API token."
        )


# On every route that would start a generation when asked anonymously: a page elsewhere could otherwise
# spend our upstream (and its visitors' rate limit) with a hidden form.
SameSiteRequired = Annotated[None, Depends(_refuse_cross_site)]
