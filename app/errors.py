"""The AppError family and the handlers that turn every failure into the contract's JSON error shape.

Shape: {"error": {"code": "snake_case", "message": "a sentence for a person", ...extra}}.
"""

from __future__ import annotations

import logging
from http import HTTPStatus
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match, Mount
from starlette.types import Scope

log = logging.getLogger(__name__)


class AppError(Exception):
    status_code = 400
    code = "bad_request"
    message = "The request could not be understood."

    def __init__(self, message: str | None = None, *, headers: dict[str, str] | None = None, **extra: Any):
        self.message = message or self.message
        self.headers = headers
        self.extra = extra
        super().__init__(self.message)

    @classmethod
    def of(
        cls, status_code: int, code: str, message: str, *, headers: dict[str, str] | None = None, **extra: Any
    ) -> AppError:
        """An error with a code decided at run time (an upstream code passed through, say)."""
        error = cls(message, headers=headers, **extra)
        error.status_code, error.code = status_code, code
        return error


class BadRequest(AppError):
    pass


class Unauthorized(AppError):
    status_code = 401
    code = "unauthorized"
    message = "A valid API token is required: send it as 'Authorization: Bearer <token>'."


class Forbidden(AppError):
    status_code = 403
    code = "forbidden"
    message = "This request is not allowed."


class InvalidJson(AppError):
    code = "invalid_json"
    message = "The request body is not valid JSON."


class NotFound(AppError):
    status_code = 404
    code = "not_found"
    message = "Nothing lives at this address."


class Conflict(AppError):
    status_code = 409
    code = "conflict"
    message = "This conflicts with what is already stored."


class PayloadTooLarge(AppError):
    status_code = 413
    code = "payload_too_large"


class ValidationFailed(AppError):
    status_code = 422
    code = "validation_error"
    message = "Some fields are not valid."


class NotReady(AppError):
    status_code = 503
    code = "not_ready"
    message = "The service is not ready."


def error_body(code: str, message: str, **extra: Any) -> dict[str, Any]:
    return {"error": {"code": code, "message": message, **extra}}


def error_response(
    status_code: int, code: str, message: str, headers: dict[str, str] | None = None, **extra: Any
) -> JSONResponse:
    return JSONResponse(error_body(code, message, **extra), status_code=status_code, headers=headers)


def _loc(parts: tuple[Any, ...] | list[Any]) -> str:
    return ".".join(str(part) for part in parts)


def _field_errors(errors: list[dict[str, Any]]) -> list[dict[str, str]]:
    return [
        {"loc": _loc(error.get("loc", ())), "message": str(error.get("msg", "invalid"))} for error in errors
    ]


async def _app_error(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, AppError)
    return error_response(exc.status_code, exc.code, exc.message, exc.headers, **exc.extra)


# --- a body that is not JSON ----------------------------------------------------------------------------
# FastAPI decodes a JSON body with `json.loads` and reports its failures in two ways: a syntax error
# (JSONDecodeError) as a RequestValidationError of type `json_invalid`, and anything else the decoder raises
# as a bare 400 "There was an error parsing the body" whose __cause__ is the decoder's exception:
# UnicodeDecodeError (not UTF-8), ValueError (a number past the interpreter's 4,300-digit limit) and
# RecursionError (thousands of nested arrays or objects). Both are the contract's one `invalid_json`.


def _invalid_json(why: str | None = None) -> JSONResponse:
    message = InvalidJson.message if why is None else f"The request body is not valid JSON: {why}."
    return error_response(InvalidJson.status_code, InvalidJson.code, message)


def _is_json_body(request: Request) -> bool:
    """Whether FastAPI decoded (or tried to decode) this request's body as JSON: a form's body fails
    otherwise, and stays a `bad_request`."""
    media_type = request.headers.get("content-type", "").partition(";")[0].strip().lower()
    return media_type == "application/json" or (
        media_type.startswith("application/") and media_type.endswith("+json")
    )


def _why_not_json(request: Request, cause: BaseException | None) -> str | None:
    """Why the JSON decoder gave up on the body, when that is what `cause` says; None when it is not."""
    if cause is None or not _is_json_body(request):
        return None
    if isinstance(cause, UnicodeDecodeError):
        return "it is not UTF-8"
    if isinstance(cause, RecursionError):
        return "it is nested too deeply"
    if isinstance(cause, ValueError):
        return "a number in it has too many digits" if "digits" in str(cause) else "it cannot be decoded"
    return None


