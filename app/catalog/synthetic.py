"""`atelier seed --synthetic N`: N made-up artists, for measuring the catalog at scale (bench/search.py).

Deterministic: the same N gives the same rows (one `random.Random(N)` draws everything). Names mix plain,
accented and non-Latin spellings (Cyrillic, Greek, Japanese: found by their transliteration), genres come
from GENRES with a long tail (a few common, most rare), each artist has 1-5 works and some titles carry a
made-up word that only a few artists share. Rows are written with bulk INSERTs in batches, not one ORM add
each; the folded columns and `artist_genres` are filled by the same functions the ORM listener uses.
"""

from __future__ import annotations

import random
from typing import Any

from sqlalchemy import insert, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.catalog.models import Artist, artist_genres, genre_keys, genre_rows, name_columns, search_text
from app.db import utcnow

BATCH = 2000

FIRST = (
    "Anna Ben Clara David Elena Felix Grace Hugo Iris Jonas Karin Leo Maria Nils Olga Paul Rosa Sam Tara Umar "
    "Vera Walter Yara Zoe Ines Mateo Lucia Omar Hanna Igor Lena Marco Nadia Oscar Pia Rafael Sofia Tomas "
    "Amir Chloe"
).split()
FIRST_ACCENTED = (
    "Zoë Björn Ågot José François Chloé Søren Małgorzata Dvořák Jürgen Inês Øystein Émile Ðorđe Łukasz Renée "
    "Núria Ýrr Þóra Ñuflo"
).split()
LAST = (
    "Smith Garcia Müller Rossi Dubois Nowak Jensen Silva Novak Kowalski Hansen Moreau Costa Bauer Romano "
    "Larsen Fischer Lopez Martin Weber Haas Keller Brun Lindqvist Okafor Mensah Tanaka Kim Nguyen Singh "
    "Ferreira Castillo Ortega Navarro Vargas Horvath Szabo Kovacs Popescu Ionescu"
).split()
LAST_ACCENTED = (
    "Gonçalves Søndergaard Ångström Núñez Wróblewski Čapek Ólafsdóttir Dörfler Ibáñez Coşkun Żukowski "
    "Åkesson Ströbel Hüsker Lefèvre Brontë"
).split()
NON_LATIN = (
    "Иван Петров|Мария Соколова|Алексей Кузнецов|Наталья Орлова|Νίκος Ξυλούρης|Ελένη Καραΐνδρου|"
    "Γιάννης Μαρκόπουλος|坂本 龍一|美空 ひばり|久石 譲|矢野 顕子|Σταμάτης Κόκοτας|Фёдор Шаляпин"
).split("|")
SYLLABLES = "ka ri mo ten sa lu vor el ban dri ko nes ta mi ra zu ol fen gar ith".split()
GROUP_WORDS = "Velvet Iron Paper Silver Night Glass Electric Northern Hollow Golden Quiet Wild".split()
GROUP_NOUNS = "Foxes Engines Lanterns Saints Rivers Owls Machines Gardens Ghosts Tigers".split()
# About sixty genres: the first few are on many artists, the long tail on few (weights below).
GENRES = (
    "rock|pop|jazz|folk|electronic|hip hop|classical|blues|soul|country|reggae|punk|metal|funk|"
    "ambient|techno|house|disco|gospel|opera|chanson|fado|flamenco|tango|samba|bossa nova|salsa|cumbia|"
    "afrobeat|highlife|qawwali|gamelan|k-pop|j-pop|city pop|enka|rebetiko|klezmer|polka|zydeco|bluegrass|"
    "ska|dub|grime|drill|trap|shoegaze|post-rock|krautrock|synthwave|vaporwave|drum and bass|dubstep|"
    "trip hop|new wave|no wave|musique concrète|minimalism|throat singing|mbalax|Raï"
).split("|")
GENRE_WEIGHTS = [1 / (rank + 1) ** 1.2 for rank in range(len(GENRES))]
TITLE_FIRST = "Midnight Blue Broken Silent Golden Distant Electric Paper Wild Last Early Northern".split()
TITLE_SECOND = "Harbour Letters Dreams Garden Rain Mirrors Highway Songs Waltz Station Lights Tides".split()
COUNTRIES = "France|Germany|Japan|Brazil|Nigeria|United States|Greece|Russia|Mexico|India|Sweden".split("|")


