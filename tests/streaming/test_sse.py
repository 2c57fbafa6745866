"""The SSE wire format: one `data:` line of JSON per event, whatever the model writes, read back by
httpx-sse; and the encode-once memo every reader of a log shares."""

from __future__ import annotations

import json

import httpx
import pytest
from httpx_sse import EventSource, ServerSentEvent

from app.streaming import sse
from app.streaming.events import Event, Payload, Text, merge_text
from app.streaming.ids import parse_event_id
from tests.streaming.samples import CONTINUED, DONE, METADATA, OUTLINE, PAYLOADS, SECTION, TEXT

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
    return Event(seq=seq, payload=Text(delta))


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

    @pytest.mark.parametrize("payload", PAYLOADS, ids=lambda payload: payload.type)
    def test_encode_when_any_payload_then_event_field_names_its_type(self, payload: Payload) -> None:
        frame = sse.encode("s", Event(seq=1, payload=payload)).decode()
        assert frame.splitlines()[1] == f"event: {payload.type}"

    @pytest.mark.parametrize("payload", PAYLOADS, ids=lambda payload: payload.type)
    def test_encode_when_any_payload_then_three_lines_and_compact_json_of_data(
        self, payload: Payload
    ) -> None:
        frame = sse.encode("s", Event(seq=4, payload=payload))
        lines = frame.removesuffix(b"\n\n").split(b"\n")
        assert lines[:2] == [b"id: s:4", f"event: {payload.type}".encode()]
        assert len(lines) == 3
        data = lines[2].removeprefix(b"data: ").decode()
        assert data == json.dumps(payload.data(), ensure_ascii=False, separators=(",", ":"))

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

    def test_encode_when_metadata_then_nested_artist_and_newline_in_name_round_trip(self) -> None:
        (event,) = decode(sse.encode("s", Event(seq=1, payload=METADATA)))
        data = json.loads(event.data)
        assert data["artist"] == {"id": 7, "name": "Édith Piaf\nevent: done"}
        assert data == METADATA.data()

    def test_encode_when_done_then_nested_usage_round_trips(self) -> None:
        (event,) = decode(sse.encode("s", Event(seq=9, payload=DONE)))
        assert json.loads(event.data)["usage"] == {"prompt_tokens": 210, "completion_tokens": 4100}

    def test_encode_retry_when_milliseconds_then_retry_field_alone(self) -> None:
        assert sse.encode_retry(2500) == b"retry: 2500\n\n"

    def test_ping_when_sent_then_a_comment_frame_httpx_sse_dispatches_nothing_for(self) -> None:
        assert sse.PING.startswith(b":") and sse.PING.endswith(b"\n\n")
        assert decode(sse.PING) == []


class TestMemo:
    def test_encode_when_called_twice_then_the_very_same_bytes_object(self) -> None:
        event = text_event("once")
        first = sse.encode("s", event)
        assert sse.encode("s", event) is first

    def test_encode_when_the_event_holds_a_memo_then_the_memo_is_sent_not_a_new_frame(self) -> None:
        event = text_event("once", seq=3)
        sse.encode("s", event)
        event.wire = b": the memo\n\n"  # what a second reader gets is what the first one kept
        assert sse.encode("s", event) == b": the memo\n\n"

    def test_encode_when_first_called_then_memo_kept_on_the_event(self) -> None:
        event = text_event("kept")
        assert event.wire is None
        frame = sse.encode("s", event)
        assert event.wire is frame

    def test_encode_frame_when_called_then_same_bytes_and_memo_untouched(self) -> None:
        event = text_event("plain", seq=2)
        frame = sse.encode_frame("s", event)
        assert frame == b'id: s:2\nevent: text\ndata: {"type":"text","delta":"plain"}\n\n'
        assert event.wire is None

    def test_encode_when_merged_text_then_own_frame_with_last_seq_and_runs_memos_untouched(self) -> None:
        run = [text_event("a ", seq=2), text_event("b ", seq=3), text_event("c", seq=4)]
        singles = [sse.encode("job", event) for event in run]  # a reader that kept up sent them one by one
        (merged,) = merge_text(run)
        frame = sse.encode("job", merged)
        assert frame == b'id: job:4\nevent: text\ndata: {"type":"text","delta":"a b c"}\n\n'
        assert merged.wire is frame
        assert [event.wire for event in run] == singles
        assert all(event.wire is single for event, single in zip(run, singles, strict=True))


class TestRoundTrip:
    @pytest.mark.parametrize("payload", PAYLOADS, ids=lambda payload: payload.type)
    def test_round_trip_when_any_payload_then_id_event_and_data_intact(self, payload: Payload) -> None:
        (event,) = decode(sse.encode("job-1", Event(seq=11, payload=payload)))
        assert event.id == "job-1:11"
        assert event.event == payload.type
        assert json.loads(event.data) == payload.data()

    @pytest.mark.parametrize("delta", HOSTILE_TEXTS)
    def test_round_trip_when_hostile_text_then_httpx_sse_reads_it_back(self, delta: str) -> None:
        (event,) = decode(sse.encode("job-1", text_event(delta, seq=5)))
        assert event.id == "job-1:5"
        assert event.event == "text"
        assert json.loads(event.data) == {"type": "text", "delta": delta}

    @pytest.mark.parametrize("chunk_size", [1, 2, 3, 7])
    def test_round_trip_when_stream_arrives_in_pieces_then_same_events(self, chunk_size: int) -> None:
        payloads: list[Payload] = [
            METADATA,
            OUTLINE,
            SECTION,
            *(Text(d) for d in HOSTILE_TEXTS),
            CONTINUED,
            TEXT,
            DONE,
        ]
        events = [Event(seq=seq, payload=payload) for seq, payload in enumerate(payloads, start=1)]
        body = sse.encode_retry(1000) + sse.PING + b"".join(sse.encode("s", event) for event in events)
        body += sse.PING

        decoded = [event for event in decode(body, chunk_size) if event.data]
        assert [(e.id, e.event, json.loads(e.data)) for e in decoded] == [
            (f"s:{event.seq}", event.type, event.payload.data()) for event in events
        ]
        # The text the model wrote comes back whole, and the only `done` is the real one.
        deltas = [json.loads(e.data)["delta"] for e in decoded if e.event == "text"]
        assert "".join(deltas) == "".join(HOSTILE_TEXTS) + TEXT.delta
        assert [e.event for e in decoded].count("done") == 1

    def test_round_trip_when_id_read_back_then_parses_to_stream_and_seq(self) -> None:
        (event,) = decode(sse.encode("replay-3", text_event("x", seq=12)))
        assert parse_event_id(event.id) == ("replay-3", 12)
