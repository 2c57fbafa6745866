"""`WS /ws/v1/articles`: portraits over a WebSocket, several at once, each as the SSE stream gives it.

A new translation of the portrait service's outcomes, like the SSE routes, the page's form and the CLI: what
to answer is decided by `PortraitService` (a replay, a resume, a joined or a new job, a refusal told as
`metadata` then `error`); this module only reads the client's actions (`ws_protocol.py`) and writes each
answer as one message (`streaming/ws_wire.py`, the one place that knows the message format).

The handshake, before anything is accepted:
- credentials: the subprotocol `bearer.<token>` (offered beside `atelier.v1`, which the server answers
  with), or an `Authorization: Bearer` header (non-browser clients); a credential that is presented and
  wrong is refused (HTTP 401 `unauthorized`). Tokens never travel in the URL. A client may also send
  `{"action": "auth", "token": ...}` once connected;
- a browser's request from another site's page (`Sec-Fetch-Site`, else `Origin` against the Host: the
  same check as the POST routes, `app/kit/cross_site.py`) is refused (HTTP 403 `forbidden`, the denial the
  ASGI close 1008 before accepting becomes) unless it carries a valid token; no `Origin` at all is not a
  browser, and passes.

Once connected, each stream a client follows is one task reading the event log through `follow_log`, as an
SSE response does: a socket that reads slowly holds only its own tasks (the broker keeps the events, and the
task's next read merges the text it fell behind on), never the job or another reader. `stop` or the socket
closing cancels the task, which calls the stream's `on_close` (the job's grace applies, as for SSE).
Silence is broken by `{"type":"ping"}` every 15 s (beside uvicorn's protocol-level pings, every 20 s), so
proxies that time out idle connections (nginx's proxy_read_timeout) keep the socket.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

from fastapi import APIRouter, WebSocket
from starlette.websockets import WebSocketDisconnect

from app.articles.params import as_length
from app.auth import Client, token_is_valid
from app.errors import AppError, Unauthorized, error_response
from app.generation.portrait import NothingAfter, Outcome, PortraitRequest, PortraitService, Stream
from app.generation.positions import JobPosition, ReplayPosition, parse_position
from app.generation.ws_protocol import Action, Auth, Cancel, Generate, Malformed, Resume, Stop, parse
from app.kit.cross_site import cross_site_refusal, origin_of
from app.settings import Settings
from app.streaming import ws_wire

log = logging.getLogger("atelier.ws")

router = APIRouter()

PATH = "/ws/v1/articles"
SUBPROTOCOL = "atelier.v1"
BEARER = "bearer."
# A client that sends this many messages that are no action (not JSON, unknown action, invalid fields, a
# wrong token) is closed with 1008 (policy violation).
MAX_BAD_MESSAGES = 10
# Streams one socket may follow at once: each is a task and a reader of a log.
MAX_STREAMS = 32
POLICY_VIOLATION = 1008
# Codes of errors about an action that a retry may cure (the others are the client's to fix).
RETRYABLE = frozenset({"broker_unavailable", "internal_error"})
INTERNAL_ERROR = "Something went wrong on our side; it has been logged."
UNAUTHORIZED = (
    "A valid API token is required: offer the subprotocol 'bearer.<token>' beside 'atelier.v1', or send "
    '{"action": "auth", "token": "<token>"} first.'
)


@dataclass(frozen=True)
class Handshake:
    """What the opening request says about its client: its token, if it presented one, and whether a
    browser sent it from another site's page."""

    token: bytes | None
    cross_site: str | None


