"""The Jinja environment and the one function pages render with."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fastapi import Request
from fastapi.responses import HTMLResponse
from fastapi.templating import Jinja2Templates

TEMPLATES_DIR = Path(__file__).resolve().parent.parent.parent / "templates"
templates = Jinja2Templates(directory=TEMPLATES_DIR)


# A second wall behind the safe renderer: no inline script, no foreign script, no remote image can run or
# load even if some markup slipped through.
CONTENT_SECURITY_POLICY = "; ".join(
    [
        "default-src 'self'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self' data:",
        "connect-src 'self'",
        "object-src 'none'",
        "base-uri 'none'",
        "form-action 'self'",
        "frame-ancestors 'none'",
    ]
)
PAGE_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
}


def render(request: Request, name: str, context: Any, status_code: int = 200) -> HTMLResponse:
    """Render `name` with a typed page context (a dataclass), exposed to the template as `page`."""
    return templates.TemplateResponse(
        request, name, {"page": context}, status_code=status_code, headers=PAGE_HEADERS
    )
