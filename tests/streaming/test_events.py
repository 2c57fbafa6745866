"""The event log's values: each payload's JSON object, events at their seq, and merge_text folding runs of
text for a reader that fell behind without losing anything."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime

import pytest

from app.streaming.events import (
    Continued,
    Done,
    Error,
    Event,
    Outline,
    OutlineSection,
    Payload,
    Section,
    Text,
    merge_text,
)
from tests.streaming.samples import DONE, ERROR, METADATA, PAYLOADS


def text(seq: int, delta: str) -> Event:
    return Event(seq=seq, payload=Text(delta))


def metadata(seq: int, cached: bool = False) -> Event:
    return Event(seq=seq, payload=replace(METADATA, cached=cached))


def done(seq: int) -> Event:
    return Event(seq=seq, payload=DONE)


def error(seq: int) -> Event:
    return Event(seq=seq, payload=ERROR)


def shape(events: list[Event]) -> list[tuple[int, Payload]]:
    """What a reader sees of events (Event compares by identity: it carries the encoder's memo)."""
    return [(event.seq, event.payload) for event in events]


# --- payloads' JSON objects --------------------------------------------------------------------------


def test_metadata_data_when_fresh_job_then_exact_object_with_nested_artist_and_utc_z() -> None:
    assert METADATA.data() == {
        "type": "metadata",
        "job_id": "3f2a9c",
        "artist": {"id": 7, "name": "Édith Piaf\nevent: done"},
        "model": "mistral-large-latest",
        "writer": "mistral",
        "cached": False,
        "article_id": None,
        "version": None,
        "language": "fr",
        "length": "long",
        "target_words": 3000,
        "started_at": "2025-03-04T05:06:07Z",
        "stale": False,
    }


def test_metadata_data_when_replay_of_a_stale_article_then_ids_cached_and_stale_set() -> None:
    replay = replace(METADATA, job_id=None, cached=True, article_id=12, version=3, stale=True)
    data = replay.data()
    assert (data["job_id"], data["cached"], data["article_id"], data["version"], data["stale"]) == (
        None,
        True,
        12,
        3,
        True,
    )


def test_metadata_data_when_started_at_has_microseconds_then_iso_fraction_and_z() -> None:
    started = datetime(2025, 12, 31, 23, 59, 59, 123456, tzinfo=UTC)
    assert replace(METADATA, started_at=started).data()["started_at"] == "2025-12-31T23:59:59.123456Z"


def test_text_data_when_delta_then_type_and_delta_only() -> None:
    assert Text("Hello\nworld").data() == {"type": "text", "delta": "Hello\nworld"}


def test_continued_data_when_seam_then_reason_and_attempt() -> None:
    assert Continued(reason="length", attempt=2).data() == {
        "type": "continued",
        "reason": "length",
        "attempt": 2,
    }


def test_outline_data_when_sections_then_list_of_title_and_target_words_in_order() -> None:
    outline = Outline(sections=(OutlineSection("Early years", 400), OutlineSection("Legacy", 250)))
    assert outline.data() == {
        "type": "outline",
        "sections": [{"title": "Early years", "target_words": 400}, {"title": "Legacy", "target_words": 250}],
    }


def test_outline_data_when_no_sections_then_empty_list() -> None:
    assert Outline(sections=()).data() == {"type": "outline", "sections": []}


def test_section_data_when_started_then_index_and_title() -> None:
    assert Section(index=0, title="Early years").data() == {
        "type": "section",
        "index": 0,
        "title": "Early years",
    }


def test_done_data_when_usage_known_then_usage_object() -> None:
    assert DONE.data() == {
        "type": "done",
        "article_id": 12,
        "version": 3,
        "words": 2987,
        "finish_reason": "stop",
        "truncated": False,
        "usage": {"prompt_tokens": 210, "completion_tokens": 4100},
        "duration_ms": 41_250,
        "continuations": 2,
        "length_score": 99.6,
    }


def test_done_data_when_usage_unknown_then_usage_null() -> None:
    data = replace(DONE, usage=None).data()
    assert "usage" in data and data["usage"] is None
    assert json.dumps(data["usage"]) == "null"


def test_error_data_when_retryable_later_then_retry_after_seconds() -> None:
    assert ERROR.data() == {
        "type": "error",
        "code": "upstream_timeout",
        "message": "The writer stopped answering.",
        "retryable": True,
        "retry_after": 30,
    }


def test_error_data_when_no_retry_after_given_then_null() -> None:
    refused = Error(code="cancelled", message="Cancelled.", retryable=False)
    assert refused.data() == {
        "type": "error",
        "code": "cancelled",
        "message": "Cancelled.",
        "retryable": False,
        "retry_after": None,
    }


@pytest.mark.parametrize("payload", PAYLOADS, ids=lambda payload: payload.type)
def test_payload_data_when_any_type_then_type_comes_first_and_names_the_event(payload: Payload) -> None:
    data = payload.data()
    assert next(iter(data)) == "type"
    assert data["type"] == payload.type == Event(seq=1, payload=payload).type


@pytest.mark.parametrize("payload", PAYLOADS, ids=lambda payload: payload.type)
def test_payload_data_when_any_type_then_plain_json_that_survives_a_round_trip(payload: Payload) -> None:
    data = payload.data()
    assert json.loads(json.dumps(data)) == data


# --- events ------------------------------------------------------------------------------------------


def test_event_when_built_then_no_wire_memo_yet() -> None:
    assert Event(seq=1, payload=Text("x")).wire is None


@pytest.mark.parametrize("payload", PAYLOADS, ids=lambda payload: payload.type)
def test_event_terminal_when_payload_type_then_only_done_and_error(payload: Payload) -> None:
    assert Event(seq=1, payload=payload).terminal is isinstance(payload, Done | Error)


# --- merge_text --------------------------------------------------------------------------------------


def test_merge_text_when_empty_then_nothing() -> None:
    assert list(merge_text([])) == []


def test_merge_text_when_run_of_text_then_one_event_with_last_seq_and_joined_delta() -> None:
    merged = list(merge_text([text(2, "a "), text(3, "b "), text(4, "c")]))
    assert shape(merged) == [(4, Text("a b c"))]


def test_merge_text_when_run_merged_then_new_event_without_memo() -> None:
    run = [text(1, "a"), text(2, "b")]
    for event in run:
        event.wire = b"encoded on its own"
    (merged,) = merge_text(run)
    assert merged not in run
    assert merged.wire is None


def test_merge_text_when_single_text_then_same_event_untouched() -> None:
    only = text(5, "alone")
    (merged,) = merge_text([only])
    assert merged is only


def test_merge_text_when_single_texts_between_others_then_each_untouched() -> None:
    events = [metadata(1), text(2, "a"), error(3), text(4, "b")]
    merged = list(merge_text(events))
    assert len(merged) == len(events)
    assert all(m is e for m, e in zip(merged, events, strict=True))


def test_merge_text_when_metadata_and_done_between_runs_then_never_merged_across() -> None:
    events = [
        metadata(1),
        text(2, "a"),
        text(3, "b"),
        metadata(4, cached=True),
        text(5, "c"),
        text(6, "d"),
        text(7, "e"),
        done(8),
    ]
    merged = list(merge_text(events))
    assert [(e.seq, e.type) for e in merged] == [
        (1, "metadata"),
        (3, "text"),
        (4, "metadata"),
        (7, "text"),
        (8, "done"),
    ]
    assert merged[1].payload == Text("ab")
    assert merged[3].payload == Text("cde")
    assert merged[0] is events[0] and merged[2] is events[3] and merged[4] is events[7]


def test_merge_text_when_error_between_runs_then_runs_stay_apart() -> None:
    events = [text(1, "a"), text(2, "b"), error(3), text(4, "c"), text(5, "d")]
    assert shape(list(merge_text(events))) == [(2, Text("ab")), (3, ERROR), (5, Text("cd"))]


@pytest.mark.parametrize("seam", [Continued("length", 1), Section(1, "Later"), Outline(())], ids=str)
def test_merge_text_when_seam_or_section_between_runs_then_runs_stay_apart(seam: Payload) -> None:
    events = [text(1, "a"), text(2, "b"), Event(seq=3, payload=seam), text(4, "c"), text(5, "d")]
    assert shape(list(merge_text(events))) == [(2, Text("ab")), (3, seam), (5, Text("cd"))]


def test_merge_text_when_run_ends_the_batch_then_flushed() -> None:
    merged = list(merge_text([metadata(1), text(2, "x"), text(3, "y")]))
    assert shape(merged[-1:]) == [(3, Text("xy"))]


def test_merge_text_when_no_text_then_same_events() -> None:
    events = [metadata(1), done(2)]
    merged = list(merge_text(events))
    assert all(m is e for m, e in zip(merged, events, strict=True)) and len(merged) == 2


def test_merge_text_when_empty_and_multiline_deltas_then_concatenated_exactly() -> None:
    deltas = ["", "line\n", "\r\n", "", "end\u2028"]
    merged = list(merge_text([text(i + 1, d) for i, d in enumerate(deltas)]))
    assert shape(merged) == [(5, Text("".join(deltas)))]


def test_merge_text_when_merged_then_inputs_not_mutated() -> None:
    events = [text(1, "a"), text(2, "b")]
    list(merge_text(events))
    assert shape(events) == [(1, Text("a")), (2, Text("b"))]


def test_merge_text_when_generator_input_then_complete() -> None:
    merged = list(merge_text(text(i, str(i)) for i in range(1, 6)))
    assert shape(merged) == [(5, Text("12345"))]


def test_merge_text_when_generator_input_then_lazy_reads_no_further_than_needed() -> None:
    def source() -> Iterator[Event]:
        yield metadata(1)
        yield text(2, "a")
        yield text(3, "b")
        yield done(4)
        raise AssertionError("merge_text read past the event it was asked for")

    merged = merge_text(source())
    assert shape([next(merged), next(merged), next(merged)]) == [(1, METADATA), (3, Text("ab")), (4, DONE)]
