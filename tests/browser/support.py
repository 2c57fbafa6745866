"""Helpers for browser tests."""

from __future__ import annotations

from pathlib import Path

ARTIFACTS = Path(__file__).resolve().parent.parent.parent / "artifacts" / "screenshots"


def screenshot(page: object, name: str) -> Path:
    """Save a full-page screenshot as an artifact for people (not asserted on, not committed)."""
    from playwright.sync_api import Page

    assert isinstance(page, Page)
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path
