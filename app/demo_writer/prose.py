"""The demo writer's prose: sentence templates woven around an artist's facts into a markdown portrait.

Templates name the facts they need (`{country}`, `{work}`...), so a sentence is only used when the catalog
holds those facts. `[a|b]` picks one wording at random, which keeps long portraits from repeating themselves.
A template starting with `group|` or `person|` fits only that kind of artist. Every portrait is seeded from its
facts, so the same artist always reads the same.

The same material serves a planned portrait: `plan` answers an outline (the sections in the order of
`SECTIONS`, with their points) and `write_section` writes one of its sections.
"""

from __future__ import annotations

import hashlib
import json
import random
import re
import string
import unicodedata
from collections import Counter, deque
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from app.kit.text import count_words

_SPACES = re.compile(r"\s+")
_ALTERNATIVES = re.compile(r"\[([^\[\]]*\|[^\[\]]*)\]")
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")
_COUNTRIES_WITH_ARTICLE = {"Netherlands", "Philippines", "Bahamas", "Gambia", "Czech Republic"}
_NUMBER_WORDS = "zero one two three four five six seven eight nine ten eleven twelve".split()
_MAX_NAME_CHARS, _MAX_ITEMS, _MAX_NOTE_WORDS = 200, 20, 60


@dataclass(frozen=True)
class Facts:
    name: str
    kind: str = "person"
    country: str | None = None
    genres: tuple[str, ...] = ()
    active_from: int | None = None
    active_to: int | None = None
    notable_works: tuple[str, ...] = ()
    notes: str | None = None
    # Our own placeholder when the facts could not be read: titled as such, then called "this artist".
    generic: bool = field(default=False, compare=False)


UNNAMED = Facts(name="an unnamed artist", generic=True)


def plain(value: object, limit: int = 10_000) -> str:
    """A fact as one line of text: a newline in a value must never start a heading, a list or HTML block."""
    if not isinstance(value, str):
        return ""
    text = "".join(ch for ch in _SPACES.sub(" ", value) if unicodedata.category(ch) != "Cc")
    return text.strip()[:limit].strip()


def facts_from_document(document: Any) -> Facts | None:
    """Lenient on purpose: the demo should write something for any catalog entry, not validate it."""
    if not isinstance(document, dict) or not plain(document.get("name")):
        return None

    def year(value: object) -> int | None:
        return (
            value if isinstance(value, int) and not isinstance(value, bool) and 0 < value < 10_000 else None
        )

    def texts(value: object) -> tuple[str, ...]:
        items = value if isinstance(value, list) else []
        return tuple(text for text in (plain(item, _MAX_NAME_CHARS) for item in items) if text)[:_MAX_ITEMS]

    return Facts(
        name=plain(document["name"], _MAX_NAME_CHARS),
        kind="group" if document.get("kind") == "group" else "person",
        country=plain(document.get("country"), _MAX_NAME_CHARS) or None,
        genres=texts(document.get("genres")),
        active_from=year(document.get("active_from")),
        active_to=year(document.get("active_to")),
        notable_works=texts(document.get("notable_works")),
        notes=plain(document.get("notes")) or None,
    )


