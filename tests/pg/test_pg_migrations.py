"""Schema migrations: applied once, in order, by whichever of several processes gets there first."""

from __future__ import annotations

import asyncio

import psycopg
import pytest
from pg_helpers import Database
from qbo_events.pg.migrations import STEPS, migrate, version

pytestmark = pytest.mark.anyio

TABLES = {
    "events",
    "heads",
    "dedupe",
    "cursors",
    "tokens",
    "company_leases",
    "members",
    "schema_version",
}


async def tables(pg: Database) -> set[str]:
    async with await pg.connect() as conn:
        cur = await conn.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = %s",
            (pg.schema,),
        )
        return {str(r[0]) for r in await cur.fetchall()}


async def test_an_empty_schema_is_brought_up_to_date_once(pg: Database) -> None:
    async with await pg.connect() as conn:
        assert await version(conn) == 0
        assert await migrate(conn) == len(STEPS)
        assert await migrate(conn) == len(STEPS)
        assert await version(conn) == len(STEPS)
    assert await tables(pg) == TABLES
    assert await pg.scalar("SELECT count(*) FROM schema_version") == len(STEPS)


async def test_a_later_step_is_applied_on_top_of_the_earlier_ones(pg: Database) -> None:
    extra = "CREATE TABLE later_step (x integer)"
    async with await pg.connect() as conn:
        assert await migrate(conn) == len(STEPS)
        assert await migrate(conn, (*STEPS, extra)) == len(STEPS) + 1
    assert await tables(pg) == TABLES | {"later_step"}


async def test_processes_migrating_at_once_end_with_one_schema(pg: Database) -> None:
    conns = [await pg.connect() for _ in range(4)]
    try:
        versions = await asyncio.gather(*(migrate(c) for c in conns))
    finally:
        for c in conns:
            await c.close()
    assert versions == [len(STEPS)] * 4
    assert await tables(pg) == TABLES
    assert await pg.scalar("SELECT count(*) FROM schema_version") == len(STEPS)


async def test_a_failed_step_leaves_the_schema_as_it_was(pg: Database) -> None:
    async with await pg.connect() as conn:
        with pytest.raises(psycopg.errors.UndefinedTable):
            await migrate(conn, (*STEPS, "ALTER TABLE no_such_table ADD COLUMN x integer"))
        assert await version(conn) == 0
    assert await tables(pg) == set()
