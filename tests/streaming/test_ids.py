"""Event ids, `<stream>:<seq>`: written by `event_id`, read back by `parse_event_id`, which refuses anything
else (a `Last-Event-ID` header is whatever the client sends) without ever raising."""

from __future__ import annotations

import pytest

from app.streaming.ids import MAX_SEQ, event_id, parse_event_id


def test_event_id_when_stream_and_seq_then_joined_by_a_colon() -> None:
    assert event_id("job-1", 3) == "job-1:3"


@pytest.mark.parametrize(
    ("stream_id", "seq"),
    [("job:with:colons", 42), ("replay-3", 0), ("3f2a9c", MAX_SEQ), ("Édith", 1)],
)
def test_event_id_when_parsed_back_then_same_stream_and_seq(stream_id: str, seq: int) -> None:
    assert parse_event_id(event_id(stream_id, seq)) == (stream_id, seq)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("abc:12", ("abc", 12)),
        ("replay-3:0", ("replay-3", 0)),
        ("a:b:5", ("a:b", 5)),
        ("3f2a9c:1", ("3f2a9c", 1)),
        (" abc:12 ", ("abc", 12)),
        ("abc:007", ("abc", 7)),
        ("abc:" + "0" * 11 + "7", ("abc", 7)),  # twelve digits: the longest seq read
    ],
)
def test_parse_event_id_when_valid_then_stream_and_seq(value: str, expected: tuple[str, int]) -> None:
    assert parse_event_id(value) == expected


def test_parse_event_id_when_seq_is_exactly_max_seq_then_accepted() -> None:
    assert parse_event_id(f"abc:{MAX_SEQ}") == ("abc", MAX_SEQ)


@pytest.mark.parametrize("seq", [MAX_SEQ + 1, 2 * MAX_SEQ, 999_999_999_999], ids=str)
def test_parse_event_id_when_seq_above_max_seq_then_none(seq: int) -> None:
    assert parse_event_id(f"abc:{seq}") is None


@pytest.mark.parametrize(
    "value",
    [
        None,
        "",
        "   ",
        "nocolon",
        "x:",
        ":5",
        ":",
        "x:-1",
        "x:+1",
        "x:1e3",
        "x:1.5",
        "x: 5",
        "x:5 6",
        "x:0x10",
        "x:" + "0" * 12 + "1",  # thirteen digits, however small the number
        "x:" + "9" * 13,
        "x:" + "1" * 100,
        "x:" + "9" * 5000,  # int() of this would be slow (and refused since Python 3.11's digit limit)
        "x:\u00b2",  # superscript two: str.isdigit() says yes, int() says no
        "x:\u0661",  # ARABIC-INDIC DIGIT ONE
        "x:\uff15",  # FULLWIDTH DIGIT FIVE
    ],
)
def test_parse_event_id_when_invalid_then_none(value: str | None) -> None:
    assert parse_event_id(value) is None