LEAD_OPENERS = [
    "The story of {name} is a story of {genres}, and it begins in {country}.",
    "Few {noun}s from {country} have shaped {genre} quite the way {name} has.",
    "For listeners of {genres}, {name} needs little introduction: {a_noun} from {country}, active {career}.",
    "This is a portrait of {name}, {a_genres} {noun} from {country}.",
    "Active {career}, {name} made {genres} feel both familiar and new.",
    "This is a portrait of {name}, drawn from the facts in Atelier's catalog.",
]
GENERIC_LEAD = (
    "This is a portrait of an unnamed artist: the catalog entry behind it could not be read, so it keeps to "
    "what can be said of anyone who makes music for a living."
)
LEAD_FOLLOWERS = [
    "What follows traces where the music came from, how it grew, and why it still matters.",
    "It is a story of {genres}, of {country}, and of the records that carried both.",
    "Along the way, the portrait lingers on {work}, one of the records that define {name}.",
    "The facts are few but telling, and they sketch a career worth following closely.",
]
SUBTITLES = [
    "a portrait",
    "person|a life in {genre}",
    "group|a story in {genre}",
    "{genre} from {country}",
    "the sound of {country}",
    "the road from {start}",
    "a portrait in {genres}",
]
LIST_INTROS = [
    "The catalog singles out these works:",
    "Among the works most often associated with {name}:",
    "These are the records the catalog names:",
]
CONNECTORS = [
    "In hindsight, ",
    "Seen from today, ",
    "Even so, ",
    "Looking back, ",
    "By most accounts, ",
    "Then again, ",
    "Tellingly, ",
    "Put simply, ",
]
GENERAL = [
    "It is a detail that says a great deal about {name}.",
    "That balance between ambition and modesty runs through everything that followed.",
    "The point is not novelty for its own sake, but [clarity|precision|honesty].",
    "Listeners who know only the best-known records are missing much of the story.",
    "None of this happened by accident.",
    "It is the kind of consistency that only looks easy from the outside.",
    "The music asks for attention, and it [repays it generously|rewards it every time].",
    "Much of what makes the work distinctive lies in what it leaves out.",
    "That tension between tradition and change is the thread that runs through the whole career.",
    "The {genre} of {country} would sound different without it.",
    "For {name}, the song always came first, and everything else followed from it.",
    "There is a lesson in that for anyone who makes music.",
    "The details reward a close listen: a held note here, a sudden silence there.",
    "In that sense, the work is both of its time and [curiously|oddly|quietly] timeless.",
    "Few {noun}s manage that combination, and fewer still sustain it.",
    "It was never about spectacle; it was about getting things right.",
    "The results speak for themselves, and they have been speaking for a long time.",
    "Every era hears something slightly different in the music, which is part of why it lasts.",
    "Context matters here, but so does the plain fact of how good the music is.",
    "That choice, small as it seems, shaped [everything|much of what] that came after.",
    "It is worth listening again with that in mind.",
    "The work from {decade} is a good place to hear this at its clearest.",
    "Even {work}, familiar as it is, sounds fresher with that in mind.",
    "[Nothing|Little] here is wasted, and [nothing|little] is there simply to impress.",
    "The same [care|patience|attention] shows up again and again, in large decisions and small ones.",
    "It would have been easy to repeat a winning formula; {name} [rarely|seldom] did.",
    "Taste, more than technique, is what holds the [whole thing|work] together.",
    "That is not a small achievement in {genre}, where [fashions|habits] harden quickly.",
    "[Heard|Taken] as a whole, the story has a shape that no single record could give it.",
    "What sounds effortless on the records was, by every sign, hard won.",
    "It is music that [trusts|respects] its listeners, and they have returned the favour.",
    "The [best|finest] moments arrive without announcement and stay long after they end.",
    "There is no single secret to it, only a long series of good decisions.",
]


@dataclass(frozen=True)
class Section:
    headings: tuple[str, ...]
    templates: tuple[str, ...]
    lists_works: bool = False
    # What the section says, for an outline (`plan`).
    point: str = ""


