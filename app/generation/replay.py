"""A stored article replayed through the same stream as a live job: `metadata` (cached: true), the text in
block-sized `text` events, `done`. Numbered deterministically from the article alone, so a replay resumes
from `Last-Event-ID` like a live job does."""

from __future__ import annotations

import re

from app.articles.models import Article
from app.generation import events
from app.streaming.events import Event

# A block ends after a blank line; the separator stays with the block before it, so the deltas joined are
# byte for byte the stored markdown.
_BLOCK = re.compile(r".*?(?:\n[ \t]*\n+|\Z)", re.DOTALL)


def replay_stream_id(article: Article) -> str:
    return f"replay-{article.id}"


def blocks(markdown: str) -> list[str]:
    return [block for block in _BLOCK.findall(markdown) if block]


def replay_events(article: Article, artist_name: str, stale: bool) -> list[Event]:
    payloads: list[tuple[str, dict[str, object]]] = [
        (
            "metadata",
            events.metadata(
                job_id=None,
                artist_id=article.artist_id,
                artist_name=artist_name,
                model=article.model,
                writer=article.writer,
                cached=True,
                article_id=article.id,
                version=article.version,
                language=article.language,
                length=article.length,
                started_at=article.created_at,
                stale=stale,
            ),
        ),
        *(("text", events.text(block)) for block in blocks(article.markdown)),
        (
            "done",
            events.done(
                article_id=article.id,
                version=article.version,
                words=article.words,
                finish_reason=article.finish_reason,
                usage=article.usage,
                duration_ms=article.duration_ms,
            ),
        ),
    ]
    return [
        Event(seq=seq, type=type_, data={"type": type_, **data})  # type: ignore[arg-type]
        for seq, (type_, data) in enumerate(payloads, start=1)
    ]
