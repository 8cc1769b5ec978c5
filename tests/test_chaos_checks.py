"""The chaos run's verdicts on hand-made records: each one catches what it is there to catch."""

from __future__ import annotations

from typing import Any

from chaos_checks import (
    Post,
    Spec,
    duplicates,
    invented,
    missing,
    order_violations,
    seq_order_violations,
    want,
)

R = "111"
POLL = Spec("p", R, "polling", ("invoices",))
HOOK = Spec("h", R, "webhook", ("invoices",))


def change(seq: int, object_id: str, kind: str, at: str, op: str = "Update") -> dict[str, Any]:
    return {
        "seq": seq, "realm_id": R, "entity": "Invoice", "object_id": object_id,
        "operation": op, "event_type": kind, "last_updated": at, "webhook": True,
    }  # fmt: skip


LOG = [
    change(1, "1", "CREATED", "2026-12-01T00:00:01Z", "Create"),
    change(2, "1", "UPDATED", "2026-12-01T00:00:02Z"),
    change(3, "2", "CREATED", "2026-12-01T00:00:02Z", "Create"),
]


def delivery(instance: str, c: dict[str, Any], began: float, event_id: str = "") -> dict[str, Any]:
    key = ("invoices", c["object_id"], c["event_type"], c["last_updated"])
    return {"id": event_id or f"{instance}{c['seq']}", "instance": instance, "key": key,
            "began": began, "at": began + 0.01, "late": False}  # fmt: skip


def test_polling_owes_each_objects_last_change_and_webhooks_every_change() -> None:
    polled, hooked = want(POLL, LOG, []), want(HOOK, LOG, [])
    assert {k[1:3] for k in polled.expected} == {("1", "UPDATED"), ("2", "CREATED")}
    assert len(hooked.expected) == 3 and polled.allowed == hooked.allowed
    # A posted entity is owed only when it was answered 200.
    posts = [
        Post(0, [(R, "Invoice", "9", "Update", "2026-12-01T00:00:05Z")], status=200),
        Post(1, [(R, "Invoice", "9", "Update", "2026-12-01T00:00:06Z")], status=None),
    ]
    assert len(want(HOOK, LOG, posts).expected) == 4
    assert len(want(HOOK, LOG, posts).allowed) == 5
    assert len(want(POLL, LOG, posts).expected) == 2


def test_missing_and_invented_deliveries_are_named() -> None:
    wants = {"h": want(HOOK, LOG, [])}
    got = [delivery("h", LOG[0], 1.0), delivery("h", LOG[2], 2.0)]
    assert missing(wants, got) == {"h": {("invoices", "1", "UPDATED", "2026-12-01T00:00:02Z")}}
    stray = change(9, "7", "DELETED", "2026-12-01T00:00:09Z", "Delete")
    assert invented(wants, [*got, delivery("h", stray, 3.0)]) == [
        "h ('invoices', '7', 'DELETED', '2026-12-01T00:00:09Z')"
    ]


def test_a_duplicate_needs_a_kill_between_its_first_2xx_and_the_repeat() -> None:
    first = delivery("h", LOG[0], 10.0, "evt_a")
    again = delivery("h", LOG[0], 14.0, "evt_a")
    assert duplicates([first, again], [(10.5, 10.6)]).by_kill == 1
    assert duplicates([first, again], [(9.0, 9.1)]).unjustified  # kill before the first 2xx
    assert duplicates([first, again], [(14.5, 14.6)]).unjustified  # kill after the repeat
    assert duplicates([first, again], [(30.0, 30.1)]).unjustified
    assert duplicates([{**first, "late": True}, again], []).late == 1


def test_first_deliveries_must_follow_acceptance_order_per_object() -> None:
    wants = {"h": want(HOOK, LOG, [])}
    in_order = [delivery("h", LOG[0], 1.0), delivery("h", LOG[1], 2.0)]
    assert order_violations(wants, in_order) == []
    swapped = [delivery("h", LOG[0], 2.0), delivery("h", LOG[1], 1.0)]
    assert len(order_violations(wants, swapped)) == 1
    # Other objects do not constrain each other.
    assert order_violations(wants, [delivery("h", LOG[2], 0.5), *in_order]) == []


def test_first_deliveries_must_follow_the_outbox_seq_per_object() -> None:
    a, b = delivery("x", LOG[0], 1.0, "evt_a"), delivery("x", LOG[1], 2.0, "evt_b")
    assert seq_order_violations([a, b], {"evt_a": 5, "evt_b": 9}) == ([], 1)
    problems, checked = seq_order_violations([a, b], {"evt_a": 9, "evt_b": 5})
    assert checked == 1 and len(problems) == 1
    # An event never seen undelivered has no seq and constrains nothing.
    assert seq_order_violations([a, b], {"evt_b": 5}) == ([], 0)
