"""The chaos run's verdicts: what each instance must and may receive, duplicates, order, cursors.

Pure functions over what the run recorded (the sandbox's change log, the test's own webhook
posts, the receiver's deliveries, the kill times) and, for cursors, a read-only look at the
outbox database while the daemon is down.
"""

from __future__ import annotations

import itertools
import sqlite3
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from qbo_events.events import Change, EventType, Source, event_id
from qbo_events.quickbooks.resources import BY_NAME, canonical_entity, object_type

Key = tuple[str, str, str, str]  # objectType, objectId, eventType, date
Rank = tuple[int, int, int]  # the acceptance order within one object
# A duplicate is in flight at a kill if its first 2xx began before the kill and was answered
# at most this long before it: the daemon records an acknowledgement within moments, but on
# two shared cores a commit queued behind an fsync has been seen to take 3 s.
ACK_WINDOW = 10.0


@dataclass(frozen=True)
class Spec:
    """One instance as the run configures it."""

    name: str
    realm: str
    vendor: str  # polling | webhook | hybrid
    resources: tuple[str, ...] | None  # None: every resource

    @property
    def polled(self) -> frozenset[str]:
        if self.vendor not in ("polling", "hybrid") or self.resources is None:
            return frozenset()
        return frozenset(BY_NAME[r].entity for r in self.resources)

    def takes_webhook(self, entity: str) -> bool:
        if self.vendor not in ("webhook", "webhooks", "hybrid"):
            return False
        return self.resources is None or object_type(entity) in self.resources


# A posted entity: (realm, name, id, operation, lastUpdated).
Posted = tuple[str, str, str, str, str]


@dataclass
class Post:
    """One webhook body the test posted; its entities may span realms, as QuickBooks' do."""

    index: int
    entities: list[Posted]
    status: int | None = None  # None: no answer (refused, reset)
    answered_at: float = 0.0


@dataclass
class Want:
    """For one instance: the events it must receive, may receive, and their acceptance order."""

    expected: set[Key] = field(default_factory=set)
    allowed: set[Key] = field(default_factory=set)
    rank: dict[Key, Rank] = field(default_factory=dict)


def change_key(c: dict[str, Any]) -> Key:
    return (object_type(c["entity"]), c["object_id"], c["event_type"], c["last_updated"])


def post_key(entity: Posted) -> Key:
    _realm, name, object_id, _operation, date = entity
    return (object_type(name), object_id, "UPDATED", date)


def want(
    spec: Spec,
    log: Sequence[dict[str, Any]],
    posts: Iterable[Post],
    since: dict[tuple[str, str], float] | None = None,
) -> Want:
    """Polling sees an object's latest state only, so of a polled object only its last change
    is owed (every change seen may come); a webhook instance is owed every notified change.
    `since`: for (instance, entity), the change seq after which polling owes changes (a
    resource added later starts at its first cursor; inf: not polled at the end)."""
    w = Want()
    last: dict[tuple[str, str], dict[str, Any]] = {}
    for c in log:
        if c["realm_id"] != spec.realm:
            continue
        key = change_key(c)
        polled = c["entity"] in spec.polled
        owed = c["seq"] > (since or {}).get((spec.name, c["entity"]), 0)
        hooked = c["webhook"] and spec.takes_webhook(c["entity"])
        if not (polled or hooked):
            continue
        w.allowed.add(key)
        if hooked:
            w.expected.add(key)
        if polled and owed:
            last[(c["entity"], c["object_id"])] = c
        # Acceptance follows the change log only where one source feeds the instance: a hybrid
        # instance takes each change from whichever of its two sources comes first.
        if spec.vendor != "hybrid":
            w.rank.setdefault(key, (0, c["seq"], 0))
    w.expected |= {change_key(c) for c in last.values()}
    for post in posts:
        for position, entity in enumerate(post.entities):
            if entity[0] != spec.realm or not spec.takes_webhook(entity[1]):
                continue
            key = post_key(entity)
            w.allowed.add(key)
            w.rank.setdefault(key, (1, post.index, position))
            if post.status == 200:
                w.expected.add(key)
    return w


def delivered_by_instance(deliveries: Sequence[dict[str, Any]]) -> dict[str, set[Key]]:
    out: dict[str, set[Key]] = {}
    for d in deliveries:
        out.setdefault(d["instance"], set()).add(d["key"])
    return out


def missing(wants: dict[str, Want], deliveries: Sequence[dict[str, Any]]) -> dict[str, set[Key]]:
    got = delivered_by_instance(deliveries)
    return {
        name: w.expected - got.get(name, set())
        for name, w in wants.items()
        if w.expected - got.get(name, set())
    }


def invented(wants: dict[str, Want], deliveries: Sequence[dict[str, Any]]) -> list[str]:
    """Deliveries no change and no post accounts for (or for an instance that takes none)."""
    got = delivered_by_instance(deliveries)
    problems = []
    for name, keys in got.items():
        allowed = wants[name].allowed if name in wants else set()
        problems += [f"{name} {k}" for k in sorted(keys - allowed)]
    return problems


