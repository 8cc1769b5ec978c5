"""Company ownership across processes: leases with an epoch (the fencing token) that expire by
the database's clock, member heartbeats, rendezvous hashing to spread companies over the live
members, and the fenced cursor and token writes.

A lease is keyed by the instance whose company it covers (cursors and tokens are the instance's).
Only `now()` decides expiry: processes whose clocks disagree still agree on who owns what.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from typing import Final

import msgspec
from psycopg import pq

from qbo_events.errors import QboEventsError
from qbo_events.pg import Connection

TTL: Final = 10.0  # seconds; renew every TTL / 3


class LeaseLost(QboEventsError):
    """The lease is no longer this process's (expired, taken over, released): the write was
    refused and rolled back, and the process must stop acting for the company at once."""


class Lease(msgspec.Struct, frozen=True):
    """This process's ownership of one instance's company, as the database granted it."""

    instance: str
    owner: str
    epoch: int


class Cursor(msgspec.Struct, frozen=True):
    """A poll's new position, written under the lease of the instance that polled."""

    lease: Lease
    resource: str
    value: str


# -- leases -----------------------------------------------------------------------------------


async def acquire(conn: Connection, instance: str, owner: str, ttl: float = TTL) -> Lease | None:
    """Take the instance's lease if it is free or expired (the epoch goes up by one); None while
    another process holds it, this process included (renew what you hold)."""
    async with conn.transaction():
        cur = await conn.execute(
            "INSERT INTO company_leases AS l (instance, owner, epoch, expires_at)"
            " VALUES (%(instance)s, %(owner)s, 1, now() + make_interval(secs => %(ttl)s))"
            " ON CONFLICT (instance) DO UPDATE SET owner = excluded.owner,"
            "  epoch = l.epoch + 1, expires_at = excluded.expires_at"
            " WHERE l.expires_at <= now()"
            " RETURNING epoch",
            {"instance": instance, "owner": owner, "ttl": ttl},
        )
        row = await cur.fetchone()
    return None if row is None else Lease(instance, owner, int(row[0]))


async def renew(conn: Connection, lease: Lease, ttl: float = TTL) -> bool:
    """Extend a lease still held; False means it was lost (expired first, or taken over): step
    down at once. An expired lease is never revived, even when nobody took it yet: the owner
    may have been paused, and it cannot know what it missed."""
    async with conn.transaction():
        cur = await conn.execute(
            "UPDATE company_leases SET expires_at = now() + make_interval(secs => %s)"
            " WHERE instance = %s AND owner = %s AND epoch = %s AND expires_at > now()",
            (ttl, lease.instance, lease.owner, lease.epoch),
        )
        return cur.rowcount == 1


async def release(conn: Connection, lease: Lease) -> bool:
    """Give the lease up (a clean shutdown, or the company moved to another member), so that
    the next owner need not wait out the TTL. False if it was no longer held."""
    async with conn.transaction():
        cur = await conn.execute(
            "UPDATE company_leases SET expires_at = '-infinity'"
            " WHERE instance = %s AND owner = %s AND epoch = %s AND expires_at > now()",
            (lease.instance, lease.owner, lease.epoch),
        )
        return cur.rowcount == 1


async def holders(conn: Connection) -> dict[str, tuple[str, int]]:
    """Each instance with a live lease: its owner and epoch."""
    cur = await conn.execute(
        "SELECT instance, owner, epoch FROM company_leases WHERE expires_at > now()"
    )
    return {str(i): (str(o), int(e)) for i, o, e in await cur.fetchall()}


# -- fenced writes ----------------------------------------------------------------------------


async def check_fence(conn: Connection, lease: Lease) -> None:
    """Inside the caller's transaction: raise LeaseLost unless the lease is current. The row
    stays share-locked until commit, so no takeover can slip in between this check and the
    writes that follow it."""
    if conn.info.transaction_status == pq.TransactionStatus.IDLE:
        raise RuntimeError("check_fence must run inside the transaction it protects")
    cur = await conn.execute(
        "SELECT 1 FROM company_leases"
        " WHERE instance = %s AND owner = %s AND epoch = %s AND expires_at > now()"
        " FOR SHARE",
        (lease.instance, lease.owner, lease.epoch),
    )
    if await cur.fetchone() is None:
        raise LeaseLost(f"the lease of {lease.instance} (epoch {lease.epoch}) is not current")


async def write_cursor(conn: Connection, lease: Lease, resource: str, value: str) -> None:
    """Store the instance's poll cursor for `resource`, refused (LeaseLost, rolled back) unless
    the lease is current. Inside a caller's transaction, the fence covers its other writes too
    (the events the poll found)."""
    async with conn.transaction():
        await check_fence(conn, lease)
        await conn.execute(
            "INSERT INTO cursors (instance, resource, cursor, epoch) VALUES (%s, %s, %s, %s)"
            " ON CONFLICT (instance, resource) DO UPDATE SET cursor = excluded.cursor,"
            "  epoch = excluded.epoch, updated_at = now()",
            (lease.instance, resource, value, lease.epoch),
        )


