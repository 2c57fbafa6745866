"""The upstream failure taxonomy: every way a generation can fail, as the contract's stream error codes."""

from __future__ import annotations

from dataclasses import dataclass

# Codes a reader can retry (the contract: all but upstream_auth, upstream_bad_response and cancelled).
NOT_RETRYABLE = frozenset({"upstream_auth", "upstream_bad_response", "cancelled"})


@dataclass
class UpstreamError(Exception):
    """A failed generation. `counts` says whether the circuit breaker records it as a failure: our own bad
    request (a 4xx other than 401/403/429) says nothing about the upstream's health."""

    code: str
    message: str
    retry_after: float | None = None
    counts: bool = True
    # Whether the portrait may go on after it with another call (a continuation): not after the whole
    # portrait's time ran out, which bounds every call together.
    resumable: bool = True

    def __post_init__(self) -> None:
        super().__init__(self.message)

    @property
    def retryable(self) -> bool:
        return self.code not in NOT_RETRYABLE


def upstream_auth(status: int) -> UpstreamError:
    return UpstreamError(
        "upstream_auth",
        f"The writing service refused our credentials (HTTP {status}); the service is misconfigured.",
    )


def upstream_rate_limited(retry_after: float | None) -> UpstreamError:
    return UpstreamError(
        "upstream_rate_limited", "The writing service is rate limiting us.", retry_after=retry_after
    )


def upstream_error(message: str, *, counts: bool = True) -> UpstreamError:
    return UpstreamError("upstream_error", message, counts=counts)


def upstream_connection(message: str) -> UpstreamError:
    return UpstreamError("upstream_connection", message)


def upstream_timeout(message: str, *, resumable: bool = True) -> UpstreamError:
    return UpstreamError("upstream_timeout", message, resumable=resumable)


def upstream_bad_response(message: str) -> UpstreamError:
    return UpstreamError("upstream_bad_response", message)


def upstream_unavailable(retry_after: float) -> UpstreamError:
    return UpstreamError(
        "upstream_unavailable",
        "The writing service is failing; new portraits are paused until it recovers.",
        retry_after=retry_after,
        counts=False,
    )


def broker_unavailable() -> UpstreamError:
    """The shared state behind the breaker or the limit (Redis) cannot be reached: no new generation starts,
    and it says nothing of the upstream's health."""
    return UpstreamError(
        "broker_unavailable",
        "Atelier's shared state cannot be reached; try again shortly.",
        counts=False,
        resumable=False,
    )