@dataclass
class Duplicates:
    total: int = 0
    by_kill: int = 0  # the first 2xx was in flight at a kill
    late: int = 0  # the first 2xx came after the sender had timed out and gone
    unjustified: list[str] = field(default_factory=list)
    per_kill: dict[int, int] = field(default_factory=dict)
    worst_ack_lag: float = 0.0  # kill time less the first 2xx's answer, over justified ones
    worst: str = ""  # the duplicate with that lag

    @property
    def worst_kill(self) -> int:
        """The most duplicates one kill caused."""
        return max(self.per_kill.values(), default=0)


def duplicates(
    deliveries: Sequence[dict[str, Any]], kills: Sequence[tuple[float, float]]
) -> Duplicates:
    """A repeat of an eventId already answered 2xx is justified by a kill that came after the
    first 2xx began and before the repeat began, no later than ACK_WINDOW after that answer;
    or by a first 2xx the sender never saw (answered after its timeout)."""
    result = Duplicates()
    first: dict[str, dict[str, Any]] = {}
    for d in sorted(deliveries, key=lambda d: d["began"]):
        seen = first.get(d["id"])
        if seen is None:
            first[d["id"]] = d
            continue
        result.total += 1
        kill = next(
            (
                i
                for i, (sent, done) in enumerate(kills)
                if seen["began"] < done and sent < d["began"] and done - seen["at"] <= ACK_WINDOW
            ),
            None,
        )
        if kill is None and seen["late"]:
            result.late += 1
            continue
        if kill is None:
            result.unjustified.append(
                f"{d['instance']} {d['key']} id {d['id']}: first 2xx began {seen['began']:.3f}"
                f" answered {seen['at']:.3f}, again at {d['began']:.3f}; kills"
                f" {[round(k[1], 3) for k in kills if seen['began'] - 10 < k[1] < d['began'] + 1]}"
            )
            continue
        result.by_kill += 1
        result.per_kill[kill] = result.per_kill.get(kill, 0) + 1
        lag = kills[kill][1] - seen["at"]
        if lag > result.worst_ack_lag:
            result.worst_ack_lag = lag
            result.worst = (
                f"{d['instance']} {d['key']}: first 2xx began {seen['began']:.3f} answered"
                f" {seen['at']:.3f}, kill {kill + 1} at {kills[kill][1]:.3f},"
                f" again {d['began']:.3f}"
            )
    return result


def order_violations(wants: dict[str, Want], deliveries: Sequence[dict[str, Any]]) -> list[str]:
    """Within each (instance, object), first 2xx deliveries must follow acceptance order."""
    first: dict[tuple[str, Key], float] = {}
    for d in deliveries:
        slot = (d["instance"], d["key"])
        first[slot] = min(first.get(slot, d["began"]), d["began"])
    objects: dict[tuple[str, str, str], list[tuple[float, Rank, Key]]] = {}
    for (instance, key), began in first.items():
        rank = wants[instance].rank.get(key) if instance in wants else None
        if rank is not None:
            objects.setdefault((instance, key[0], key[1]), []).append((began, rank, key))
    problems = []
    for obj, seen in objects.items():
        seen.sort()
        for (_, r1, k1), (_, r2, k2) in itertools.pairwise(seen):
            if r2 < r1:
                problems.append(f"{obj}: {k2} (rank {r2}) delivered after {k1} (rank {r1})")
    return problems


def seq_order_violations(
    deliveries: Sequence[dict[str, Any]], seqs: dict[str, int]
) -> tuple[list[str], int]:
    """The same promise, for every instance (hybrid too), against the acceptance order itself:
    the outbox's seq of each event seen undelivered at a kill. Returns (problems, objects)."""
    first: dict[str, tuple[float, str, Key]] = {}
    for d in deliveries:
        if d["id"] in seqs and (d["id"] not in first or d["began"] < first[d["id"]][0]):
            first[d["id"]] = (d["began"], d["instance"], d["key"])
    objects: dict[tuple[str, str, str], list[tuple[float, int, Key]]] = {}
    for event, (began, instance, key) in first.items():
        objects.setdefault((instance, key[0], key[1]), []).append((began, seqs[event], key))
    problems = []
    checked = 0
    for obj, seen in objects.items():
        if len(seen) < 2:
            continue
        checked += 1
        seen.sort()
        for (_, s1, k1), (_, s2, k2) in itertools.pairwise(seen):
            if s2 < s1:
                problems.append(f"{obj}: {k2} (outbox seq {s2}) delivered after {k1} (seq {s1})")
    return problems, checked