SECTIONS = [
    Section(
        ("Origins", "Beginnings", "Where it started"),
        (
            "{Name} emerged in {country} in {decade}, when {genre} was still [finding|building] its audience.",
            "The first steps came in {start}, when {name} began to work in earnest.",
            "Every career has a starting point, and for {name} it was {country}.",
            "The records begin in {start}, but the habits that shaped the music were formed long before.",
            "person|Growing up with the sounds of {country}, {name} absorbed more than any single genre could hold.",
            "group|The group came together the way groups often do, out of shared records, borrowed rooms and a stubborn belief in the songs.",
            "group|The line-up that formed around {start} brought together players who already knew what they wanted to sound like.",
            "person|Before the records came the apprenticeship: small rooms, patient listening and a great deal of practice.",
            "Early on, {name} learned that {genre} rewards patience and punishes shortcuts.",
            "The catalog's notes put it plainly: “{note}”",
            "In {country}, {decade} offered little in the way of easy paths, and {name} took none of them.",
            "Those beginnings were [modest|unremarkable], and nothing about them promised the career that followed.",
            "What set {name} apart from the start was a sense of purpose that listeners noticed before critics did.",
        ),
        point="Where {name} came from, and how the music began.",
    ),
    Section(
        ("Finding a voice", "Finding a sound"),
        (
            "Finding a voice took time, and {name} spent it well.",
            "The early work leaned on the conventions of {genre}, but it did not stay there for long.",
            "By the middle of {decade}, the style had begun to settle into something [recognisable|unmistakable].",
            "What emerged was a sound rooted in {genres} but unwilling to be fenced in by them.",
            "Listeners heard {a_noun} who trusted restraint as much as force.",
            "group|Within the group, roles settled quickly, and the interplay between the members became the point of the music.",
            "person|The voice that emerged was personal, direct and [recognisable|unmistakable] within a few bars.",
            "{Name} drew on the traditions of {country} without treating them as a museum.",
            "There were false starts, as there always are, but each one sharpened the sense of what the music should be.",
            "The turning point was less a single moment than a slow accumulation of confidence.",
            "By the time {work} arrived, the sound was fully formed.",
            "Much of that voice came from the choices {name} refused to make.",
            "The lessons of {genre} were learned early and then bent, carefully, into new shapes.",
        ),
        point="How the music of {name} found a voice of its own.",
    ),
    Section(
        ("The work", "The records", "A body of work"),
        (
            "The body of work is [broad|wide-ranging|generous], and it rewards [listening in order|a patient ear].",
            "Across {span}, {name} kept returning to a small number of ideas and finding new things in each.",
            "Active {career}, {name} built a catalog that moves between {genres} with ease.",
            "{work} is the obvious place to start, but it is far from the only one.",
            "Set beside {other_work}, {work} shows how wide the range really is.",
            "The records are rarely showy; their strength lies in structure, pacing and detail.",
            "Each new release seemed to answer a question the previous one had raised.",
            "{Name} treated the studio as a place to capture performances rather than to manufacture them.",
            "There is a consistency to the work that has nothing to do with repetition.",
            "Even the lesser-known recordings carry the same care as the famous ones.",
            "The catalog counts {works_count} notable works, and each one earns its place.",
            "Heard today, the work from {decade} has aged better than most of what surrounded it.",
            "group|The records capture a band listening closely to itself.",
        ),
        point="The body of work, and the ideas it keeps returning to.",
    ),
    Section(
        ("Notable works", "Key recordings"),
        (
            "{work} remains the record most listeners reach for first.",
            "It is hard to imagine the story of {genre} without {work}.",
            "{work} and {other_work} sit side by side in the catalog, and together they show the range of the {noun}.",
            "If one record had to stand for the whole career, {work} would be a strong candidate.",
            "{other_work} is the quieter companion piece, and in some ways the more revealing one.",
            "What these works share is a refusal to waste a moment.",
            "Listeners returning to {work} years later tend to find something they missed the first time.",
            "Each of these records was made with an audience in mind, but none of them panders to it.",
            "The list is short, but it could easily have been longer.",
            "Together, the notable works chart a path from {start} onward.",
            "Critics have written a great deal about {work}; the record itself says it more [economically|simply].",
        ),
        lists_works=True,
        point="The records that define {name}.",
    ),
    Section(
        ("Sound and style", "The craft"),
        (
            "The sound of {name} is built on {genres}, but the details are what make it distinctive.",
            "Arrangements tend toward clarity: every part has a job, and nothing is there for decoration.",
            "Rhythm matters as much as melody here, and the best performances lock the two together.",
            "There is a particular warmth to the recordings, a sense of people in a room.",
            "{Name} rarely hurries a song; the music is allowed to arrive at its own pace.",
            "The influence of {country} can be heard in the phrasing, even when the material comes from elsewhere.",
            "Within {genre}, that combination of discipline and feeling is rarer than it sounds.",
            "Dynamics carry much of the drama: the quiet passages make the loud ones count.",
            "Lyrics, where they appear, favour concrete images over grand statements.",
            "group|The members play as a unit, with the kind of trust that only years together can build.",
            "person|The voice at the centre of it all is the instrument listeners remember.",
            "Even at its most ambitious, the music keeps a certain plainness that makes it easy to love.",
        ),
        point="What the music sounds like, and the craft behind it.",
    ),
    Section(
        ("On stage", "Live"),
        (
            "On stage, {name} gave performances that felt both rehearsed and spontaneous.",
            "Concerts were where the songs were tested, reshaped and sometimes rediscovered.",
            "Audiences in {country} and beyond came for the records and stayed for the performances.",
            "The live versions of {work} often stretched and bent the studio original.",
            "There is a difference between playing songs and performing them, and {name} understood it early.",
            "Small rooms and large halls called for different things, and the music adapted to both.",
            "Reviews of the concerts tend to agree on one thing: the room changed when the music started.",
            "group|Night after night, the group's chemistry did what no studio could.",
            "person|Alone at the centre of the stage, {name} held attention with very little apparent effort.",
            "Many listeners first heard the music live, and never quite heard the records the same way again.",
        ),
        point="The concerts, where the songs were tested and reshaped.",
    ),
    Section(
        ("Collaborators and context", "In good company"),
        (
            "No career happens in isolation, and this one was shaped by {circle} as much as by any single idea.",
            "The {genre} scene of {decade} was crowded, competitive and generous in equal measure.",
            "Producers, engineers and fellow musicians all left marks on the records, even when their names stayed in the small print.",
            "In {country}, {name} worked alongside peers who were asking similar questions in different ways.",
            "The wider world of {genres} supplied both models to follow and examples to avoid.",
            "Trends came and went, and the music absorbed a few of them while ignoring most.",
            "The relationships behind the music were not always easy, but they were usually productive.",
            "It helps to remember what else was happening in {genre} at the time.",
            "Contemporaries recognised a kindred spirit in {name}, even when their styles could hardly have been further apart.",
            "The catalog adds a detail that places the story in context: “{note}”",
        ),
        point="The people and the scene around {name}.",
    ),
    Section(
        ("Reception", "How it was heard"),
        (
            "Reception was not always warm at first, but it grew steadily.",
            "Critics came to {work} slowly; audiences got there first.",
            "In {country}, the response to the music was immediate and lasting.",
            "Over time, the critical consensus settled on a simple view: this was work of real substance.",
            "Not every record found its audience on release, and some waited years to be understood.",
            "Listeners outside {country} discovered the music in waves, often through {work}.",
            "Commercial success and critical respect did not always arrive together, but both came in the end.",
            "The reputation of {name} rests less on any single triumph than on a long run of consistent work.",
            "Younger listeners keep finding their way to the records, which says more than any review.",
            "For many, {name} became shorthand for a certain idea of {genre}.",
        ),
        point="How the music was received, by critics and by listeners.",
    ),
    Section(
        ("Legacy", "What remains"),
        (
            "The legacy of {name} is easy to hear and harder to summarise.",
            "Later generations of {genre} musicians have drawn on the work, openly or otherwise.",
            "{work} in particular continues to be covered, quoted and argued over.",
            "What endures is not only the music but an attitude toward it: serious, curious and unpretentious.",
            "The career reached its end in {end}, but the records have kept their own schedule.",
            "Active since {since}, {name} keeps adding to a body of work that already stands on its own.",
            "In {country}, the name {name} still carries weight.",
            "It is difficult to imagine {genre} today without the ground {name} helped to clear.",
            "Perhaps the truest measure of the legacy is how natural the music still sounds.",
            "The catalog's last word on the subject is worth repeating: “{note}”",
            "Whatever comes next, the work already stands as one of the clearer statements {genre} has produced.",
        ),
        point="What {name} leaves behind, and why it still matters.",
    ),
]
# Only the last section of a planned portrait concludes: one sentence from here, then the closing line.
CONCLUSIONS = [
    "In the end, the story of {name} is one of [patience|persistence|craft] rewarded.",
    "That, finally, is why the music of {name} still matters.",
    "Taken together, the records tell a story that is still being heard.",
    "What remains, at the close, is the music itself, and it needs no defence.",
]
CLOSING = "*This portrait was written by Atelier's demo writer from catalog facts, without a language model.*"
_SECTIONS_PER_WORDS = 500
_MAX_PLANNED_SECTIONS = 7


