"""`atelier generate ARTIST`: write a portrait in this process and stream it to the terminal.

It runs on the same parts the server runs on (assembled in `app/main.py`) and asks the portrait service like
any reader: a stored portrait is replayed, a running one joined, else a new one is written. The text goes
to stdout (or `--out`, written to a temporary file and moved into place only when the portrait is
complete); progress goes to stderr.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from app.articles.params import TARGET_WORDS
from app.auth import Client
from app.catalog.service import CatalogService
from app.errors import AppError
from app.generation.portrait import NothingAfter, PortraitRequest, PortraitService, Stream
from app.kit.text import count_words
from app.settings import Settings, get_settings
from app.streaming.events import Continued, Done, Error, Metadata, Outline, Section, Text

# The operator at the terminal: may refresh, and is not counted by the generation limit.
OPERATOR = Client(trusted=True, address="cli")


class GenerateFailed(Exception):
    pass


@dataclass(frozen=True)
class Parts:
    """What `generate` needs of the running app."""

    catalog: CatalogService
    portraits: PortraitService


OpenParts = Callable[[Settings], AbstractAsyncContextManager[Parts]]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("artist", help="an artist id or exact name")
    parser.add_argument("--language", help="one of ATELIER_LANGUAGES (default: ATELIER_DEFAULT_LANGUAGE)")
    parser.add_argument("--length", choices=sorted(TARGET_WORDS), default="long")
    parser.add_argument("--out", type=Path, help="write the markdown to this file instead of stdout")
    parser.add_argument("--refresh", action="store_true", help="write a new version even if one is stored")


class Progress:
    """One line on stderr, rewritten in place: the section being written (once an outline came), words so
    far against the target (the server's count of the text written so far: one count), tokens (text events)
    per second."""

    def __init__(self, stream: TextIO, target: int) -> None:
        self.stream, self.target = stream, target
        self.started = time.monotonic()
        self.tokens = 0
        self.text: list[str] = []
        self.last_draw = 0.0
        self.last_width = 0
        self.sections = 0  # in the outline; 0 without one
        self.section = 0  # the one being written, from 1
        self.continuations = 0

    @property
    def words(self) -> int:
        return count_words("".join(self.text))

    def add(self, delta: str) -> None:
        self.tokens += 1
        self.text.append(delta)
        now = time.monotonic()
        if now - self.last_draw > 0.2:
            self.last_draw = now
            self.draw()

    def outline(self, sections: int) -> None:
        self.sections = sections

    def start_section(self, index: int) -> None:
        self.section = index + 1
        self.draw()

    def continued(self) -> None:
        self.continuations += 1
        self.draw()

    def line(self) -> str:
        elapsed = max(time.monotonic() - self.started, 1e-6)
        parts = [f"section {self.section} of {self.sections}"] if self.sections and self.section else []
        parts.append(f"{self.words:,}/{self.target:,} words")
        if self.continuations:
            parts.append(f"{self.continuations} continued")
        parts += [f"{self.tokens / elapsed:.1f} tokens/s", f"{elapsed:.1f} s"]
        return " · ".join(parts)

    def draw(self, end: str = "") -> None:
        line = self.line()
        # rewritten in place: blank out what a longer line before it left
        padding = " " * max(self.last_width - len(line), 0)
        self.last_width = len(line)
        self.stream.write(f"\r{line}{padding}{end}")
        self.stream.flush()


async def generate(args: argparse.Namespace, open_parts: OpenParts) -> int:
    settings = get_settings()
    language = args.language or settings.default_language
    if language not in settings.languages:
        raise GenerateFailed(f"unknown language {language!r}: use one of {', '.join(settings.languages)}")
    async with open_parts(settings) as parts:
        artist = await parts.catalog.find(args.artist)
        if artist is None:
            raise GenerateFailed(f"no artist with the id or name {args.artist!r}")
        request = PortraitRequest(
            artist.id, language, args.length, origin="stream", client=OPERATOR, refresh=args.refresh
        )
        try:
            outcome = await parts.portraits.open(request)
        except AppError as exc:
            raise GenerateFailed(exc.message) from None
        assert not isinstance(outcome, NothingAfter)  # a fresh request always has events to read
        assert isinstance(outcome, Stream), outcome
        try:
            return await _write(args, artist.name, outcome)
        finally:
            if outcome.on_close is not None:
                outcome.on_close()


async def _write(args: argparse.Namespace, artist_name: str, stream: Stream) -> int:
    out = args.out
    partial = out.with_name(out.name + ".partial") if out else None
    sink = partial.open("w", encoding="utf-8") if partial else sys.stdout
    progress = Progress(sys.stderr, TARGET_WORDS[args.length])
    failure: str | None = None
    replay = False
    try:
        async for batch in stream.batches:
            for event in batch or []:
                payload = event.payload
                if isinstance(payload, Metadata):
                    replay = payload.cached
                    if replay:
                        sys.stderr.write(
                            f"{artist_name}: stored portrait, version {payload.version} (--refresh to rewrite)\n"
                        )
                    else:
                        writer = "the demo writer" if payload.writer == "demo" else payload.model
                        sys.stderr.write(f"{artist_name}: writing with {writer}\n")
                elif isinstance(payload, Text):
                    sink.write(payload.delta)
                    sink.flush()
                    if not replay:
                        progress.add(payload.delta)
                elif isinstance(payload, Outline) and not replay:
                    progress.outline(len(payload.sections))
                elif isinstance(payload, Section) and not replay:
                    progress.start_section(payload.index)
                elif isinstance(payload, Continued):
                    progress.continued()  # a seam: nothing in the text, a note on the progress line
                elif isinstance(payload, Error):
                    failure = f"{payload.code}: {payload.message}"
                elif isinstance(payload, Done) and not replay:
                    progress.draw(end="\n")
                    sys.stderr.write(f"stored as version {payload.version} ({payload.words:,} words)\n")
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
