"""Settings: comma lists, validation, and every setting documented."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from app.settings import Settings

ROOT = Path(__file__).resolve().parent.parent


def test_comma_separated_lists_parse_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ATELIER_API_TOKENS", "one, two,,three")
    monkeypatch.setenv("ATELIER_LANGUAGES", "en,fr")
    settings = Settings(_env_file=None)  # type: ignore[call-arg]
    assert settings.api_tokens == ["one", "two", "three"]
    assert settings.languages == ["en", "fr"]


def test_defaults_follow_the_contract(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(__import__("os").environ):
        if name.startswith("ATELIER_"):
            monkeypatch.delenv(name)
    settings = Settings(_env_file=None)  # type: ignore[call-arg]
    assert settings.database_url == "sqlite+aiosqlite:///./atelier.db"
    assert settings.llm_base_url is None and settings.api_tokens == []
    assert settings.max_body_bytes == 65536 and settings.generation_rate == "10/minute"
    assert settings.languages == ["en", "fr", "de", "es", "it"]


def test_default_language_must_be_allowed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ATELIER_LANGUAGES", "fr,de")
    with pytest.raises(ValidationError):
        Settings(_env_file=None)  # type: ignore[call-arg]


def test_every_setting_is_documented() -> None:
    documented = (ROOT / "docs" / "configuration.md").read_text()
    for name in Settings.model_fields:
        assert f"ATELIER_{name.upper()}" in documented, (
            f"ATELIER_{name.upper()} is not in docs/configuration.md"
        )