def write_portrait(
    facts: Facts, target_words: int, english_note: str | None = None, *, exact: bool = False
) -> str:
    """A markdown portrait of about `target_words` words; `english_note` is added to the lead. `exact` cuts
    it after the sentence nearest to `target_words` words (for a model that stops at a given length)."""
    return _Writer(facts).write(target_words, english_note, exact=exact)


def plan(facts: Facts, target_words: int) -> dict[str, Any]:
    """An outline, as `app.generation.prompt.outline_messages` asks for: a title and 3 to 7 sections (fewer
    for short portraits), opening with the origins and closing with the legacy, whose words add up to the
    target."""
    return _Writer(facts).plan(target_words)


def write_section(
    facts: Facts,
    title: str,
    planned: Sequence[tuple[str, int]],
    index: int,
    words: int,
    english_note: str | None = None,
) -> str:
    """Section `index` (from 0) of the outline `title`, `planned` (each section's heading and words), about
    `words` words. The first section opens with the title and a lead; only the last one concludes. Sections
    end with a blank line (the last with a newline), so that they join into one document.

    The sections before it are written first and thrown away: the writer then knows which sentences it has
    already used, as a model knows the portrait so far, and a long portrait repeats itself no more for being
    written in pieces."""
    writer = _Writer(facts)
    for earlier in range(index):
        writer.section(title, planned, earlier, planned[earlier][1], english_note)
    return writer.section(title, planned, index, words, english_note)


