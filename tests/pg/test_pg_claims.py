"""Deliveries through the heads table: dedupe at intake, one claim per object at a time,
completion, retry and dead letters by claim token, expired claims, the cap per endpoint."""

from __future__ import annotations

import asyncio
import threading

import pytest
from pg_helpers import Database, wait_until
from psycopg_pool import AsyncConnectionPool
from qbo_events.pg import Connection
from qbo_events.pg import claims as c

Pool = AsyncConnectionPool[Connection]
pytestmark = pytest.mark.anyio


def event(obj: str, n: int, endpoint: str = "http://r/1", instance: str = "acme") -> c.NewEvent:
    return c.NewEvent(f"{obj}#{n}", instance, endpoint, obj, f"{obj}#{n}".encode())


async def claim(pool: Pool, owner: str = "p1", **options: object) -> list[c.Claim]:
    async with pool.connection() as conn:
        return await c.claim(conn, owner, **options)  # type: ignore[arg-type]


async def complete(pool: Pool, claims: list[c.Claim]) -> int:
    async with pool.connection() as conn:
        return await c.complete(conn, claims)


async def accept(pool: Pool, events: list[c.NewEvent], **options: object) -> int:
    async with pool.connection() as conn:
        return await c.accept(conn, events, **options)  # type: ignore[arg-type]


def ids(claims: list[c.Claim]) -> list[str]:
    return sorted(x.event_id for x in claims)


async def test_accept_skips_events_seen_before(pool: Pool, pg: Database) -> None:
    assert await accept(pool, [event("o1", 1), event("o1", 2), event("o1", 1)]) == 2
    assert await accept(pool, [event("o1", 2), event("o2", 1)]) == 1
    assert await pg.scalar("SELECT count(*) FROM events") == 3
    assert await pg.scalar("SELECT count(*) FROM heads") == 2
    # A resync stores again what it is asked to.
    assert await accept(pool, [event("o1", 1)], dedupe=False) == 1
    assert await pg.scalar("SELECT count(*) FROM events") == 4
    assert await accept(pool, []) == 0


async def test_old_dedupe_keys_are_pruned_in_small_batches(pool: Pool, pg: Database) -> None:
    await accept(pool, [event(f"o{i}", 0) for i in range(5)])
    async with pool.connection() as conn:
        await conn.execute(
            "UPDATE dedupe SET seen_at = now() - interval '2 hours'"
            " WHERE event_id IN ('o0#0', 'o1#0', 'o2#0')"
        )
        assert [await c.prune_dedupe(conn, 3600, limit=2) for _ in range(3)] == [2, 1, 0]
    assert await pg.scalar("SELECT count(*) FROM dedupe") == 2
    # Past the window, an event id counts as new again; within it, not.
    assert await accept(pool, [event("o0", 0), event("o3", 0)]) == 1


async def test_only_each_objects_first_event_is_claimed(pool: Pool) -> None:
    await accept(pool, [event(f"o{i}", n) for n in range(3) for i in range(3)])
    first = await claim(pool)
    assert ids(first) == ["o0#0", "o1#0", "o2#0"]
    assert first[0].body == b"o0#0" and first[0].attempts == 0 and first[0].accepted_at > 0
    assert await claim(pool, "p2") == []  # the heads are claimed; their successors wait
    assert await complete(pool, first) == 3
    assert ids(await claim(pool, "p2")) == ["o0#1", "o1#1", "o2#1"]


async def test_a_claim_takes_at_most_its_limit(pool: Pool) -> None:
    await accept(pool, [event(f"o{i}", 0) for i in range(30)])
    batch = await claim(pool, limit=10)
    assert len(batch) == 10
    assert len(await claim(pool, limit=50)) == 20


async def test_claims_can_be_limited_to_instances(pool: Pool) -> None:
    await accept(pool, [event("a1", 0, instance="a"), event("b1", 0, instance="b")])
    assert ids(await claim(pool, instances=["b"])) == ["b1#0"]
    assert ids(await claim(pool, instances=["a", "b"])) == ["a1#0"]
    await accept(pool, [event("a2", 0, instance="a"), event("b2", 0, instance="b")])
    assert ids(await claim(pool, instances=["a"], endpoint_cap=5)) == ["a2#0"]


