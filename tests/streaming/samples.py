"""One payload of every type the event log carries, for tests that must cover them all.

Strings hold the characters a model or a catalog entry may bring (line breaks, quotes, non-ASCII, text
that looks like an SSE field) so every test that walks these samples also checks the wire stays intact.
"""

from __future__ import annotations

from datetime import UTC, datetime

from app.streaming.events import (
    Continued,
    Done,
    Error,
    Metadata,
    Outline,
    OutlineSection,
    Payload,
    Section,
    Text,
    Usage,
)

STARTED_AT = datetime(2025, 3, 4, 5, 6, 7, tzinfo=UTC)

METADATA = Metadata(
    job_id="3f2a9c",
    artist_id=7,
    artist_name="Édith Piaf\nevent: done",
    model="mistral-large-latest",
    writer="mistral",
    cached=False,
    article_id=None,
    version=None,
    language="fr",
    length="long",
    target_words=3000,
    started_at=STARTED_AT,
)
TEXT = Text("La Vie en rose 🌹\r\n\r\ndata: {}")
CONTINUED = Continued(reason="length", attempt=2)
OUTLINE = Outline(
    sections=(OutlineSection("Belleville", 400), OutlineSection('"Non, je ne regrette rien"', 600))
)
SECTION = Section(index=1, title="Olympia\n\n: comment")
DONE = Done(
    article_id=12,
    version=3,
    words=2987,
    finish_reason="stop",
    truncated=False,
    usage=Usage(prompt_tokens=210, completion_tokens=4100),
    duration_ms=41_250,
    continuations=2,
    length_score=99.6,
)
ERROR = Error(
    code="upstream_timeout", message="The writer stopped answering.", retryable=True, retry_after=30
)

PAYLOADS: list[Payload] = [METADATA, TEXT, CONTINUED, OUTLINE, SECTION, DONE, ERROR]
