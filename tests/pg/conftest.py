"""Fixtures for the PostgreSQL store: a fresh schema per test on the server named by
QBO_EVENTS_TEST_POSTGRES, dropped afterwards, and an autocommit connection pool on it."""

from __future__ import annotations

import os
import secrets
from collections.abc import AsyncIterator, Iterator

import psycopg
import pytest
from pg_helpers import Database
from psycopg import sql
from psycopg_pool import AsyncConnectionPool
from qbo_events.pg import Connection
from qbo_events.pg.migrations import migrate

ENV = "QBO_EVENTS_TEST_POSTGRES"


@pytest.fixture(scope="session")
def pg_dsn() -> str:
    dsn = os.environ.get(ENV)
    if not dsn:
        pytest.skip(
            f"no PostgreSQL to test against: set {ENV} (e.g. postgresql://postgres@127.0.0.1:5432/test)"
        )
    return dsn


@pytest.fixture
def pg_schema(pg_dsn: str) -> Iterator[str]:
    name = f"t_{secrets.token_hex(6)}"
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(name)))
    yield name
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(name)))


@pytest.fixture
def pg(pg_dsn: str, pg_schema: str) -> Database:
    """The test's schema, not yet migrated."""
    return Database(pg_dsn, pg_schema)


@pytest.fixture
async def pool(pg: Database) -> AsyncIterator[AsyncConnectionPool[Connection]]:
    """A pool of autocommit connections on the test's schema, migrated."""
    p = pg.pool()
    await p.open(wait=True)
    async with p.connection() as conn:
        await migrate(conn)
    yield p
    await p.close()