async def test_an_expired_claim_returns_and_its_old_token_is_refused(
    pool: Pool, pg: Database
) -> None:
    await accept(pool, [event("o1", 0), event("o1", 1)])
    (stale,) = await claim(pool, "p1", lease=0.3)
    # p1 is stuck past its lease: the event is claimable again, by p2.
    again = await wait_until(lambda: claim(pool, "p2"), 10, "the claim to expire")
    assert ids(again) == ["o1#0"] and again[0].token != stale.token
    assert await complete(pool, [stale]) == 0
    async with pool.connection() as conn:
        assert not await c.retry(conn, stale, delay=0, error="late")
        assert not await c.dead_letter(conn, stale, error="late")
    assert await pg.scalar("SELECT count(*) FROM events") == 2
    assert await complete(pool, again) == 1
    assert ids(await claim(pool, "p2")) == ["o1#1"]


async def test_a_retry_keeps_the_objects_later_events_waiting(pool: Pool, pg: Database) -> None:
    await accept(pool, [event("o1", 0), event("o1", 1), event("o2", 0)])
    batch = await claim(pool)
    o1 = next(x for x in batch if x.object_key == "o1")
    async with pool.connection() as conn:
        assert await c.retry(conn, o1, delay=2.0, error="503 from the receiver")
        assert not await c.retry(conn, o1, delay=0.5, error="twice")  # the claim is spent
    await complete(pool, [x for x in batch if x.object_key == "o2"])
    assert await claim(pool) == []  # o1#1 waits behind o1#0's retry
    back = await wait_until(lambda: claim(pool), 10, "the retry to fall due")
    assert ids(back) == ["o1#0"] and back[0].attempts == 1
    assert await pg.scalar("SELECT last_error FROM events WHERE event_id = 'o1#0'") == (
        "503 from the receiver"
    )


async def test_a_dead_letter_moves_the_head_to_the_next_event(pool: Pool, pg: Database) -> None:
    await accept(pool, [event("o1", 0), event("o1", 1)])
    (first,) = await claim(pool)
    async with pool.connection() as conn:
        assert await c.dead_letter(conn, first, error="410 gone")
    assert ids(await claim(pool)) == ["o1#1"]
    assert await pg.scalar("SELECT state FROM events WHERE event_id = 'o1#0'") == "dead"
    assert await pg.scalar("SELECT count(*) FROM heads") == 1


async def test_the_head_goes_with_the_objects_last_event(pool: Pool, pg: Database) -> None:
    await accept(pool, [event("o1", 0)])
    assert await complete(pool, await claim(pool)) == 1
    assert await pg.scalar("SELECT count(*) FROM heads") == 0
    async with pool.connection() as conn:
        assert await c.next_due(conn) is None
    await accept(pool, [event("o1", 1)])
    assert ids(await claim(pool)) == ["o1#1"]


async def test_the_endpoint_cap_holds_across_claimers(pool: Pool) -> None:
    cap = 3
    await accept(
        pool,
        [event(f"{ep}-o{i}", 0, endpoint=ep) for ep in ("http://a", "http://b") for i in range(20)],
    )
    # Four processes claim at the same moment, each on its own connection.
    rounds = await asyncio.gather(*(claim(pool, f"p{i}", endpoint_cap=cap) for i in range(4)))
    claimed = [x for r in rounds for x in r]
    async with pool.connection() as conn:
        assert await c.in_flight(conn) == {"http://a": cap, "http://b": cap}
    assert len(claimed) == 2 * cap
    # A finished delivery frees one slot of its endpoint, whoever claims it.
    done = next(x for x in claimed if x.endpoint == "http://a")
    await complete(pool, [done])
    more = await claim(pool, "p9", endpoint_cap=cap)
    assert [x.endpoint for x in more] == ["http://a"]
    # Expired claims count no more.
    await wait_until(
        lambda: claim(pool, "p9", endpoint_cap=20, lease=0.2), 10, "room under a higher cap"
    )


