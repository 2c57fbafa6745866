"""`atelier generate ARTIST`: write a portrait in this process and stream it to the terminal.

It builds the same parts the server does (through the app's own lifespan), starts a job and follows its
event log like any reader. The text goes to stdout (or `--out`, written to a temporary file and moved into
place only when the portrait is complete); progress goes to stderr.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any, TextIO

from app.generation.jobs import RateLimited
from app.generation.prompt import TARGET_WORDS
from app.generation.service import facts_of
from app.kit.text import count_words
from app.llm.errors import UpstreamError
from app.settings import get_settings
from app.streaming.responses import follow_log


class GenerateFailed(Exception):
    pass


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("artist", help="an artist id or exact name")
    parser.add_argument("--language", help="one of ATELIER_LANGUAGES (default: ATELIER_DEFAULT_LANGUAGE)")
    parser.add_argument("--length", choices=sorted(TARGET_WORDS), default="long")
    parser.add_argument("--out", type=Path, help="write the markdown to this file instead of stdout")
    parser.add_argument("--refresh", action="store_true", help="write a new version even if one is stored")


class Progress:
    """One line on stderr, rewritten in place: words so far and tokens (text events) per second."""

    def __init__(self, stream: TextIO, target: int) -> None:
        self.stream, self.target = stream, target
        self.started = time.monotonic()
        self.tokens = 0
        self.text: list[str] = []
        self.last_draw = 0.0

    def add(self, delta: str) -> None:
        self.tokens += 1
        self.text.append(delta)
        now = time.monotonic()
        if now - self.last_draw > 0.2:
            self.last_draw = now
            self.draw()

    def draw(self, end: str = "") -> None:
        elapsed = max(time.monotonic() - self.started, 1e-6)
        words = count_words("".join(self.text))
        line = f"\r{words}/{self.target} words · {self.tokens / elapsed:.1f} tokens/s · {elapsed:.1f} s"
        self.stream.write(line + end)
        self.stream.flush()


async def generate(args: argparse.Namespace) -> int:
    from app.catalog.models import Artist
    from app.catalog.repository import ArtistRepository
    from app.main import create_app

    settings = get_settings()
    language = args.language or settings.default_language
    if language not in settings.languages:
        raise GenerateFailed(f"unknown language {language!r}: use one of {', '.join(settings.languages)}")
    app = create_app(settings)
    async with app.router.lifespan_context(app) as state:
        assert state is not None
        state_: dict[str, Any] = dict(state)
        async with state_["sessionmaker"]() as session:
            repository = ArtistRepository(session)
            artist: Artist | None = None
            if args.artist.isdigit():
                artist = await repository.get(int(args.artist))
            if artist is None:
                artist = await repository.get_by_name(args.artist)
            if artist is None:
                raise GenerateFailed(f"no artist with the id or name {args.artist!r}")
            stored = None
            if not args.refresh:
                stored = await state_["articles"].find_latest(session, artist.id, language, args.length)
        if stored is not None:
            sys.stderr.write(
                f"{artist.name}: stored portrait, version {stored.version} (--refresh to rewrite)\n"
            )
            _write(args.out, stored.markdown)
            return 0
        return await _stream(args, state_, artist, language)


async def _stream(args: argparse.Namespace, state: dict[str, Any], artist: Any, language: str) -> int:
    jobs = state["jobs"]
    try:
        job = await jobs.start_or_join(facts_of(artist), language, args.length, origin="api", client=None)
    except (UpstreamError, RateLimited) as exc:
        raise GenerateFailed(getattr(exc, "message", "rate limited")) from None
    out = args.out
    partial = out.with_name(out.name + ".partial") if out else None
    sink = partial.open("w", encoding="utf-8") if partial else sys.stdout
    progress = Progress(sys.stderr, TARGET_WORDS[args.length])
    failure: str | None = None
    try:
        async for batch in follow_log(jobs.broker, job.id, 0):
            for event in batch or []:
                if event.type == "metadata":
                    writer = "the demo writer" if event.data["writer"] == "demo" else event.data["model"]
                    sys.stderr.write(f"{artist.name}: writing with {writer}\n")
                elif event.type == "text":
                    sink.write(event.data["delta"])
                    sink.flush()
                    progress.add(event.data["delta"])
                elif event.type == "error":
                    failure = f"{event.data['code']}: {event.data['message']}"
                elif event.type == "done":
                    progress.draw(end="\n")
                    sys.stderr.write(
                        f"stored as version {event.data['version']} ({event.data['words']} words)\n"
                    )
    finally:
        if sink is not sys.stdout:
            sink.close()
    if failure is not None:
        if partial:
            partial.unlink(missing_ok=True)
        raise GenerateFailed(failure)
    if partial and out:
        partial.replace(out)
    return 0


def _write(out: Path | None, markdown: str) -> None:
    if out is None:
        sys.stdout.write(markdown)
        sys.stdout.flush()
    else:
        out.write_text(markdown, encoding="utf-8")