async def write_tokens(conn: Connection, lease: Lease, body: bytes) -> None:
    """Store the instance's rotated tokens, refused (LeaseLost, rolled back) unless the lease
    is current: a deposed refresher never overwrites what the new owner stored."""
    async with conn.transaction():
        await check_fence(conn, lease)
        await conn.execute(
            "INSERT INTO tokens (instance, body, epoch) VALUES (%s, %s, %s)"
            " ON CONFLICT (instance) DO UPDATE SET body = excluded.body,"
            "  epoch = excluded.epoch, updated_at = now()",
            (lease.instance, body, lease.epoch),
        )


async def read_cursor(conn: Connection, instance: str, resource: str) -> str | None:
    cur = await conn.execute(
        "SELECT cursor FROM cursors WHERE instance = %s AND resource = %s", (instance, resource)
    )
    row = await cur.fetchone()
    return None if row is None else str(row[0])


async def read_tokens(conn: Connection, instance: str) -> bytes | None:
    cur = await conn.execute("SELECT body FROM tokens WHERE instance = %s", (instance,))
    row = await cur.fetchone()
    return None if row is None else bytes(row[0])


# -- members ----------------------------------------------------------------------------------


async def heartbeat(conn: Connection, process: str) -> None:
    """Say this process is alive (joining on the first call)."""
    async with conn.transaction():
        await conn.execute(
            "INSERT INTO members (process) VALUES (%s)"
            " ON CONFLICT (process) DO UPDATE SET heartbeat_at = now()",
            (process,),
        )


async def leave(conn: Connection, process: str) -> None:
    """Leave on a clean shutdown, so that the others rebalance without waiting for the TTL."""
    async with conn.transaction():
        await conn.execute("DELETE FROM members WHERE process = %s", (process,))


async def live_members(conn: Connection, ttl: float = TTL) -> list[str]:
    """The processes that sent a heartbeat within `ttl`; the long-silent ones are pruned."""
    async with conn.transaction():
        await conn.execute(
            "DELETE FROM members WHERE heartbeat_at < now() - make_interval(secs => %s)",
            (ttl * 10,),
        )
        cur = await conn.execute(
            "SELECT process FROM members"
            " WHERE heartbeat_at > now() - make_interval(secs => %s) ORDER BY process",
            (ttl,),
        )
        return [str(row[0]) for row in await cur.fetchall()]


# -- one round of ownership ------------------------------------------------------------------


class Ownership(msgspec.Struct, frozen=True):
    """What one round left this process owning, and what changed in it."""

    held: dict[str, Lease]
    gained: frozenset[str]
    lost: frozenset[str]  # taken over or expired: stop acting for these at once
    released: frozenset[str]  # given up to the member they now belong to


async def rebalance(
    conn: Connection,
    me: str,
    companies: Iterable[str],
    held: dict[str, Lease],
    ttl: float = TTL,
) -> Ownership:
    """One round, every TTL / 3: heartbeat, renew what is held and still this process's share,
    release what moved to another member, try to take the share not yet held (a company whose
    old owner has not released it yet is taken once it does, or its lease expires)."""
    await heartbeat(conn, me)
    want = assignment(companies, await live_members(conn, ttl), me)
    kept: dict[str, Lease] = {}
    lost: set[str] = set()
    released: set[str] = set()
    for instance, lease in held.items():
        if instance not in want:
            await release(conn, lease)
            released.add(instance)
        elif await renew(conn, lease, ttl):
            kept[instance] = lease
        else:
            lost.add(instance)
    gained: set[str] = set()
    for instance in sorted(want - kept.keys() - lost):
        got = await acquire(conn, instance, me, ttl)
        if got is not None:
            kept[instance] = got
            gained.add(instance)
    return Ownership(kept, frozenset(gained), frozenset(lost), frozenset(released))


# -- who should own what (pure) ---------------------------------------------------------------


def _weight(member: str, company: str) -> int:
    digest = hashlib.blake2b(f"{member}\x1f{company}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big")


def rendezvous_owner(company: str, members: Iterable[str]) -> str | None:
    """The member with the highest weight for the company (highest random weight hashing): when
    a member joins or leaves, only the companies it wins or held move."""
    return max(members, key=lambda m: (_weight(m, company), m), default=None)


def assignment(companies: Iterable[str], members: Iterable[str], me: str) -> frozenset[str]:
    """The companies `me` should own among `members` (`me` counted whether listed or not: a
    process that has not yet heartbeaten still takes its share)."""
    everyone = sorted({*members, me})
    return frozenset(c for c in companies if rendezvous_owner(c, everyone) == me)
