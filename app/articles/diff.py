"""What a revision changed: a readable diff of two versions' markdown, as plain pieces of text.

Lines are compared first (difflib, no junk heuristics: a portrait's blank lines and headings are its
structure); where a run of lines was replaced by another, the words inside them are compared, so a sentence
with one word changed shows that word, not two paragraphs. Long stretches that did not change are folded to
a few lines of context around each change.

The result is text and kinds only (`same`, `ins`, `del`, `skip`): whoever shows it escapes every piece (the
page's template does), so a portrait's `<script>` is shown as the characters it is, inside `<ins>`/`<del>`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from difflib import SequenceMatcher
from typing import Literal

from app.kit.text import count_words

Kind = Literal["same", "ins", "del", "skip"]
CONTEXT_LINES = 2  # unchanged lines kept before and after each change
MIN_FOLDED = 4  # fewer unchanged lines than this between the kept ones are shown rather than folded
# Above this many tokens on a side, a replaced run is shown as lines deleted then inserted: a word diff of
# two huge runs would cost quadratic time for a diff nobody reads word by word.
MAX_WORD_DIFF_TOKENS = 4000
_TOKEN = re.compile(r"\s+|[^\s]+")


@dataclass(frozen=True)
class Piece:
    kind: Kind
    text: str  # for `skip`: how many unchanged lines were folded, as a sentence


@dataclass(frozen=True)
class Diff:
    pieces: tuple[Piece, ...]
    inserted_words: int
    deleted_words: int

    @property
    def changed(self) -> bool:
        return any(piece.kind in ("ins", "del") for piece in self.pieces)


def diff_markdown(old: str, new: str) -> Diff:
    """The changes from `old` to `new`, in reading order."""
    old_lines, new_lines = old.splitlines(keepends=True), new.splitlines(keepends=True)
    pieces: list[Piece] = []
    matcher = SequenceMatcher(None, old_lines, new_lines, autojunk=False)
    opcodes = matcher.get_opcodes()
    for index, (tag, i1, i2, j1, j2) in enumerate(opcodes):
        if tag == "equal":
            pieces += _context(old_lines[i1:i2], first=index == 0, last=index == len(opcodes) - 1)
        elif tag == "delete":
            pieces.append(Piece("del", "".join(old_lines[i1:i2])))
        elif tag == "insert":
            pieces.append(Piece("ins", "".join(new_lines[j1:j2])))
        else:
            pieces += _words("".join(old_lines[i1:i2]), "".join(new_lines[j1:j2]))
    merged = _merged(pieces)
    return Diff(
        pieces=tuple(merged),
        inserted_words=sum(count_words(piece.text) for piece in merged if piece.kind == "ins"),
        deleted_words=sum(count_words(piece.text) for piece in merged if piece.kind == "del"),
    )


def _context(lines: list[str], *, first: bool, last: bool) -> list[Piece]:
    """An unchanged run: whole when short, else the lines next to the changes around it and a fold."""
    before = 0 if first else CONTEXT_LINES  # lines after the change before this run
    after = 0 if last else CONTEXT_LINES  # lines before the change after this run
    folded = len(lines) - before - after
    if folded < MIN_FOLDED or (first and last):  # (no change at all: nothing to fold around)
        return [Piece("same", "".join(lines))]
    pieces = []
    if before:
        pieces.append(Piece("same", "".join(lines[:before])))
    pieces.append(Piece("skip", f"{folded} unchanged lines"))
    if after:
        pieces.append(Piece("same", "".join(lines[len(lines) - after :])))
    return pieces


def _words(old: str, new: str) -> list[Piece]:
    old_tokens, new_tokens = _TOKEN.findall(old), _TOKEN.findall(new)
    if max(len(old_tokens), len(new_tokens)) > MAX_WORD_DIFF_TOKENS:
        return [Piece("del", old), Piece("ins", new)]
    pieces = []
    matcher = SequenceMatcher(None, old_tokens, new_tokens, autojunk=False)
    for tag, i1, i2, j1, j2 in matcher.get_opcodes():
        if tag == "equal":
            pieces.append(Piece("same", "".join(old_tokens[i1:i2])))
            continue
        if i2 > i1:
            pieces.append(Piece("del", "".join(old_tokens[i1:i2])))
        if j2 > j1:
            pieces.append(Piece("ins", "".join(new_tokens[j1:j2])))
    return pieces


def _merged(pieces: list[Piece]) -> list[Piece]:
    """Neighbours of one kind joined, empty pieces dropped."""
    out: list[Piece] = []
    for piece in pieces:
        if not piece.text:
            continue
        if out and out[-1].kind == piece.kind and piece.kind != "skip":
            out[-1] = Piece(piece.kind, out[-1].text + piece.text)
        else:
            out.append(piece)
    return out
