"""A scripted chat model for unit tests of a generation: no HTTP, no server, no sleeping.

It implements `app.llm.client.ChatModel`. Each call to `stream()` plays the next script: text chunks, then
a `Finish`, or an `UpstreamError` raised where the script says, or a pause (`Gate`) that waits until the
test opens it, so a test can act in the middle of a stream (cancel, attach a reader, read the log).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, Sequence
from dataclasses import dataclass, field

from app.llm.client import Chunk, Finish, Messages, TextDelta, Usage
from app.llm.errors import UpstreamError


@dataclass
class Gate:
    """A point in a script where the stream waits until the test calls `open()`."""

    event: asyncio.Event = field(default_factory=asyncio.Event)
    reached: asyncio.Event = field(default_factory=asyncio.Event)

    def open(self) -> None:
        self.event.set()


Step = str | Finish | UpstreamError | Gate


USAGE = Usage(prompt_tokens=10, completion_tokens=20)


def script(*texts: str, reason: str = "stop", usage: Usage | None = USAGE) -> list[Step]:
    """Text chunks then a normal finish."""
    return [*texts, Finish(reason=reason, usage=usage)]


class ScriptedChat:
    def __init__(self, *scripts: Sequence[Step], model: str = "scripted-model") -> None:
        self._scripts = [list(s) for s in scripts]
        self._model = model
        self.calls: list[Messages] = []  # the messages of every call, in order
        self.time_left: list[float | None] = []  # what each call was told remains of the portrait's time
        self.closed = 0  # streams closed (finished, failed or cancelled)

    @property
    def model(self) -> str:
        return self._model

    async def stream(
        self, messages: Messages, *, time_left: float | None = None
    ) -> AsyncGenerator[Chunk, None]:
        self.calls.append(messages)
        self.time_left.append(time_left)
        steps = self._scripts.pop(0) if self._scripts else []
        try:
            for step in steps:
                if isinstance(step, Gate):
                    step.reached.set()
                    await step.event.wait()
                elif isinstance(step, UpstreamError):
                    raise step
                elif isinstance(step, Finish):
                    yield step
                else:
                    yield TextDelta(step)
                await asyncio.sleep(0)  # one loop turn per chunk, as a real stream has
        finally:
            self.closed += 1