def _cut(head: str, body: str, words: int) -> str:
    """`head`, then `body` cut after the sentence that brings the whole nearest to `words` words (at least
    one sentence of it is kept)."""
    total = count_words(head)
    pieces = re.findall(r"\S+\s*", body)
    best, best_gap = len(pieces), -1
    for index, piece in enumerate(pieces):
        total += count_words(piece)
        if piece.rstrip()[-1:] in (".", "!", "?", "…", "”"):
            gap = abs(total - words)
            if best_gap < 0 or gap < best_gap:
                best, best_gap = index + 1, gap
            elif total > words:
                break
    return f"{head}\n\n{''.join(pieces[:best]).rstrip()}"


def _seed(facts: Facts) -> int:
    document = json.dumps(asdict(facts), sort_keys=True, ensure_ascii=False)
    return int.from_bytes(hashlib.sha256(document.encode()).digest()[:8], "big")


def _fields(template: str) -> set[str]:
    return {name for _, name, _, _ in string.Formatter().parse(template) if name}


def _join(items: Sequence[str]) -> str:
    return items[0] if len(items) == 1 else f"{', '.join(items[:-1])} and {items[-1]}"


def _split_kind(template: str) -> tuple[str, str]:
    kind, bar, text = template.partition("|")
    return (kind, text) if bar and kind in ("group", "person") else ("", template)


def _a(phrase: str) -> str:
    return f"{'an' if phrase[:1].lower() in 'aeiou' else 'a'} {phrase}"


def _note_sentences(notes: str | None) -> deque[str]:
    sentences: deque[str] = deque()
    for sentence in _SENTENCE_END.split(notes or ""):
        words = sentence.split()
        if words:
            text = " ".join(words[:_MAX_NOTE_WORDS]) + ("…" if len(words) > _MAX_NOTE_WORDS else "")
            sentences.append(text if text[-1] in ".!?…" else f"{text}.")
    return sentences


