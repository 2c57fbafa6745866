"""The SSE wire format: one `data:` line of JSON per event, whatever the model writes, read back by httpx-sse."""

from __future__ import annotations

import json

import httpx
import pytest
from httpx_sse import EventSource, ServerSentEvent

from app.streaming import sse
from app.streaming.events import Event

HOSTILE_TEXTS = [
    "plain words",
    "line\nbreak",
    "carriage\rreturn",
    "windows\r\nline",
    "line\u2028separator and paragraph\u2029separator",
    "next\x85line, vertical\x0btab, form\x0cfeed",
    "data: x",
    "\n\nevent: done\ndata: {}\n\n",
    '{"type":"done"}',
    "id: other:99\nretry: 1\n: comment\n",
    "trailing cr\r",
    "\r\n\r\n",
    "",
    'tab\tquote"backslash\\nul\x00',
    "Édith Piaf — « La Vie en rose » 🌹",
]


def text_event(delta: str, seq: int = 7) -> Event:
    return Event(seq=seq, type="text", data={"type": "text", "delta": delta})


def decode(body: bytes, chunk_size: int | None = None) -> list[ServerSentEvent]:
    """Parse bytes as a client would, optionally delivered in small pieces (splitting CRLF and UTF-8)."""
    if chunk_size is None:
        content: bytes | list[bytes] = body
    else:
        content = [body[i : i + chunk_size] for i in range(0, len(body), chunk_size)]
    response = httpx.Response(
        200,
        headers={"content-type": "text/event-stream"},
        content=content if isinstance(content, bytes) else iter(content),
    )
    return list(EventSource(response).iter_sse())


class TestEncode:
    def test_encode_when_text_then_id_event_and_one_data_line(self) -> None:
        frame = sse.encode("job-1", text_event("hello", seq=3))
        assert frame == b'id: job-1:3\nevent: text\ndata: {"type":"text","delta":"hello"}\n\n'

    @pytest.mark.parametrize("event_type", ["metadata", "text", "done", "error"])
    def test_encode_when_any_type_then_event_field_names_it(self, event_type: str) -> None:
        event = Event(seq=1, type=event_type, data={"type": event_type})  # type: ignore[arg-type]
        frame = sse.encode("s", event).decode()
        assert frame.splitlines()[1] == f"event: {event_type}"

    @pytest.mark.parametrize("delta", HOSTILE_TEXTS)
    def test_encode_when_hostile_text_then_exactly_three_lines_and_one_frame(self, delta: str) -> None:
        frame = sse.encode("s", text_event(delta))
        assert frame.endswith(b"\n\n")
        body = frame[:-2]
        # No CR anywhere, and LF only between the three fields: the text cannot end a line or a frame.
        assert b"\r" not in body
        lines = body.split(b"\n")
        assert len(lines) == 3
        assert lines[0] == b"id: s:7"
        assert lines[1] == b"event: text"
        assert lines[2].startswith(b"data: {")
        assert json.loads(lines[2][len(b"data: ") :]) == {"type": "text", "delta": delta}

    def test_encode_when_non_ascii_then_utf8_not_escaped(self) -> None:
        frame = sse.encode("s", text_event("Édith 🌹"))
        assert "Édith 🌹".encode() in frame

    def test_encode_when_lone_surrogate_then_json_escape_not_a_crash(self) -> None:
        frame = sse.encode("s", text_event("a\ud800b"))
        frame.decode("utf-8")  # valid UTF-8
        (event,) = decode(frame)
        assert json.loads(event.data) == {"type": "text", "delta": "a\ud800b"}

    def test_encode_when_metadata_then_nested_values_round_trip(self) -> None:
        data = {"type": "metadata", "artist_name": "A\nB", "usage": {"prompt_tokens": 3}, "cached": False}
        (event,) = decode(sse.encode("s", Event(seq=1, type="metadata", data=data)))
        assert json.loads(event.data) == data

    def test_encode_retry_then_retry_field_alone(self) -> None:
        assert sse.encode_retry(2500) == b"retry: 2500\n\n"

    def test_ping_is_a_comment_frame(self) -> None:
        assert sse.PING.startswith(b":") and sse.PING.endswith(b"\n\n")


class TestRoundTrip:
    @pytest.mark.parametrize("delta", HOSTILE_TEXTS)
    def test_round_trip_when_hostile_text_then_httpx_sse_reads_it_back(self, delta: str) -> None:
        (event,) = decode(sse.encode("job-1", text_event(delta, seq=5)))
        assert event.id == "job-1:5"
        assert event.event == "text"
        assert json.loads(event.data) == {"type": "text", "delta": delta}

    @pytest.mark.parametrize("chunk_size", [1, 2, 3, 7])
    def test_round_trip_when_stream_arrives_in_pieces_then_same_events(self, chunk_size: int) -> None:
        events = [Event(seq=1, type="metadata", data={"type": "metadata", "artist_name": "Édith"})]
        events += [text_event(delta, seq=i + 2) for i, delta in enumerate(HOSTILE_TEXTS)]
        events.append(Event(seq=len(events) + 1, type="done", data={"type": "done"}))
        body = sse.encode_retry(1000) + sse.PING + b"".join(sse.encode("s", event) for event in events)
        body += sse.PING

        decoded = [event for event in decode(body, chunk_size) if event.data]
        assert [(e.id, e.event, json.loads(e.data)) for e in decoded] == [
            (f"s:{event.seq}", event.type, event.data) for event in events
        ]
        # The text the model wrote comes back whole, and the only `done` is the real one.
        deltas = [json.loads(e.data)["delta"] for e in decoded if e.event == "text"]
        assert "".join(deltas) == "".join(HOSTILE_TEXTS)
        assert [e.event for e in decoded].count("done") == 1

    def test_round_trip_then_id_parses_back_to_stream_and_seq(self) -> None:
        (event,) = decode(sse.encode("replay-3", text_event("x", seq=12)))
        assert sse.parse_event_id(event.id) == ("replay-3", 12)


class TestParseEventId:
    @pytest.mark.parametrize(
        ("value", "expected"),
        [
            ("abc:12", ("abc", 12)),
            ("replay-3:0", ("replay-3", 0)),
            ("a:b:5", ("a:b", 5)),
            ("3f2a9c:1", ("3f2a9c", 1)),
            (" abc:12 ", ("abc", 12)),
            ("abc:007", ("abc", 7)),
            ("abc:" + "9" * 12, ("abc", 999_999_999_999)),
        ],
    )
    def test_parse_when_valid_then_stream_and_seq(self, value: str, expected: tuple[str, int]) -> None:
        assert sse.parse_event_id(value) == expected

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
            "x:" + "9" * 13,
            "x:" + "1" * 100,
            "x:\u00b2",  # superscript two: str.isdigit() says yes, int() says no
            "x:\u0661",  # ARABIC-INDIC DIGIT ONE
            "x:\uff15",  # FULLWIDTH DIGIT FIVE
        ],
    )
    def test_parse_when_invalid_then_none(self, value: str | None) -> None:
        assert sse.parse_event_id(value) is None

    def test_event_id_then_parse_round_trips(self) -> None:
        assert sse.parse_event_id(sse.event_id("job:with:colons", 42)) == ("job:with:colons", 42)
