"""The pure health verdicts: instance readiness and the watchdog's wedge checks, no event loop."""

from __future__ import annotations

import pytest
from qbo_events.health import (
    DISPATCH_STALL,
    POLL_DEADLINE_FLOOR,
    InstanceState,
    PollProgress,
    Progress,
    Readiness,
    instances_readiness,
    poll_deadline,
    wedged,
)


def inst(name: str, vendor: str, refused: bool = False) -> InstanceState:
    return InstanceState(
        name=name,
        polls=vendor in ("polling", "hybrid"),
        takes_webhooks=vendor in ("webhook", "hybrid"),
        needs_reauthorization=refused,
    )


def test_every_polling_instance_refused_is_not_ready() -> None:
    verdict = instances_readiness([inst("acme", "polling", True), inst("globex", "polling", True)])
    assert not verdict.ready
    assert verdict.problems == [
        "instance acme: needs re-authorization",
        "instance globex: needs re-authorization",
    ]


def test_one_working_instance_is_ready_and_the_others_are_listed() -> None:
    verdict = instances_readiness([inst("acme", "polling", True), inst("globex", "polling")])
    assert verdict.ready
    assert verdict.problems == ["instance acme: needs re-authorization"]


def test_a_refused_hybrid_instance_still_takes_webhooks() -> None:
    verdict = instances_readiness([inst("acme", "hybrid", True)])
    assert verdict.ready
    assert verdict.problems == [
        "instance acme: needs re-authorization (polling paused, webhooks taken)"
    ]


@pytest.mark.parametrize("instances", [[], [inst("w", "webhook")], [inst("p", "polling")]])
def test_nothing_refused_is_ready_with_no_problems(instances: list[InstanceState]) -> None:
    assert instances_readiness(instances) == Readiness(ready=True, problems=[])


def progress(**changes: object) -> Progress:
    base: dict[str, object] = {
        "dispatching": True,
        "since_dispatch": 1.0,
        "due_for": None,
        "storage_ok": True,
        "polls": [],
    }
    return Progress(**{**base, **changes})  # type: ignore[arg-type]


def test_a_turning_daemon_is_not_wedged() -> None:
    assert wedged(progress()) == []
    # Work due for long, but the dispatcher runs rounds (an endpoint at its cap, say).
    assert wedged(progress(due_for=3600.0, since_dispatch=2.0)) == []


def test_a_dispatcher_that_stopped_while_work_is_due_is_wedged() -> None:
    stalled = DISPATCH_STALL + 5
    assert wedged(progress(due_for=stalled, since_dispatch=stalled)) == [
        f"senders: no dispatch for {stalled:.0f} s while work is due"
    ]


@pytest.mark.parametrize(
    "changes",
    [
        {"due_for": None},  # nothing due (every slot busy with a slow receiver, or no work)
        {"due_for": 3.0},  # just fell due: a round is coming
        {"storage_ok": False},  # waiting out storage errors, which /readyz reports
        {"dispatching": False},  # not started yet, or stopped
    ],
)
def test_an_idle_or_waiting_dispatcher_is_not_wedged(changes: dict[str, object]) -> None:
    stalled = DISPATCH_STALL * 10
    assert wedged(progress(**{"due_for": stalled, "since_dispatch": stalled, **changes})) == []


def test_a_poll_silent_past_its_deadline_is_wedged() -> None:
    polls = [
        PollProgress(name="acme/invoices", silent_for=901.0, deadline=900.0),
        PollProgress(name="acme/customers", silent_for=899.0, deadline=900.0),
    ]
    assert wedged(progress(polls=polls)) == [
        "poll acme/invoices: no answer for 901 s (deadline 900 s)"
    ]


def test_the_poll_deadline_is_the_interval_or_the_floor() -> None:
    assert poll_deadline(60.0) == POLL_DEADLINE_FLOOR
    assert poll_deadline(3600.0) == 3600.0
