"""A stored article replayed through the same stream as a live job: `metadata` (cached: true), the text in
block-sized `text` events, `done`. Numbered deterministically from the article alone, so a replay resumes
from `Last-Event-ID` like a live job does."""

from __future__ import annotations

import re

from app.articles.models import Article
from app.articles.params import TARGET_WORDS
from app.streaming.events import Done, Event, Metadata, Payload, Text, Usage

# A block ends after a blank line; the separator stays with the block before it, so the deltas joined are
# byte for byte the stored markdown.
_BLOCK = re.compile(r".*?(?:\n[ \t]*\n+|\Z)", re.DOTALL)


def blocks(markdown: str) -> list[str]:
    return [block for block in _BLOCK.findall(markdown) if block]


def replay_events(article: Article, artist_name: str, stale: bool) -> list[Event]:
    usage = article.usage
    payloads: list[Payload] = [
        Metadata(
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
            target_words=TARGET_WORDS[article.length],
            started_at=article.created_at,
            stale=stale,
        ),
        *(Text(block) for block in blocks(article.markdown)),
        Done(
            article_id=article.id,
            version=article.version,
            words=article.words,
            finish_reason=article.finish_reason,
            truncated=article.truncated,
            usage=None
            if usage is None
            else Usage(usage.get("prompt_tokens"), usage.get("completion_tokens")),
            duration_ms=article.duration_ms,
        ),
    ]
    return [Event(seq=seq, payload=payload) for seq, payload in enumerate(payloads, start=1)]
