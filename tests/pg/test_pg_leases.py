"""Company leases by the database's clock, fenced cursor and token writes, members, and the
rendezvous assignment of companies to members."""

from __future__ import annotations

import asyncio
import itertools

import psycopg
import pytest
from pg_helpers import wait_until
from psycopg_pool import AsyncConnectionPool
from qbo_events.pg import Connection
from qbo_events.pg import claims as c
from qbo_events.pg import leases as L

Pool = AsyncConnectionPool[Connection]


async def acquire(
    pool: Pool, owner: str, ttl: float = 10.0, instance: str = "acme"
) -> L.Lease | None:
    async with pool.connection() as conn:
        return await L.acquire(conn, instance, owner, ttl)


async def expired(pool: Pool, instance: str = "acme") -> bool:
    async with pool.connection() as conn:
        return instance not in await L.holders(conn)


@pytest.mark.anyio
async def test_a_lease_has_one_holder_until_it_expires_by_the_database_clock(pool: Pool) -> None:
    a = await acquire(pool, "a", ttl=1.5)
    assert a == L.Lease("acme", "a", 1)
    assert await acquire(pool, "b") is None
    async with pool.connection() as conn:
        assert await L.holders(conn) == {"acme": ("a", 1)}
    await wait_until(lambda: expired(pool), 10, "the lease to expire")
    b = await acquire(pool, "b")
    assert b == L.Lease("acme", "b", 2)
    async with pool.connection() as conn:
        assert not await L.renew(conn, a)  # expired and taken: step down
        assert await L.renew(conn, b)


@pytest.mark.anyio
async def test_of_processes_acquiring_a_free_lease_at_once_one_wins(pool: Pool) -> None:
    got = await asyncio.gather(*(acquire(pool, f"p{i}") for i in range(4)))
    winners = [lease for lease in got if lease is not None]
    assert len(winners) == 1 and winners[0].epoch == 1


@pytest.mark.anyio
async def test_renewal_keeps_a_lease_and_an_expired_one_is_not_revived(pool: Pool) -> None:
    a = await acquire(pool, "a", ttl=2.0)
    assert a is not None
    async with pool.connection() as conn:
        # Renewed past several TTLs, it stays a's.
        for _ in range(3):
            assert await L.renew(conn, a, ttl=2.0)
            assert await acquire(pool, "b") is None
        await wait_until(lambda: expired(pool), 10, "the lease to expire")
        # Nobody took it, yet the owner (perhaps paused meanwhile) may not carry on.
        assert not await L.renew(conn, a)
    assert await acquire(pool, "a") == L.Lease("acme", "a", 2)


@pytest.mark.anyio
async def test_a_released_lease_is_taken_at_once(pool: Pool) -> None:
    a = await acquire(pool, "a", ttl=3600)
    assert a is not None
    async with pool.connection() as conn:
        assert await L.release(conn, a)
        assert not await L.release(conn, a)
        assert not await L.renew(conn, a)
    assert await acquire(pool, "b") == L.Lease("acme", "b", 2)


@pytest.mark.anyio
async def test_a_deposed_owner_cannot_write_cursors_tokens_or_events(pool: Pool) -> None:
    a = await acquire(pool, "a", ttl=1.5)
    assert a is not None
    async with pool.connection() as conn:
        await L.write_cursor(conn, a, "Invoice", "t1")
        await L.write_tokens(conn, a, b"tokens-a1")
    # a is paused past its TTL; b takes over and writes.
    await wait_until(lambda: expired(pool), 10, "a's lease to expire")
    b = await acquire(pool, "b")
    assert b is not None and b.epoch == a.epoch + 1
    async with pool.connection() as conn:
        await L.write_cursor(conn, b, "Invoice", "t2")
        await L.write_tokens(conn, b, b"tokens-b1")
        # a wakes up: every write it tries is refused.
        with pytest.raises(L.LeaseLost):
            await L.write_cursor(conn, a, "Invoice", "stale")
        with pytest.raises(L.LeaseLost):
            await L.write_tokens(conn, a, b"stale")
        found = [c.NewEvent("e1", "acme", "http://r", "acme/Invoice/1", b"{}")]
        with pytest.raises(L.LeaseLost):
            await c.accept(conn, found, cursor=L.Cursor(a, "Invoice", "stale"))
        assert await L.read_cursor(conn, "acme", "Invoice") == "t2"
        assert await L.read_tokens(conn, "acme") == b"tokens-b1"
        assert await c.next_due(conn) is None  # the poll's events were rolled back with it
        # b's poll commits its events with its cursor.
        assert await c.accept(conn, found, cursor=L.Cursor(b, "Invoice", "t3")) == 1
        assert await L.read_cursor(conn, "acme", "Invoice") == "t3"


