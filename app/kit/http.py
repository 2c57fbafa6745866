"""HTTP details shared by routes of any package."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from fastapi import APIRouter

Endpoint = TypeVar("Endpoint", bound=Callable[..., Any])


def get_and_head(router: APIRouter, path: str, **options: Any) -> Callable[[Endpoint], Endpoint]:
    """Register `endpoint` for GET and for HEAD on `path`, as two routes (`router.api_route` with one
    method each), so each operation keeps its own operationId in `/openapi.json` (one route with both methods
    gives both the same id, which OpenAPI forbids). A HEAD runs the GET's endpoint: the same status and
    headers (ETag, Content-Type, Content-Length; 304 for a matching If-None-Match), and uvicorn sends no body.
    Only for reads: a HEAD must never start anything."""

    def register(endpoint: Endpoint) -> Endpoint:
        router.api_route(path, methods=["HEAD"], **options)(endpoint)
        return router.api_route(path, methods=["GET"], **options)(endpoint)

    return register
