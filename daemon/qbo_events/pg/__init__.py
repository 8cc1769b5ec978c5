"""The PostgreSQL store for several processes sharing one database: schema migrations
(`migrations`), company ownership with fencing (`leases`) and delivery claims (`claims`).

Every function takes an open `Connection` and runs in its own transaction (a savepoint when the
caller already has one open), so that the same code runs behind a pool or PgBouncer's
transaction pooling: nothing here keeps session state between calls. The connections must be in
autocommit mode (`autocommit=True`), so that each call's transaction is its own and commits when
it returns; behind PgBouncer, also turn off prepared statements (`prepare_threshold=None`).
"""

from __future__ import annotations

from typing import TypeAlias

from psycopg import AsyncConnection
from psycopg.rows import TupleRow

Connection: TypeAlias = AsyncConnection[TupleRow]