def handshake(websocket: WebSocket) -> Handshake:
    token: bytes | None = None
    for offered in websocket.scope.get("subprotocols", []):
        if offered.startswith(BEARER):
            token = offered.removeprefix(BEARER).encode("latin-1", errors="replace")
    scheme, _, credentials = websocket.headers.get("authorization", "").partition(" ")
    if token is None and scheme.lower() == "bearer" and credentials.strip():
        token = credentials.strip().encode("latin-1")
    own_origin = origin_of(websocket.url.scheme, websocket.url.netloc)
    refusal = cross_site_refusal(
        websocket.headers.get("sec-fetch-site"), websocket.headers.get("origin"), own_origin
    )
    return Handshake(token=token, cross_site=refusal)


async def refuse(websocket: WebSocket, status: int, code: str, message: str) -> None:
    """Refuse the handshake: the contract's JSON error as the HTTP answer where the server can send one
    (uvicorn can), else a close (1008) before accepting, which the server turns into a 403."""
    if "websocket.http.response" in websocket.scope.get("extensions", {}):
        await websocket.send_denial_response(error_response(status, code, message))
    else:
        await websocket.close(code=POLICY_VIOLATION, reason=code)


@router.websocket(PATH)
async def articles_socket(websocket: WebSocket) -> None:
    settings: Settings = websocket.state.settings
    portraits: PortraitService = websocket.state.portraits
    shake = handshake(websocket)
    trusted = shake.token is not None and token_is_valid(shake.token, settings.api_tokens)
    if shake.token is not None and not trusted:
        await refuse(websocket, 401, "unauthorized", "The API token presented is not valid.")
        return
    if shake.cross_site is not None and not trusted:
        message = (
            f"{shake.cross_site}: portraits are streamed only to Atelier's own pages, or with an API token."
        )
        await refuse(websocket, 403, "forbidden", message)
        return
    offered = websocket.scope.get("subprotocols", [])
    await websocket.accept(subprotocol=SUBPROTOCOL if SUBPROTOCOL in offered else None)
    address = websocket.client.host if websocket.client else "unknown"  # as uvicorn gives it (app/auth.py)
    session = Session(websocket, portraits, settings, Client(trusted=trusted, address=address))
    await session.run()


@dataclass(eq=False)
class Subscription:
    """One stream this socket follows, for the action (`request_id`) that opened it."""

    request_id: str | int | None
    stream: Stream
    tag: str  # `ws_wire.request_tag(request_id)`, built once
    task: asyncio.Task[None] | None = field(default=None, repr=False)


