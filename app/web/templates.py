"""The Jinja environment and the one function pages render with."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fastapi import Request
from fastapi.responses import HTMLResponse
from fastapi.templating import Jinja2Templates

TEMPLATES_DIR = Path(__file__).resolve().parent.parent.parent / "templates"
templates = Jinja2Templates(directory=TEMPLATES_DIR)


def render(request: Request, name: str, context: Any, status_code: int = 200) -> HTMLResponse:
    """Render `name` with a typed page context (a dataclass), exposed to the template as `page`."""
    return templates.TemplateResponse(request, name, {"page": context}, status_code=status_code)