@pytest.mark.anyio
async def test_a_fenced_write_holds_off_a_takeover_until_it_commits(pool: Pool) -> None:
    a = await acquire(pool, "a", ttl=2.0)
    assert a is not None
    async with pool.connection() as writer, writer.transaction():
        await L.check_fence(writer, a)
        await wait_until(lambda: expired(pool), 10, "a's lease to expire")
        # The takeover waits on the share lock: it cannot slip in between the check and
        # the commit. Its own statement timeout proves it waits rather than succeeds.
        async with pool.connection() as other:
            with pytest.raises(psycopg.errors.QueryCanceled):
                async with other.transaction():
                    await other.execute("SET LOCAL statement_timeout = 300")
                    await L.acquire(other, "acme", "b")
        await writer.execute(
            "INSERT INTO cursors (instance, resource, cursor, epoch) VALUES ('acme', 'x', 'y', 1)"
        )
    assert await acquire(pool, "b") == L.Lease("acme", "b", 2)


@pytest.mark.anyio
async def test_members_heartbeat_and_leave(pool: Pool) -> None:
    async with pool.connection() as conn:
        await L.heartbeat(conn, "p1")
        await L.heartbeat(conn, "p2")
        await L.heartbeat(conn, "p3")
        assert await L.live_members(conn) == ["p1", "p2", "p3"]
        await L.leave(conn, "p2")
        # p3 falls silent (its last heartbeat long ago).
        await conn.execute(
            "UPDATE members SET heartbeat_at = now() - interval '1 minute' WHERE process = 'p3'"
        )
        assert await L.live_members(conn, ttl=10) == ["p1"]
        await L.heartbeat(conn, "p3")
        assert await L.live_members(conn, ttl=10) == ["p1", "p3"]


@pytest.mark.anyio
async def test_companies_move_when_a_member_joins_and_when_it_leaves(pool: Pool) -> None:
    companies = [f"c{i}" for i in range(12)]
    held: dict[str, dict[str, L.Lease]] = {"p1": {}, "p2": {}}

    async def round_of(me: str) -> L.Ownership:
        async with pool.connection() as conn:
            done = await L.rebalance(conn, me, companies, held[me])
        held[me] = done.held
        return done

    first = await round_of("p1")
    assert first.gained == frozenset(companies)  # alone, p1 owns every company
    # p2 joins: its share is still p1's until p1's next round releases it.
    assert (await round_of("p2")).gained == frozenset()
    moved = (await round_of("p1")).released
    assert moved and moved == L.assignment(companies, ["p1", "p2"], "p2")
    assert (await round_of("p2")).gained == moved
    async with pool.connection() as conn:
        owners = {i: o for i, (o, _) in (await L.holders(conn)).items()}
    assert owners == {c: ("p2" if c in moved else "p1") for c in companies}
    # p1 shuts down cleanly: p2 takes everything in its next round, without waiting for a TTL.
    async with pool.connection() as conn:
        for lease in held["p1"].values():
            await L.release(conn, lease)
        await L.leave(conn, "p1")
    assert (await round_of("p2")).gained == frozenset(companies) - moved
    assert set(held["p2"]) == set(companies)


@pytest.mark.anyio
async def test_a_round_reports_a_lease_lost_while_paused(pool: Pool) -> None:
    a = await acquire(pool, "p1", ttl=0.3)
    assert a is not None
    await wait_until(lambda: expired(pool), 10, "p1's lease to expire")
    assert await acquire(pool, "p2") is not None  # taken while p1 was paused
    async with pool.connection() as conn:
        done = await L.rebalance(conn, "p1", ["acme"], {"acme": a})
    assert done.lost == {"acme"} and done.held == {} and not done.gained


def test_rendezvous_gives_each_company_one_owner_spread_over_members() -> None:
    companies = [f"company-{i}" for i in range(600)]
    members = ["p1", "p2", "p3"]
    shares = [L.assignment(companies, members, m) for m in members]
    assert sum(len(s) for s in shares) == len(companies)
    assert set().union(*shares) == set(companies)
    assert all(150 < len(s) < 250 for s in shares), [len(s) for s in shares]
    assert L.rendezvous_owner("x", []) is None
    # The same answer whatever order the members are listed in.
    for order in itertools.permutations(members):
        assert L.assignment(companies, order, "p1") == shares[0]


def test_rendezvous_moves_only_the_companies_of_a_member_that_leaves_or_joins() -> None:
    companies = [f"company-{i}" for i in range(600)]
    before = {c: L.rendezvous_owner(c, ["p1", "p2", "p3"]) for c in companies}
    after_leave = {c: L.rendezvous_owner(c, ["p1", "p3"]) for c in companies}
    moved = {c for c in companies if before[c] != after_leave[c]}
    assert moved == {c for c in companies if before[c] == "p2"}
    after_join = {c: L.rendezvous_owner(c, ["p1", "p2", "p3", "p4"]) for c in companies}
    moved = {c for c in companies if before[c] != after_join[c]}
    assert moved and all(after_join[c] == "p4" for c in moved)
    # A process that has not heartbeaten yet still computes its own share.
    assert L.assignment(companies, ["p1", "p2", "p3"], "p4") == frozenset(
        c for c in companies if after_join[c] == "p4"
    )
