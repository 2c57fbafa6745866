"""merge_text: a reader that fell behind gets runs of text folded into one event, and loses nothing."""

from __future__ import annotations

from typing import Any

from app.streaming.events import Event, EventType, merge_text


def ev(seq: int, type_: EventType, **data: Any) -> Event:
    return Event(seq=seq, type=type_, data={"type": type_, **data})


def text(seq: int, delta: str) -> Event:
    return ev(seq, "text", delta=delta)


def test_merge_when_empty_then_nothing() -> None:
    assert list(merge_text([])) == []


def test_merge_when_run_of_text_then_one_event_with_last_seq_and_joined_delta() -> None:
    merged = list(merge_text([text(2, "a "), text(3, "b "), text(4, "c")]))
    assert merged == [Event(seq=4, type="text", data={"type": "text", "delta": "a b c"})]


def test_merge_when_single_text_then_same_event_untouched() -> None:
    only = text(5, "alone")
    (merged,) = merge_text([only])
    assert merged is only


def test_merge_when_single_texts_between_others_then_each_untouched() -> None:
    events = [ev(1, "metadata", cached=False), text(2, "a"), ev(3, "error", code="x"), text(4, "b")]
    merged = list(merge_text(events))
    assert merged == events
    assert all(m is e for m, e in zip(merged, events, strict=True))


def test_merge_when_metadata_and_done_then_never_merged_across() -> None:
    events = [
        ev(1, "metadata", cached=False),
        text(2, "a"),
        text(3, "b"),
        ev(4, "metadata", cached=True),
        text(5, "c"),
        text(6, "d"),
        text(7, "e"),
        ev(8, "done", words=3),
    ]
    merged = list(merge_text(events))
    assert [(e.seq, e.type) for e in merged] == [
        (1, "metadata"),
        (3, "text"),
        (4, "metadata"),
        (7, "text"),
        (8, "done"),
    ]
    assert merged[1].data == {"type": "text", "delta": "ab"}
    assert merged[3].data == {"type": "text", "delta": "cde"}
    assert merged[0] is events[0] and merged[2] is events[3] and merged[4] is events[7]


def test_merge_when_error_between_runs_then_runs_stay_apart() -> None:
    events = [text(1, "a"), text(2, "b"), ev(3, "error", code="upstream_timeout"), text(4, "c"), text(5, "d")]
    merged = list(merge_text(events))
    assert [(e.seq, e.type, e.data.get("delta")) for e in merged] == [
        (2, "text", "ab"),
        (3, "error", None),
        (5, "text", "cd"),
    ]


def test_merge_when_run_ends_the_batch_then_flushed() -> None:
    merged = list(merge_text([ev(1, "metadata"), text(2, "x"), text(3, "y")]))
    assert merged[-1] == Event(seq=3, type="text", data={"type": "text", "delta": "xy"})


def test_merge_when_no_text_then_unchanged() -> None:
    events = [ev(1, "metadata"), ev(2, "done")]
    assert list(merge_text(events)) == events


def test_merge_when_empty_and_multiline_deltas_then_concatenated_exactly() -> None:
    deltas = ["", "line\n", "\r\n", "", "end\u2028"]
    merged = list(merge_text([text(i + 1, d) for i, d in enumerate(deltas)]))
    assert merged == [Event(seq=5, type="text", data={"type": "text", "delta": "".join(deltas)})]


def test_merge_then_inputs_not_mutated() -> None:
    events = [text(1, "a"), text(2, "b")]
    list(merge_text(events))
    assert events == [text(1, "a"), text(2, "b")]


def test_merge_when_generator_input_then_lazy_and_complete() -> None:
    merged = list(merge_text(text(i, str(i)) for i in range(1, 6)))
    assert merged == [Event(seq=5, type="text", data={"type": "text", "delta": "12345"})]


def test_terminal_only_for_done_and_error() -> None:
    assert ev(1, "done").terminal and ev(1, "error").terminal
    assert not ev(1, "metadata").terminal and not text(1, "x").terminal