def ordered_objects(wants: dict[str, Want], deliveries: Sequence[dict[str, Any]]) -> int:
    """How many (instance, object) pairs had two or more ranked events delivered."""
    counts: dict[tuple[str, str, str], int] = {}
    for instance, key in {(d["instance"], d["key"]) for d in deliveries}:
        if instance in wants and key in wants[instance].rank:
            slot = (instance, key[0], key[1])
            counts[slot] = counts.get(slot, 0) + 1
    return sum(1 for n in counts.values() if n > 1)


# -- the outbox at a kill point ---------------------------------------------------------------


def read_outbox(db: Path) -> tuple[dict[tuple[str, str], str], set[str]]:
    """(cursors by (instance, resource), every accepted eventId), read-only."""
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        cursors = {
            (i, r): c for i, r, c in conn.execute("SELECT instance, resource, cursor FROM cursors")
        }
        accepted = {row[0] for row in conn.execute("SELECT event_id FROM dedupe")}
    finally:
        conn.close()
    return cursors, accepted


def pending_seqs(db: Path) -> dict[str, int]:
    """eventId -> outbox seq of every row not yet delivered, read-only."""
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        return {e: seq for e, seq in conn.execute("SELECT event_id, seq FROM outbox")}
    finally:
        conn.close()


def _event_id(instance: str, realm: str, entity: str, object_id: str, kind: str, date: str) -> str:
    change = Change(
        realm_id=realm,
        entity=canonical_entity(entity),
        object_id=object_id,
        event_type=EventType(kind),
        date=date,
        source=Source.POLLING,
        raw=None,
    )
    return event_id(instance, change)


def notified(log: Sequence[dict[str, Any]], acked: int) -> list[dict[str, Any]]:
    """The changes covered by the sandbox's first `acked` webhook notifications: a Merge's
    merged-away record rides on its survivor's notification."""
    out: list[dict[str, Any]] = []
    count = 0
    for c in log:
        quiet = c["operation"] == "Merge" and c["event_type"] == "DELETED"
        if not c["webhook"]:
            continue
        if not quiet:
            if count == acked:
                break
            count += 1
        out.append(c)
    return out


def kill_point_problems(
    db: Path,
    specs: Sequence[Spec],
    log: Sequence[dict[str, Any]],
    baseline: int,
    acked: int,
    posts: Iterable[Post],
    killed_at: float,
    since: dict[tuple[str, str], float] | None = None,
) -> tuple[list[str], int]:
    """With the daemon down: no cursor stands past a change that was not accepted (unless a later
    change of the object replaced it before a poll could see it), and every webhook answered 200
    (the sandbox's and the test's) is accepted. Returns (problems, items checked)."""
    cursors, accepted = read_outbox(db)
    by_name = {s.name: s for s in specs}
    problems: list[str] = []
    checked = 0
    later: dict[tuple[str, str, str], int] = {}
    by_entity: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for c in log:
        later[(c["realm_id"], c["entity"], c["object_id"])] = c["seq"]
        by_entity.setdefault((c["realm_id"], c["entity"]), []).append(c)
    for (instance, resource), cursor in sorted(cursors.items()):
        spec = by_name.get(instance)
        if spec is None or resource not in BY_NAME:
            continue
        entity = BY_NAME[resource].entity
        start = max(baseline, (since or {}).get((instance, entity), 0))
        for c in by_entity.get((spec.realm, entity), ()):
            if c["seq"] <= start or c["last_updated"] >= cursor:
                continue
            checked += 1
            if later[(c["realm_id"], c["entity"], c["object_id"])] > c["seq"]:
                continue  # replaced: polling may never have seen this state
            eid = _event_id(
                instance, c["realm_id"], entity, c["object_id"], c["event_type"], c["last_updated"]
            )
            if eid not in accepted:
                problems.append(
                    f"cursor {instance}/{resource} = {cursor} stands past change seq {c['seq']}"
                    f" {entity} {c['object_id']} {c['event_type']} {c['last_updated']},"
                    " which was never accepted"
                )
    for c in notified(log, acked):
        if c["seq"] <= baseline:
            continue
        for spec in specs:
            if spec.realm != c["realm_id"] or not spec.takes_webhook(c["entity"]):
                continue
            checked += 1
            eid = _event_id(
                spec.name,
                c["realm_id"],
                c["entity"],
                c["object_id"],
                c["event_type"],
                c["last_updated"],
            )
            if eid not in accepted:
                problems.append(
                    f"{spec.name}: sandbox webhook for change seq {c['seq']} got 200"
                    " but its event is not in the outbox"
                )
    for post in posts:
        if post.status != 200 or post.answered_at > killed_at:
            continue
        for realm, name, object_id, _op, date in post.entities:
            for spec in specs:
                if spec.realm != realm or not spec.takes_webhook(name):
                    continue
                checked += 1
                eid = _event_id(spec.name, realm, name, object_id, "UPDATED", date)
                if eid not in accepted:
                    problems.append(
                        f"{spec.name}: post {post.index} got 200 but {name}"
                        f" {object_id} {date} is not in the outbox"
                    )
    return problems, checked