async def test_a_claim_in_progress_keeps_others_off_its_endpoints_slots(pool: Pool) -> None:
    cap = 3
    await accept(pool, [event(f"a-o{i}", 0, endpoint="http://a") for i in range(10)])
    await accept(pool, [event(f"b-o{i}", 0, endpoint="http://b") for i in range(10)])
    # p1's claim has not committed yet (the outer transaction stays open) when p2 claims.
    async with pool.connection() as slow, slow.transaction():
        mine = await c.claim(slow, "p1", limit=1, endpoint_cap=cap)
        assert [x.endpoint for x in mine] == ["http://a"]
        theirs = await claim(pool, "p2", endpoint_cap=cap)
    assert {x.endpoint for x in theirs} == {"http://b"}
    async with pool.connection() as conn:
        assert await c.in_flight(conn) == {"http://a": 1, "http://b": cap}
    # Once p1 committed, its endpoint's remaining room is anyone's.
    assert [x.endpoint for x in await claim(pool, "p2", endpoint_cap=cap)] == ["http://a"] * 2


def run_claimer(
    pg: Database,
    owner: str,
    log: list[tuple[str, str, int]],
    lock: threading.Lock,
    stop: threading.Event,
) -> None:
    """One claiming process's loop, in its own thread and event loop, until `stop` and idle."""

    async def loop() -> None:
        async with await pg.connect() as conn:
            while True:
                batch = await c.claim(conn, owner, limit=20)
                if not batch:
                    if stop.is_set():
                        return
                    await asyncio.sleep(0.01)
                    continue
                with lock:
                    log.extend((owner, x.object_key, int(x.body.split(b"#")[1])) for x in batch)
                assert await c.complete(conn, batch) == len(batch)

    asyncio.run(loop())


def claim_in_threads(
    pg: Database, claimers: int
) -> tuple[list[tuple[str, str, int]], threading.Event, list[threading.Thread]]:
    log: list[tuple[str, str, int]] = []
    lock = threading.Lock()
    stop = threading.Event()
    threads = [
        threading.Thread(target=run_claimer, args=(pg, f"p{i}", log, lock, stop))
        for i in range(claimers)
    ]
    for t in threads:
        t.start()
    return log, stop, threads


def check_order(log: list[tuple[str, str, int]], objects: int, depth: int) -> None:
    # An event is claimed only once its predecessor is completed, and the claim is logged
    # before the completion: the log holds each object's events in order, each once.
    seen: dict[str, list[int]] = {}
    for _, key, n in log:
        seen.setdefault(key, []).append(n)
    assert len(seen) == objects
    for key, order in seen.items():
        assert order == list(range(depth)), key


async def test_per_object_order_holds_across_two_claimers_over_deep_queues(
    pool: Pool, pg: Database
) -> None:
    objects, depth = 50, 50
    for n in range(depth):
        await accept(pool, [event(f"o{i}", n) for i in range(objects)])
    log, stop, threads = claim_in_threads(pg, 2)
    stop.set()
    for t in threads:
        t.join(timeout=120)
        assert not t.is_alive()
    check_order(log, objects, depth)
    assert {owner for owner, _, _ in log} == {"p0", "p1"}  # both took part
    assert await pg.scalar("SELECT count(*) FROM events") == 0
    assert await pg.scalar("SELECT count(*) FROM heads") == 0


async def test_no_event_is_stranded_when_intake_races_completion(pool: Pool, pg: Database) -> None:
    objects, depth = 20, 30
    log, stop, threads = claim_in_threads(pg, 2)
    try:
        for n in range(depth):
            for i in range(0, objects, 5):
                await accept(pool, [event(f"o{j}", n) for j in range(i, i + 5)])
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=120)
    assert not any(t.is_alive() for t in threads)
    check_order(log, objects, depth)
    assert await pg.scalar("SELECT count(*) FROM events") == 0
    assert await pg.scalar("SELECT count(*) FROM heads") == 0
