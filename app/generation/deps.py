"""The generation package's FastAPI dependencies: the portrait service the lifespan built
(`request.state.portraits`), and where a reader says it was (`Last-Event-ID`)."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Header, Query, Request

from app.generation.portrait import PortraitService


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
