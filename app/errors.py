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
from starlette.exceptions import HTTPException as StarletteHTTPException

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


async def _validation_error(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    errors = list(exc.errors())
    if any(error.get("type") == "json_invalid" for error in errors):
        return error_response(400, "invalid_json", "The request body is not valid JSON.")
    return error_response(422, "validation_error", ValidationFailed.message, fields=_field_errors(errors))


_HTTP_CODES = {404: "not_found", 405: "method_not_allowed", 401: "unauthorized", 413: "payload_too_large"}


async def _http_error(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    status = exc.status_code
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
