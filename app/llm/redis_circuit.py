"""The breaker's circuit in Redis, shared by every process: `RedisCircuitStorage` implements `CircuitStorage`
(app/llm/breaker.py) with an optimistic transaction, so the single half-open trial holds across processes.

`update(rule)`: WATCH the key, read the circuit, run the rule in Python, then MULTI / HSET / EXEC. If another
process wrote the key in between, EXEC fails (`WatchError`) and the whole step runs again on what is stored
now, so the rule may run more than once for one commit (the breaker logs transitions only from the committed
run). A rule that changes nothing commits nothing: its answer holds as of the read (the closed-circuit
`acquire`, the common case, is a read). After `max_attempts` lost races it raises `CircuitStoreContended`.

Within one process, updates take turns (an asyncio lock): tasks of one process would only make each other's
transactions fail, and each attempt holds a pooled connection while it watches. Races are then only between
processes, a handful, and the bound on attempts is a real bound.

The circuit is one hash, readable with `HGETALL atelier:circuit:upstream`: `state` (closed | open |
half-open), `failures`, `opened_at` (wall-clock seconds, empty when none), `period`, `trial_out` (0 | 1),
`trial_at` (wall-clock seconds, empty when none). Every write sets all six. A missing key is a new closed circuit; a missing field takes its default (a record written
by hand: `HSET atelier:circuit:upstream state closed` closes the circuit); a field that cannot be read raises
`CircuitStoreError` naming it.

Errors, for the caller to map (the breaker lets them through `acquire()` and the permit's outcomes):
`CircuitStoreUnavailable` when Redis cannot be reached or does not answer in time, `CircuitStoreContended`
when the transaction keeps losing, `CircuitStoreError` (their base) for anything else Redis refuses or a
record that cannot be read. How long "unreachable" takes is the client's configuration: redis-py retries
connection errors itself (10 times, with backoff up to 1 s, by default) before it raises.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable, Mapping
from typing import TypeVar

from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError, WatchError
from redis.exceptions import TimeoutError as RedisTimeoutError

from app.llm.breaker import CLOSED, HALF_OPEN, OPEN, Circuit, CircuitStoreError, State

T = TypeVar("T")

DEFAULT_KEY = "atelier:circuit:upstream"
_STATES: dict[str, State] = {CLOSED: CLOSED, OPEN: OPEN, HALF_OPEN: HALF_OPEN}
# Between two lost races: a random pause below this, doubling from 1 ms (processes that keep colliding
# spread out), so 20 attempts span at most about a second.
_RETRY_PAUSE_CAP = 0.1


class CircuitStoreUnavailable(CircuitStoreError):
    """Redis could not be reached, or did not answer in time."""


class CircuitStoreContended(CircuitStoreError):
    """Every attempt at the transaction lost a race with another process's write."""


def encode(circuit: Circuit) -> dict[str, str]:
    return {
        "state": circuit.state,
        "failures": str(circuit.failures),
        "opened_at": "" if circuit.opened_at is None else repr(circuit.opened_at),  # repr: exact round trip
        "period": str(circuit.period),
        "trial_out": "1" if circuit.trial_out else "0",
        "trial_at": "" if circuit.trial_at is None else repr(circuit.trial_at),
    }


def decode(
    raw: Mapping[bytes, bytes] | Mapping[str, str] | Mapping[bytes | str, bytes | str], key: str = DEFAULT_KEY
) -> Circuit:
    """The circuit in a hash as HGETALL returns it (bytes or str); an empty one is a new circuit."""
    fields = {_text(name): _text(value) for name, value in raw.items()}

    def bad(name: str) -> CircuitStoreError:
        return CircuitStoreError(
            f"the circuit at Redis key {key!r} has an unreadable {name!r}: {fields[name]!r} "
            f"(fix the field, or delete the key to start closed)"
        )

    default = Circuit()
    state = fields.get("state", default.state)
    if state not in _STATES:
        raise bad("state")
    try:
        failures = int(fields["failures"]) if "failures" in fields else default.failures
    except ValueError:
        raise bad("failures") from None
    try:
        opened_at = float(fields["opened_at"]) if fields.get("opened_at") else None
    except ValueError:
        raise bad("opened_at") from None
    try:
        period = int(fields["period"]) if "period" in fields else default.period
    except ValueError:
        raise bad("period") from None
    trial_out = fields.get("trial_out", "0")
    if trial_out not in ("0", "1"):
        raise bad("trial_out")
    try:
        trial_at = float(fields["trial_at"]) if fields.get("trial_at") else None
    except ValueError:
        raise bad("trial_at") from None
    return Circuit(
        state=_STATES[state],
        failures=failures,
        opened_at=opened_at,
        period=period,
        trial_out=trial_out == "1",
        trial_at=trial_at,
    )


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


class RedisCircuitStorage:
    """One circuit for every process that builds this storage with the same key on the same Redis."""

    def __init__(self, redis: Redis, key: str = DEFAULT_KEY, *, max_attempts: int = 20) -> None:
        if max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        self.redis = redis
        self.key = key
        self.max_attempts = max_attempts
        self.conflicts = 0  # transactions that lost a race and ran again (for tests and metrics)
        self._turn = asyncio.Lock()

    async def load(self) -> Circuit:
        try:
            raw = await self.redis.hgetall(self.key)
        except (RedisConnectionError, RedisTimeoutError, OSError) as exc:
            raise self._unavailable(exc) from exc
        except RedisError as exc:
            raise CircuitStoreError(f"reading the circuit at Redis key {self.key!r} failed: {exc}") from exc
        return decode(raw, self.key)

    async def update(self, rule: Callable[[Circuit], tuple[Circuit, T]]) -> T:
        async with self._turn:
            for attempt in range(self.max_attempts):
                try:
                    return await self._attempt(rule)
                except WatchError:
                    # Another process wrote the circuit between our read and our write (or the connection
                    # broke while watching: the next WATCH finds out): run the rule again on what is stored.
                    self.conflicts += 1
                    await asyncio.sleep(random.uniform(0, min(_RETRY_PAUSE_CAP, 0.001 * 2**attempt)))
                except (RedisConnectionError, RedisTimeoutError, OSError) as exc:
                    raise self._unavailable(exc) from exc
                except RedisError as exc:
                    raise CircuitStoreError(
                        f"updating the circuit at Redis key {self.key!r} failed: {exc}"
                    ) from exc
        raise CircuitStoreContended(
            f"the circuit at Redis key {self.key!r} changed under every one of {self.max_attempts} attempts "
            f"to update it"
        )

    async def _attempt(self, rule: Callable[[Circuit], tuple[Circuit, T]]) -> T:
        async with self.redis.pipeline(transaction=True) as pipe:
            await pipe.watch(self.key)
            before = decode(await pipe.hgetall(self.key), self.key)
            after, result = rule(before)
            if after == before:
                return result  # nothing to write: the answer holds as of the read (leaving unwatches)
            pipe.multi()  # type: ignore[no-untyped-call]
            pipe.hset(self.key, mapping=encode(after))  # type: ignore[arg-type]  # redis-py's stub is too narrow
            await pipe.execute()  # WatchError if the key changed since WATCH
            return result

    def _unavailable(self, exc: BaseException) -> CircuitStoreUnavailable:
        return CircuitStoreUnavailable(
            f"the circuit breaker's Redis is unreachable (key {self.key!r}): {exc.__class__.__name__}: {exc}"
        )
