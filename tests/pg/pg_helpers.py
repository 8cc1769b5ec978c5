"""What the PostgreSQL store tests share beyond fixtures: the test database, a wait helper."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

import psycopg
from psycopg_pool import AsyncConnectionPool
from qbo_events.pg import Connection


class Database:
    """Where a test's connections go: the server and the test's own schema."""

    def __init__(self, dsn: str, schema: str) -> None:
        self.dsn = dsn
        self.schema = schema
        self.kwargs: dict[str, Any] = {"autocommit": True, "options": f"-c search_path={schema}"}

    async def connect(self) -> Connection:
        return await psycopg.AsyncConnection.connect(self.dsn, **self.kwargs)

    def pool(self, size: int = 4) -> AsyncConnectionPool[Connection]:
        return AsyncConnectionPool(
            self.dsn, kwargs=self.kwargs, min_size=size, max_size=size, open=False
        )

    async def scalar(self, sql: str, *params: object) -> Any:
        async with await self.connect() as conn:
            cur = await conn.execute(sql, params)  # type: ignore[arg-type]
            row = await cur.fetchone()
            return None if row is None else row[0]


async def wait_until(
    condition: Callable[[], Awaitable[Any]], seconds: float, what: str, every: float = 0.05
) -> Any:
    """Await `condition` until it returns something truthy, or fail after `seconds`."""
    deadline = time.monotonic() + seconds
    while True:
        value = await condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {seconds} s waiting for {what}")
        await asyncio.sleep(every)
