"""Pure: one callback endpoint's health (healthy, failing, paused) and its transitions.

Each step takes the state and what happened, and returns the new state and the notice to send,
if any; the tracker (endpoint_health.py) does the I/O. No clock is read here: `now` is passed in.
"""

from __future__ import annotations

import enum

import msgspec


class State(enum.StrEnum):
    HEALTHY = "healthy"
    FAILING = "failing"
    PAUSED = "paused"


# The gauge's values: `qbo_events_endpoint_state{instance}`.
GAUGE = {State.HEALTHY: 0, State.FAILING: 1, State.PAUSED: 2}


class Health(msgspec.Struct, frozen=True, kw_only=True):
    """What is known of one endpoint. `url` is the callback this was learned against: a reload
    that points the instance elsewhere starts it over, healthy."""

    url: str
    state: State = State.HEALTHY
    last_success_at: float | None = None
    consecutive_failures: int = 0
    failing_since: float | None = None
    # While paused: when the next probe may go.
    next_probe_at: float | None = None


class Notice(msgspec.Struct, frozen=True, kw_only=True):
    """A transition worth telling the operator about (delivery.alert_url)."""

    type: str  # endpoint.failing | endpoint.paused | endpoint.recovered
    since: float | None
    consecutive_failures: int
    at: float


def succeeded(health: Health, now: float) -> tuple[Health, Notice | None]:
    """A 2xx: the endpoint is healthy, whatever it was."""
    was = health.state
    new = Health(url=health.url, last_success_at=now)
    if was is State.HEALTHY:
        return new, None
    notice = Notice(
        type="endpoint.recovered",
        since=health.failing_since,
        consecutive_failures=health.consecutive_failures,
        at=now,
    )
    return new, notice


def failed(
    health: Health, now: float, *, pause_after: float, probe_interval: float
) -> tuple[Health, Notice | None]:
    """A failed attempt (no 2xx). `pause_after` 0 never pauses."""
    count = health.consecutive_failures + 1
    if health.state is State.HEALTHY:
        new = msgspec.structs.replace(
            health, state=State.FAILING, consecutive_failures=count, failing_since=now
        )
        return new, Notice(type="endpoint.failing", since=now, consecutive_failures=count, at=now)
    since = health.failing_since if health.failing_since is not None else now
    if health.state is State.PAUSED:
        # A failed probe (or an attempt that was already on the wire when the pause came).
        new = msgspec.structs.replace(
            health,
            consecutive_failures=count,
            next_probe_at=max(health.next_probe_at or now, now + probe_interval),
        )
        return new, None
    if pause_after > 0 and now - since >= pause_after:
        new = msgspec.structs.replace(
            health,
            state=State.PAUSED,
            consecutive_failures=count,
            failing_since=since,
            next_probe_at=now + probe_interval,
        )
        return new, Notice(type="endpoint.paused", since=since, consecutive_failures=count, at=now)
    return msgspec.structs.replace(health, consecutive_failures=count, failing_since=since), None


def probe_taken(health: Health, now: float, probe_interval: float) -> Health:
    """A probe goes now: the next one not before `probe_interval` from now."""
    return msgspec.structs.replace(health, next_probe_at=now + probe_interval)


def reprobed(health: Health, now: float, probe_interval: float) -> Health:
    """A reload's new probe_interval: a probe waiting longer than that from now comes sooner."""
    if health.state is not State.PAUSED or health.next_probe_at is None:
        return health
    if health.next_probe_at <= now + probe_interval:
        return health
    return msgspec.structs.replace(health, next_probe_at=now + probe_interval)


def may_probe(health: Health, now: float) -> bool:
    """Whether a paused endpoint's probe is due. Never true of an endpoint that is not paused:
    it takes every delivery."""
    return health.state is State.PAUSED and (health.next_probe_at or 0.0) <= now


def resumed(health: Health) -> Health:
    """Resumed by hand (`deliveries resume`): healthy again, the failure count starting over.
    The last success is kept: it is still the last one."""
    return Health(url=health.url, last_success_at=health.last_success_at)


def retargeted(health: Health, url: str) -> Health:
    """The instance's callback URL changed: what was learned of the old one does not carry."""
    return health if health.url == url else Health(url=url)


def restored(
    url: str,
    state: str,
    *,
    last_success_at: float | None,
    consecutive_failures: int,
    failing_since: float | None,
    now: float,
) -> Health:
    """A stored row read at start: a paused endpoint probes at once (the restart may have come
    with a fix), a failing one goes on counting from when it started failing."""
    kind = State(state)
    return Health(
        url=url,
        state=kind,
        last_success_at=last_success_at,
        consecutive_failures=consecutive_failures,
        failing_since=failing_since,
        next_probe_at=now if kind is State.PAUSED else None,
    )
