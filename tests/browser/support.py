"""Helpers for browser tests."""

from __future__ import annotations

import os
from pathlib import Path

# Debian's Chromium, shared by the browser tests and bench/render.py.
CHROMIUM = os.environ.get("ATELIER_TEST_CHROMIUM", "/usr/bin/chromium")
# Without the background-networking flags, Chromium tries to reach Google's hosts at every start.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
]
ARTIFACTS = Path(__file__).resolve().parent.parent.parent / "artifacts" / "screenshots"


def screenshot(page: object, name: str) -> Path:
    """Save a full-page screenshot as an artifact for people (not asserted on, not committed)."""
    from playwright.sync_api import Page

    assert isinstance(page, Page)
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path