class Session:
    """One connected socket: its client, the streams it follows, and the loop reading its actions."""

    def __init__(
        self, websocket: WebSocket, portraits: PortraitService, settings: Settings, client: Client
    ) -> None:
        self.websocket = websocket
        self.portraits = portraits
        self.settings = settings
        self.client = client
        self.subscriptions: set[Subscription] = set()
        self.tasks: set[asyncio.Task[None]] = set()  # cancels, which wait for the job's end
        self.bad_messages = 0
        self.loop = asyncio.get_running_loop()
        self.last_sent = self.loop.time()

    # --- the loop ------------------------------------------------------------------------------------

    async def run(self) -> None:
        pinger = asyncio.create_task(self._ping())
        try:
            too_many = await self._read()
        finally:
            pinger.cancel()
            await asyncio.wait([pinger])
            await self._end_all()
        if too_many:
            with contextlib.suppress(WebSocketDisconnect, OSError):
                await self.websocket.close(POLICY_VIOLATION, "too many malformed messages")

    async def _read(self) -> bool:
        """Act on each message in order until the client leaves (False) or has sent MAX_BAD_MESSAGES that
        are no action (True)."""
        try:
            while True:
                message = await self.websocket.receive()
                if message["type"] == "websocket.disconnect":
                    return False
                action = parse(message.get("text"), self.settings.max_body_bytes)
                if isinstance(action, Malformed):
                    await self._tell_malformed(action)
                else:
                    await self._act(action)
                if self.bad_messages >= MAX_BAD_MESSAGES:
                    return True
        except (WebSocketDisconnect, OSError):
            return False

    async def _act(self, action: Action) -> None:
        try:
            if isinstance(action, Auth):
                await self._auth(action)
            elif isinstance(action, Generate):
                await self._generate(action)
            elif isinstance(action, Resume):
                await self._resume(action)
            elif isinstance(action, Stop):
                await self._stop(action)
            else:
                await self._cancel(action)
        except AppError as exc:
            await self.send(self._app_error(exc, action.request_id))
        except (WebSocketDisconnect, OSError):
            raise
        except Exception:
            log.exception("WebSocket action %s failed", action.action)
            await self.send(
                ws_wire.error("internal_error", INTERNAL_ERROR, action.request_id, retryable=True)
            )

    async def _tell_malformed(self, malformed: Malformed) -> None:
        """Tell the client what was wrong with its message, and count it."""
        self.bad_messages += 1
        extra: dict[str, Any] = {"fields": malformed.fields} if malformed.code == "validation_error" else {}
        await self.send(ws_wire.error(malformed.code, malformed.message, malformed.request_id, **extra))

    # --- actions -------------------------------------------------------------------------------------

    async def _auth(self, action: Auth) -> None:
        if token_is_valid(action.token.encode(), self.settings.api_tokens):
            self.client = Client(trusted=True, address=self.client.address)
            await self.send(ws_wire.answer("authenticated", action.request_id))
            return
        self.bad_messages += 1  # guessing tokens is no use of the socket
        await self.send(ws_wire.error("unauthorized", "This API token is not valid.", action.request_id))

    async def _generate(self, action: Generate) -> None:
        language = action.language or self.settings.default_language
        if language not in self.settings.languages:
            allowed = ", ".join(self.settings.languages)
            fields = [{"loc": "language", "message": f"Input should be one of: {allowed}"}]
            invalid = Malformed("validation_error", "Some fields are not valid.", action.request_id, fields)
            await self._tell_malformed(invalid)
            return
        request = PortraitRequest(
            action.artist_id, language, action.length, "stream", self.client, refresh=action.refresh
        )
        await self._open(action.request_id, lambda: self.portraits.open(request))

    async def _resume(self, action: Resume) -> None:
        """The events after `last_event_id`, as `Last-Event-ID` gives them: the rest of a job's log (the job
        stream route's `follow_job`), or of a stored portrait's replay (the portrait's stream with the id as
        its resume; the portrait is the one the article id names)."""
        position = parse_position(action.last_event_id)
        last_event_id = action.last_event_id
        if isinstance(position, JobPosition):
            job_id = position.job_id
            await self._open(action.request_id, lambda: self.portraits.follow_job(job_id, last_event_id))
            return
        if isinstance(position, ReplayPosition):
            found = await self.portraits.articles.find_with_artist(position.article_id)
            length = as_length(found[0].length) if found is not None else None
            if found is None or length is None:
                message = "No stored portrait has this id; send generate to start afresh."
                await self.send(ws_wire.error("article_not_found", message, action.request_id))
                return
            article = found[0]
            request = PortraitRequest(
                article.artist_id, article.language, length, "stream", self.client, resume=last_event_id
            )
            await self._open(action.request_id, lambda: self.portraits.open(request))
            return
        message = (
            "This id names no stream that can be resumed (a job's or a stored portrait's); send generate."
        )
        await self.send(ws_wire.error("bad_request", message, action.request_id))

    async def _stop(self, action: Stop) -> None:
        stopping = [sub for sub in self.subscriptions if sub.stream.stream_id == action.stream]
        if not stopping:
            message = "This socket follows no stream with this id (it may have ended)."
            await self.send(ws_wire.error("not_found", message, action.request_id))
            return
        await self._end(stopping)
        await self.send(ws_wire.answer("stopped", action.request_id, stream=action.stream))

    async def _cancel(self, action: Cancel) -> None:
        if not self.client.trusted:
            await self.send(ws_wire.error("unauthorized", UNAUTHORIZED, action.request_id))
            return
        # Cancelling waits (bounded) for the job's last event: the socket goes on reading meanwhile.
        task = asyncio.create_task(self._cancel_job(action))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def _cancel_job(self, action: Cancel) -> None:
        try:
            await self.portraits.cancel(action.job_id)
        except AppError as exc:
            await self._send_quietly(self._app_error(exc, action.request_id))
            return
        except Exception:
            log.exception("WebSocket cancel failed")
            await self._send_quietly(
                ws_wire.error("internal_error", INTERNAL_ERROR, action.request_id, retryable=True)
            )
            return
        await self._send_quietly(ws_wire.answer("cancelled", action.request_id, job_id=action.job_id))

    # --- streams -------------------------------------------------------------------------------------

    async def _open(
        self, request_id: str | int | None, opening: Callable[[], Coroutine[Any, Any, Outcome]]
    ) -> None:
        """Ask the portrait service (`opening`) and follow the stream it gives; or say why there is none
        (an `AppError` raised before any stream: `_act` tells it)."""
        if len(self.subscriptions) >= MAX_STREAMS:
            message = f"This socket already follows {MAX_STREAMS} streams; stop one first."
            await self.send(ws_wire.error("bad_request", message, request_id))
            return
        outcome = await opening()
        if isinstance(outcome, NothingAfter):
            await self.send(ws_wire.answer("nothing_after", request_id))
            return
        assert isinstance(outcome, Stream), outcome
        sub = Subscription(request_id, outcome, ws_wire.request_tag(request_id))
        self.subscriptions.add(sub)
        sub.task = asyncio.create_task(self._follow(sub))

    async def _follow(self, sub: Subscription) -> None:
        stream = sub.stream
        stream_id, tag = stream.stream_id, sub.tag
        try:
            async for batch in stream.batches:
                if batch is None:
                    continue  # silence on this stream: the socket's own ping covers it
                for event in batch:
                    await self.send(ws_wire.encode(stream_id, event, tag))
        except (WebSocketDisconnect, OSError):
            pass  # the client is gone: the socket's loop ends every stream
        except Exception:
            log.exception("WebSocket stream %s failed", stream_id)
            await self._send_quietly(
                ws_wire.error("internal_error", INTERNAL_ERROR, sub.request_id, retryable=True)
            )
        finally:
            self.subscriptions.discard(sub)
            closing = getattr(stream.batches, "aclose", None)
            if closing is not None:
                with contextlib.suppress(Exception):
                    await closing()
            if stream.on_close is not None:
                stream.on_close()

    async def _end(self, subs: list[Subscription]) -> None:
        tasks = [sub.task for sub in subs if sub.task is not None]
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks)

    async def _end_all(self) -> None:
        for task in self.tasks:
            task.cancel()
        await self._end(list(self.subscriptions))
        if self.tasks:
            await asyncio.wait(list(self.tasks))

    # --- sending -------------------------------------------------------------------------------------

    async def send(self, text: str) -> None:
        self.last_sent = self.loop.time()
        await self.websocket.send({"type": "websocket.send", "text": text})

    async def _send_quietly(self, text: str) -> None:
        with contextlib.suppress(WebSocketDisconnect, OSError):
            await self.send(text)

    async def _ping(self) -> None:
        """`{"type":"ping"}` after PING_INTERVAL seconds in which nothing was sent."""
        with contextlib.suppress(WebSocketDisconnect, OSError):
            while True:
                wait = self.last_sent + ws_wire.PING_INTERVAL - self.loop.time()
                if wait > 0:
                    await asyncio.sleep(wait)
                    continue
                await self.send(ws_wire.PING)

    @staticmethod
    def _app_error(exc: AppError, request_id: str | int | None) -> str:
        message = UNAUTHORIZED if isinstance(exc, Unauthorized) else exc.message
        return ws_wire.error(exc.code, message, request_id, retryable=exc.code in RETRYABLE)