def _syntax_error(error: dict[str, Any]) -> str | None:
    """Where the decoder stopped, from FastAPI's `json_invalid` error: "expecting value at character 0"."""
    decoder_message = (error.get("ctx") or {}).get("error")
    location = error.get("loc", ())
    if not isinstance(decoder_message, str) or not decoder_message or len(location) < 2:
        return None
    return f"{decoder_message[0].lower()}{decoder_message[1:]} at character {location[1]}"


async def _validation_error(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    errors = list(exc.errors())
    for error in errors:
        if error.get("type") == "json_invalid":
            return _invalid_json(_syntax_error(error))
    return error_response(422, "validation_error", ValidationFailed.message, fields=_field_errors(errors))


# --- a method the path does not have ---------------------------------------------------------------------

_METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")


def _parse_allow(header: str) -> list[str]:
    return [method.strip().upper() for method in header.split(",") if method.strip()]


def _allowed_methods(scope: Scope, routes: list[Any], declared: list[str]) -> list[str]:
    """Every method some route answers at this request's path.

    Starlette's 405 names only the methods of the first route whose path matched (`PUT` on an artist said
    `Allow: GET`, though PATCH and DELETE live there too), so each method is tried against every route.
    A mount's app decides its own methods: it matches any method, so what it declared is taken instead.
    """
    candidates = [*_METHODS, *(method for method in declared if method not in _METHODS)]
    allowed = set(declared)
    for method in candidates:
        probe: Scope = {
            "type": "http",
            "method": method,
            "path": scope["path"],
            "root_path": scope.get("root_path", ""),
            "headers": [],
            "query_string": b"",
        }
        if any(route.matches(probe)[0] == Match.FULL for route in routes if not isinstance(route, Mount)):
            allowed.add(method)
    return [method for method in candidates if method in allowed]


def _method_not_allowed(request: Request, exc: StarletteHTTPException) -> JSONResponse:
    declared = _parse_allow((exc.headers or {}).get("Allow", ""))
    allowed = _allowed_methods(request.scope, request.app.router.routes, declared)
    message = f"{request.method} is not allowed here; this address answers {', '.join(allowed) or 'nothing'}."
    return error_response(405, "method_not_allowed", message, {"Allow": ", ".join(allowed)})


_HTTP_CODES = {404: "not_found", 405: "method_not_allowed", 401: "unauthorized", 413: "payload_too_large"}


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    status = exc.status_code
    if status == 400 and (why := _why_not_json(request, exc.__cause__)) is not None:
        return _invalid_json(why)
    if status == 405:
        return _method_not_allowed(request, exc)
    code = _HTTP_CODES.get(status, HTTPStatus(status).phrase.lower().replace(" ", "_"))
    detail = exc.detail if isinstance(exc.detail, str) else HTTPStatus(status).phrase
    if status == 404 and detail == "Not Found":
        detail = NotFound.message
    return error_response(status, code, detail, dict(exc.headers) if exc.headers else None)


async def _unexpected_error(_request: Request, exc: Exception) -> JSONResponse:
    log.exception("unhandled error", exc_info=exc)
    return error_response(500, "internal_error", "Something went wrong on our side; it has been logged.")


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(AppError, _app_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(Exception, _unexpected_error)


# --- OpenAPI: the error answers, declared once -------------------------------------------------------------


class ErrorDetail(BaseModel):
    """`error`: a snake_case `code`, a `message` for a person, and what the code adds (`fields`, `retry_after`...)."""

    model_config = ConfigDict(extra="allow")
    code: str
    message: str


class ErrorBody(BaseModel):
    error: ErrorDetail


def error_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """`responses=` for a route: each status answered with the contract's error shape, as JSON whatever the
    route's own media type (a stream's errors are JSON too)."""
    json_error = {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorBody"}}}
    return {status: {"description": HTTPStatus(status).phrase, "content": json_error} for status in statuses}


def install_error_schema(app: FastAPI) -> None:
    """Put ErrorBody in the OpenAPI components (the routes refer to it by `$ref`)."""
    original = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = original()
            defs = ErrorBody.model_json_schema(ref_template="#/components/schemas/{model}")
            components = schema.setdefault("components", {}).setdefault("schemas", {})
            components.update(defs.pop("$defs", {}))
            components["ErrorBody"] = defs
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
