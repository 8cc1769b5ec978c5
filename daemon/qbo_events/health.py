"""Pure verdicts on the daemon's health: which instances can work, and whether work moves.

Readiness (/readyz) asks "can the daemon do its job for at least one instance"; liveness (the
systemd watchdog) asks "is anything stuck that a restart would cure". They differ on purpose:
an instance that needs re-authorization makes the daemon less ready, but restarting it would
not help, so it never stops the watchdog; a wedged dispatcher or poll does.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Final

import msgspec

# The dispatcher sleeps at most a few seconds between rounds while a slot is free; a minute
# without a round while work is due means it is blocked, not idle.
DISPATCH_STALL: Final = 60.0
# A poll gets this long without an answer from QuickBooks (or longer, if its interval is).
# Each call already has its own timeout (130 s, a token refresh 30 s) and at most three
# throttle waits; a poll that gets no answer for this long is stuck in something no retry cures.
POLL_DEADLINE_FLOOR: Final = 900.0


class InstanceState(msgspec.Struct, frozen=True, kw_only=True):
    name: str
    polls: bool
    takes_webhooks: bool
    needs_reauthorization: bool


class Readiness(msgspec.Struct, frozen=True, kw_only=True):
    ready: bool  # the daemon can do its job for at least one instance
    problems: list[str]  # one line per instance that cannot do all of its job


def instances_readiness(instances: Iterable[InstanceState]) -> Readiness:
    """A polling instance that needs re-authorization cannot work; a hybrid one still takes
    webhooks, so it counts as working (and is listed); a webhook-only one always can."""
    problems: list[str] = []
    able = total = 0
    for inst in instances:
        total += 1
        if not (inst.polls and inst.needs_reauthorization):
            able += 1
        elif inst.takes_webhooks:
            able += 1
            problems.append(
                f"instance {inst.name}: needs re-authorization (polling paused, webhooks taken)"
            )
        else:
            problems.append(f"instance {inst.name}: needs re-authorization")
    return Readiness(ready=able > 0 or total == 0, problems=problems)


class PollProgress(msgspec.Struct, frozen=True, kw_only=True):
    name: str  # instance/resource
    silent_for: float  # seconds since the poll under way began or last got an answer
    deadline: float


class Progress(msgspec.Struct, frozen=True, kw_only=True):
    """What the watchdog looks at, as ages in seconds (so this module needs no clock)."""

    dispatching: bool  # the dispatcher has started (and not stopped)
    since_dispatch: float  # since its last completed round
    due_for: float | None  # how long work has been due with a sender slot free; None: none is
    storage_ok: bool  # a dispatcher that waits out storage errors is not wedged
    polls: list[PollProgress]


def poll_deadline(interval: float) -> float:
    return max(interval, POLL_DEADLINE_FLOOR)


def wedged(progress: Progress) -> list[str]:
    """Why the daemon is stuck (no reasons: it makes progress). A slow receiver is not stuck:
    with every sender slot busy nothing is due in the sense above."""
    reasons: list[str] = []
    if (
        progress.dispatching
        and progress.storage_ok
        and progress.due_for is not None
        and min(progress.due_for, progress.since_dispatch) > DISPATCH_STALL
    ):
        reasons.append(
            f"senders: no dispatch for {progress.since_dispatch:.0f} s while work is due"
        )
    for poll in progress.polls:
        if poll.silent_for > poll.deadline:
            reasons.append(
                f"poll {poll.name}: no answer for {poll.silent_for:.0f} s"
                f" (deadline {poll.deadline:g} s)"
            )
    return reasons