class _Writer:
    def __init__(self, facts: Facts) -> None:
        self.facts = facts
        self.rng = random.Random(_seed(facts))
        self.uses: Counter[str] = Counter()
        self.notes = _note_sentences(facts.notes)
        self.static = self._static_context()

    def _static_context(self) -> dict[str, str]:
        f = self.facts
        context = (
            {"name": "this artist", "Name": "This artist"} if f.generic else {"name": f.name, "Name": f.name}
        )
        if f.country:
            needs_article = f.country in _COUNTRIES_WITH_ARTICLE or f.country.startswith("United ")
            context["country"] = f"the {f.country}" if needs_article else f.country
        if f.genres:
            context["genres"] = _join(f.genres)
            context["a_genres"] = _a(context["genres"])
        if f.active_from is not None:
            context["start"] = str(f.active_from)
            context["decade"] = f"the {f.active_from // 10 * 10}s"
            if f.active_to is None:
                context["since"] = context["start"]
                context["career"] = f"since {f.active_from}"
            elif f.active_to >= f.active_from:
                context["end"] = str(f.active_to)
                context["career"] = f"from {f.active_from} to {f.active_to}"
                if f.active_to - f.active_from > 1:
                    context["span"] = f"{f.active_to - f.active_from} years"
        if len(f.notable_works) > 1:
            count = len(f.notable_works)
            context["works_count"] = _NUMBER_WORDS[count] if count < len(_NUMBER_WORDS) else str(count)
        context["circle"] = "the members" if f.kind == "group" else "the musicians around them"
        return context

    def _context(self) -> dict[str, str]:
        """Fresh picks per sentence, so repeated templates still name different works and genres."""
        context = dict(self.static)
        nouns = ["group", "band"] if self.facts.kind == "group" else ["artist", "musician", "performer"]
        context["noun"] = self.rng.choice(nouns)
        context["a_noun"] = _a(context["noun"])
        if self.facts.genres:
            context["genre"] = self.rng.choice(self.facts.genres)
        works = list(self.facts.notable_works)
        if works:
            work = self.rng.choice(works)
            context["work"] = f"*{work}*"
            others = [other for other in works if other != work]
            if others:
                context["other_work"] = f"*{self.rng.choice(others)}*"
        if self.notes:
            context["note"] = self.notes[0]
        return context

    def _fits(self, template: str, context: dict[str, str], line_start: bool) -> bool:
        kind, text = _split_kind(template)
        # A fact at the start of a line could open a heading, a list or an HTML block.
        starts_with_fact = line_start and text.startswith("{")
        return kind in ("", self.facts.kind) and _fields(text) <= context.keys() and not starts_with_fact

    def render(
        self,
        templates: Sequence[str],
        *,
        line_start: bool = False,
        connect: bool = True,
        require: str = "",
        paragraph: set[str] | None = None,
    ) -> str:
        """One sentence from `templates`; `paragraph` collects the templates already in this paragraph."""
        context = self._context()
        fitting = [t for t in templates if self._fits(t, context, line_start)]
        if require:
            fitting = [t for t in fitting if require in _fields(t)] or fitting
        fitting = [t for t in fitting if t not in (paragraph or ())] or fitting
        # The least used sentences first: a long portrait repeats itself as little and as late as possible.
        fewest = min(self.uses[t] for t in fitting)
        template = self.rng.choice([t for t in fitting if self.uses[t] == fewest])
        self.uses[template] += 1
        if paragraph is not None:
            paragraph.add(template)
        text = _split_kind(template)[1]
        if connect and not line_start and "{note}" not in text and self.rng.random() < 0.2:
            text = self.rng.choice(CONNECTORS) + (
                text.replace("{Name}", "{name}", 1) if text.startswith("{") else text[0].lower() + text[1:]
            )
        text = _ALTERNATIVES.sub(lambda match: self.rng.choice(match.group(1).split("|")), text)
        if "note" in _fields(text):
            self.notes.popleft()
        return text.format_map(context)

    def paragraph(self, section: Section, sentences: int, require: str = "") -> str:
        out: list[str] = []
        chosen: set[str] = set()
        for index in range(sentences):
            # Mostly the section's own sentences, with general ones for variety and once those wear thin.
            own_uses = min(self.uses[t] for t in section.templates)
            general_uses = min(self.uses[t] for t in GENERAL)
            prefer_own = own_uses <= general_uses and self.rng.random() < 0.75
            pool = section.templates if prefer_own or (require and index == 1) else GENERAL
            required = require if index == 1 else ""
            out.append(self.render(pool, line_start=index == 0, require=required, paragraph=chosen))
        return " ".join(out)

    def lead(self, english_note: str | None) -> str:
        opener = GENERIC_LEAD if self.facts.generic else self.render(LEAD_OPENERS, line_start=True)
        lead = [opener, self.render(LEAD_FOLLOWERS, connect=False)]
        if english_note:
            lead.append(english_note)
        return " ".join(lead)

    def works_list(self) -> str:
        intro = self.render(LIST_INTROS, line_start=True)
        return f"{intro}\n\n" + "\n".join(f"- *{w}*" for w in self.facts.notable_works)

    def title(self) -> str:
        f = self.facts
        name = f.name[:1].upper() + f.name[1:] if f.generic else f.name
        return f"{name}: {self.render(SUBTITLES, connect=False)}"

    def sections(self) -> list[Section]:
        return [s for s in SECTIONS if self.facts.notable_works or not s.lists_works]

    def write(self, target_words: int, english_note: str | None, *, exact: bool = False) -> str:
        title = f"# {self.title()}"
        lead = self.lead(english_note)
        sections = self.sections()
        headings = [self.rng.choice(s.headings) for s in sections]
        preludes = {index: self.works_list() for index, s in enumerate(sections) if s.lists_works}
        paragraphs: list[list[str]] = [
            [self.paragraph(s, 2, require="note" if index == 0 else "")] for index, s in enumerate(sections)
        ]

        def parts() -> list[str]:
            parts = [title, lead]
            for index, heading in enumerate(headings):
                parts.append(f"## {heading}")
                if index in preludes:
                    parts.append(preludes[index])
                parts.extend(paragraphs[index])
            return parts

        def assemble() -> str:
            return "\n\n".join([*parts(), CLOSING]) + "\n"

        total = count_words(assemble())
        while total < target_words:
            fewest = min(len(p) for p in paragraphs)
            index = self.rng.choice([i for i, p in enumerate(paragraphs) if len(p) == fewest])
            addition = self.paragraph(sections[index], self.rng.randint(3, 5))
            words = count_words(addition)
            # Stop at whichever side of the target is closer, rather than always overshooting (unless the
            # text is to be cut to the target, which needs text past it).
            if not exact and total + words - target_words > target_words - total:
                break
            paragraphs[index].append(addition)
            total += words
        if not exact:
            return assemble()
        # The title, the lead and the first heading stay; the cut falls after a sentence.
        done = parts()
        body = _cut("\n\n".join(done[:3]), "\n\n".join(done[3:]), target_words - count_words(CLOSING))
        return f"{body}\n\n{CLOSING}\n"

    def plan(self, target_words: int) -> dict[str, Any]:
        sections = self.sections()
        count = max(3, min(_MAX_PLANNED_SECTIONS, 2 + target_words // _SECTIONS_PER_WORDS))
        middle = sorted(self.rng.sample(range(1, len(sections) - 1), count - 2))
        chosen = [sections[0], *(sections[i] for i in middle), sections[-1]]
        # Uneven shares, as a model would plan them, in round numbers; the last takes what is left.
        weights = [self.rng.uniform(0.8, 1.2) for _ in chosen]
        step = 10 if target_words >= 50 * count else 1
        words = [max(step, round(target_words * w / sum(weights) / step) * step) for w in weights[:-1]]
        words.append(target_words - sum(words))
        if words[-1] < 1:
            words = [target_words // count + (i < target_words % count) for i in range(count)]
        name = self.static["name"]
        return {
            "title": self.title(),
            "sections": [
                {"title": self.rng.choice(s.headings), "point": s.point.format(name=name), "words": w}
                for s, w in zip(chosen, words, strict=True)
            ],
        }

    def material(self, heading: str, index: int, count: int) -> Section:
        """The templates for a planned section: those whose heading it has (an outline of ours), or else
        the ones at the same place in the portrait (someone else's outline)."""
        sections = self.sections()
        for section in sections:
            if heading in section.headings:
                return section
        return sections[round(index * (len(sections) - 1) / max(1, count - 1))]

    def section(
        self, title: str, planned: Sequence[tuple[str, int]], index: int, words: int, note: str | None
    ) -> str:
        heading = planned[index][0]
        material = self.material(heading, index, len(planned))
        head = [f"# {title}", self.lead(note)] if index == 0 else []
        head.append(f"## {heading}")
        if material.lists_works and self.facts.notable_works:
            head.append(self.works_list())
        last = index == len(planned) - 1
        ending = [self.render(CONCLUSIONS, line_start=True, connect=False), CLOSING] if last else []
        target = words - count_words("\n\n".join(ending))
        require = "note" if material is SECTIONS[0] else ""
        paragraphs = [self.paragraph(material, 2, require=require)]
        total = count_words("\n\n".join(head + paragraphs))
        while total < target:  # past the target, to be cut back to it after a sentence
            paragraphs.append(self.paragraph(material, self.rng.randint(3, 5)))
            total += count_words(paragraphs[-1])
        text = _cut("\n\n".join(head), "\n\n".join(paragraphs), target)
        return "\n\n".join([text, *ending]) + ("\n" if last else "\n\n")
