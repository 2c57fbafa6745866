"""The pure parts of writing a long portrait in several calls (docs/longform.md): removing a continuation's
echo, telling whether markdown is structurally finished, the length score, and reading an outline.

Nothing here waits or talks to anyone: `run.py` drives the calls and uses these to decide.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

# --- the echo ------------------------------------------------------------------------------------------


class EchoFilter:
    """Removes the echo a continuation call may start with.

    Asked to go on from a text (a trailing assistant turn), Mistral and llama.cpp's server first send that
    whole text again, merged with the first new token in the first delta(s). Whether the new output is an
    echo is decided by exact comparison, never by guessing: its start is held back while it is still a
    prefix of the text; once it holds the whole text, the rest is new; as soon as it differs, it was no
    echo and everything held back is new text (nothing dropped, nothing repeated).
    """

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self._held: list[str] = []
        self._matched = 0  # characters of the prefix the output has repeated so far
        self._decided = not prefix

    def feed(self, delta: str) -> str:
        """The new text in `delta` (possibly "" while undecided)."""
        if self._decided:
            return delta
        remaining = self.prefix[self._matched :]
        if delta.startswith(remaining):  # the echo is complete: the rest is new
            self._decided = True
            self._held.clear()
            return delta[len(remaining) :]
        if remaining.startswith(delta):  # still the echo, maybe: hold it back
            self._matched += len(delta)
            self._held.append(delta)
            return ""
        self._decided = True  # it differs: no echo, and what was held back is text
        held, self._held = "".join(self._held), []
        return held + delta

    def end(self) -> str:
        """At the end of the call: text still held back. Output that stopped inside a repetition of the
        prefix is not proven an echo, so it is kept as written (a model may start like the text did)."""
        if self._decided:
            return ""
        self._decided = True
        held, self._held = "".join(self._held), []
        return held


# --- structure -----------------------------------------------------------------------------------------

_FENCE = re.compile(r"^ {0,3}(`{3,}|~{3,})", re.MULTILINE)
_DANGLING = re.compile(r"^ {0,3}(#{1,6}|[-*+]|\d{1,9}[.)])[ \t]*$")
_HEADING = re.compile(r"^ {0,3}#{1,6}(\s|$)")


def open_structure(markdown: str) -> str | None:
    """Why `markdown` cannot end here, or None if it can: an unclosed code fence, or a heading or a list
    marker as its very last line (a portrait cut just after them)."""
    fence: str | None = None
    for match in _FENCE.finditer(markdown):
        marker = match.group(1)
        if fence is None:
            fence = marker
        elif marker[0] == fence[0] and len(marker) >= len(fence):
            fence = None
    if fence is not None:
        return "an unclosed code fence"
    lines = markdown.rstrip().splitlines()
    if not lines:
        return None
    last = lines[-1]
    if _DANGLING.match(last):
        return "a list marker or heading with nothing after it"
    if _HEADING.match(last):
        return "a heading at the very end"
    return None


# --- length --------------------------------------------------------------------------------------------


def length_score(target_words: int, words: int) -> float:
    """LongBench-Write's S_l: 100 at the target; a portrait half as long scores 50, one twice as long 67."""
    if words <= 0 or target_words <= 0:
        return 0.0
    if words > target_words:
        score = 100 * (1 - (words / target_words - 1) / 3)
    else:
        score = 100 * (1 - (target_words / words - 1) / 2)
    return round(max(0.0, score), 1)


# --- the outline ---------------------------------------------------------------------------------------

MIN_SECTIONS, MAX_SECTIONS = 2, 12
MAX_TITLE = 200
MAX_POINT = 1000


@dataclass(frozen=True)
class PlannedSection:
    title: str
    point: str
    target_words: int


@dataclass(frozen=True)
class Plan:
    title: str
    sections: tuple[PlannedSection, ...]

    def as_prompt(self) -> list[dict[str, Any]]:
        return [{"title": s.title, "point": s.point, "words": s.target_words} for s in self.sections]


_OBJECT = re.compile(r"\{.*\}", re.DOTALL)


def _line(value: Any, limit: int) -> str | None:
    if not isinstance(value, str):
        return None
    text = " ".join(value.split())  # one line: a title is a heading, never a way to break out of one
    return text[:limit] if text else None


def parse_outline(text: str, target_words: int) -> Plan | None:
    """The outline a model answered, or None when it is not one (the portrait is then written in one call).

    Lenient where models are (a code fence around the JSON, prose before it, budgets that do not add up:
    they are scaled to the target), strict where it matters (a title and two to twelve sections, each
    with a title)."""
    found = _OBJECT.search(text)
    if found is None:
        return None
    try:
        document = json.loads(found.group(0))
    except (ValueError, RecursionError):
        return None
    if not isinstance(document, dict) or not isinstance(document.get("sections"), list):
        return None
    title = _line(document.get("title"), MAX_TITLE)
    raw = document["sections"]
    if title is None or not MIN_SECTIONS <= len(raw) <= MAX_SECTIONS:
        return None
    sections: list[tuple[str, str, float]] = []
    for item in raw:
        if not isinstance(item, dict):
            return None
        section_title = _line(item.get("title"), MAX_TITLE)
        if section_title is None:
            return None
        point = _line(item.get("point"), MAX_POINT) or section_title
        words = item.get("words")
        budget = float(words) if isinstance(words, int | float) and not isinstance(words, bool) else 0.0
        sections.append((section_title, point, budget if 0 < budget < 1e6 else 0.0))
    return Plan(title, tuple(_budgeted(sections, target_words)))


def _budgeted(sections: list[tuple[str, str, float]], target_words: int) -> list[PlannedSection]:
    """Word budgets that add up to the target: as the outline proportioned them (an even share for a
    section without one), rounded so that the sum is exact."""
    even = target_words / len(sections)
    weights = [budget or even for _, _, budget in sections]
    total = sum(weights)
    shares = [weight * target_words / total for weight in weights]
    budgets = [max(1, int(share)) for share in shares]
    # the largest remainders get the words rounding left over
    order = sorted(range(len(shares)), key=lambda i: shares[i] - int(shares[i]), reverse=True)
    for i in order[: max(0, target_words - sum(budgets))]:
        budgets[i] += 1
    return [
        PlannedSection(title, point, budget)
        for (title, point, _), budget in zip(sections, budgets, strict=True)
    ]


def next_ask(target_words: int, written_words: int, planned: list[int], index: int, ratio: float) -> int:
    """How many words to ask section `index` for, so the portrait reaches its target even with a model
    that writes a steady fraction (`ratio`, measured on the sections so far) of what it is asked: the words
    still missing, shared like the remaining budgets, divided by that fraction (bounded: between half
    the plan and three times it)."""
    remaining_plan = sum(planned[index:])
    missing = max(0, target_words - written_words)
    share = missing * planned[index] / remaining_plan if remaining_plan else 0
    ask = share / ratio if ratio > 0 else share
    return max(planned[index] // 2, min(round(ask), 3 * planned[index]))
