"""A stored article replayed through the same stream as a live job: `metadata` (cached: true), the text in
block-sized `text` events, `done`; a planned portrait's `outline` first and each `section` where it began,
so the page's table of contents is the same live and replayed. Numbered deterministically from the article
alone, so a replay resumes from `Last-Event-ID` like a live job does."""

from __future__ import annotations

import re

from app.articles.models import Article
from app.articles.params import TARGET_WORDS
from app.streaming.events import Done, Event, Metadata, Outline, OutlineSection, Payload, Section, Text, Usage

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
        *_body(article),
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
            continuations=article.continuations,
            length_score=article.length_score,
        ),
    ]
    return [Event(seq=seq, payload=payload) for seq, payload in enumerate(payloads, start=1)]


def _body(article: Article) -> list[Payload]:
    """The text in blocks; for a planned portrait, its outline first and each section's event where its
    text began (a portrait cut before its last sections has no start for those). An outline that does not
    fit the markdown, which cannot happen unless edited by hand, replays as plain text rather than failing."""
    markdown, outline = article.markdown, article.outline
    sections = outline.get("sections") if isinstance(outline, dict) else None
    if not isinstance(sections, list) or not all(isinstance(s, dict) for s in sections):
        return [Text(block) for block in blocks(markdown)]
    starts = [s.get("start") for s in sections]
    begun = starts[: next((i for i, start in enumerate(starts) if start is None), len(starts))]
    fits = all(isinstance(start, int) and 0 <= start <= len(markdown) for start in begun)
    if not begun or not fits or begun != sorted(begun) or any(s is not None for s in starts[len(begun) :]):
        return [Text(block) for block in blocks(markdown)]
    body: list[Payload] = [
        Outline(
            tuple(OutlineSection(str(s.get("title", "")), int(s.get("target_words", 0))) for s in sections)
        )
    ]
    body += [Text(block) for block in blocks(markdown[: begun[0]])]
    for index, start in enumerate(begun):
        end = begun[index + 1] if index + 1 < len(begun) else len(markdown)
        body.append(Section(index=index, title=str(sections[index].get("title", ""))))
        body += [Text(block) for block in blocks(markdown[start:end])]
    return body
