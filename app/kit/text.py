"""Text folding shared by search and uniqueness: case- and accent-insensitive on every database."""

from __future__ import annotations

import re

from anyascii import anyascii

_SPACES = re.compile(r"\s+")
_WORDS = re.compile(r"[^\W_]+")


def fold(text: str) -> str:
    """'  Édith   PIAF ' -> 'edith piaf': no accents, no case, single spaces.

    Transliteration (anyascii) rather than dropping combining marks alone, so that letters which do not
    decompose match their plain spelling too: 'Ágætis' -> 'agaetis', 'Øresund' -> 'oresund', 'ß' -> 'ss'.
    """
    return _SPACES.sub(" ", anyascii(text).casefold()).strip()


def count_words(markdown: str) -> int:
    """Words are runs of letters or digits, as the contract says."""
    return len(_WORDS.findall(markdown))