def _made_up_word(rng: random.Random, syllables: int) -> str:
    return "".join(rng.choice(SYLLABLES) for _ in range(syllables)).capitalize()


def _name(rng: random.Random) -> str:
    roll = rng.random()
    if roll < 0.08:
        return rng.choice(NON_LATIN) + " " + _made_up_word(rng, 2)
    if roll < 0.15:
        return f"The {rng.choice(GROUP_WORDS)} {rng.choice(GROUP_NOUNS)} {_made_up_word(rng, 2)}"
    first = rng.choice(FIRST_ACCENTED if roll < 0.3 else FIRST)
    last = rng.choice(LAST_ACCENTED if rng.random() < 0.2 else LAST)
    return f"{first} {_made_up_word(rng, rng.randint(1, 3))} {last}"


def _work(rng: random.Random) -> str:
    title = f"{rng.choice(TITLE_FIRST)} {rng.choice(TITLE_SECOND)}"
    # a rare word (four syllables: 20**4 possibilities) makes a title few artists share
    return f"{title} {_made_up_word(rng, 4)}" if rng.random() < 0.5 else title


def synthetic_artists(count: int) -> list[dict[str, Any]]:
    """`count` artists as the columns of their rows (folded columns included), unique by folded name."""
    rng = random.Random(count)
    rows: list[dict[str, Any]] = []
    hashes: set[str] = set()
    while len(rows) < count:
        name = _name(rng)
        folded = name_columns(name)
        if folded["name_hash"] in hashes:
            continue
        hashes.add(folded["name_hash"])
        genres = list(dict.fromkeys(rng.choices(GENRES, GENRE_WEIGHTS, k=rng.randint(1, 3))))
        works = [_work(rng) for _ in range(rng.randint(1, 5))]
        start = rng.randint(1920, 2020)
        rows.append(
            {
                "name": name,
                **folded,
                "kind": "group" if name.startswith("The ") else "person",
                "country": rng.choice(COUNTRIES),
                "genres": genres,
                "active_from": start,
                "active_to": None if rng.random() < 0.4 else start + rng.randint(0, 40),
                "notable_works": works,
                "notes": None,
                "search_text": search_text(name, genres, works),
                "genre_keys": genre_keys(genres),
            }
        )
    return rows


async def seed_synthetic(sessionmaker: async_sessionmaker[AsyncSession], count: int) -> int:
    """Add the synthetic artists whose names are not there yet (so running it twice adds nothing more);
    return how many were added."""
    added = 0
    now = utcnow()
    rows = synthetic_artists(count)
    async with sessionmaker() as session:
        for start in range(0, len(rows), BATCH):
            batch = rows[start : start + BATCH]
            taken = set(
                await session.scalars(
                    select(Artist.name_hash).where(Artist.name_hash.in_([row["name_hash"] for row in batch]))
                )
            )
            batch = [
                {**row, "facts_version": 1, "created_at": now, "updated_at": now}
                for row in batch
                if row["name_hash"] not in taken
            ]
            if not batch:
                continue
            # Core INSERTs (executemany; no ORM listener runs), then the new ids by name
            await session.execute(insert(Artist), batch)
            found = await session.execute(
                select(Artist.name_hash, Artist.id).where(
                    Artist.name_hash.in_([row["name_hash"] for row in batch])
                )
            )
            ids: dict[str, int] = dict(found.all())
            genres = [
                genre_row for row in batch for genre_row in genre_rows(ids[row["name_hash"]], row["genres"])
            ]
            await session.execute(insert(artist_genres), genres)
            added += len(batch)
        await session.commit()
    return added
