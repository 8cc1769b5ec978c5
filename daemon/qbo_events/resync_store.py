"""Resync jobs' durable state: one row per `qbo-events resync`, its progress and its outcome.
The SQL lives here; the outbox runs it (its schema on open, the rest through `execute` and
`query`, and a page's progress inside the `accept` of that page's events)."""

from __future__ import annotations

import secrets
import sqlite3
from collections.abc import Callable
from typing import Any, Final, Protocol, TypeVar

import msgspec

from qbo_events.errors import QboEventsError

T = TypeVar("T")

SCHEMA: Final = """
CREATE TABLE IF NOT EXISTS resync_jobs (
    id TEXT PRIMARY KEY,
    instance TEXT NOT NULL,
    resources TEXT NOT NULL,
    since TEXT,
    state TEXT NOT NULL,
    cancel INTEGER NOT NULL DEFAULT 0,
    done INTEGER NOT NULL DEFAULT 0,
    position BLOB,
    objects INTEGER NOT NULL DEFAULT 0,
    last_seq INTEGER NOT NULL DEFAULT 0,
    created_at REAL NOT NULL,
    started_at REAL,
    finished_at REAL,
    last_error TEXT
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS resync_jobs_instance ON resync_jobs (instance, created_at);
"""

# A job is queued by the command, running once the daemon took it up, draining while the
# events it found are delivered, and then completed or cancelled.
QUEUED: Final = "queued"
RUNNING: Final = "running"
DRAINING: Final = "draining"
COMPLETED: Final = "completed"
CANCELLED: Final = "cancelled"
ACTIVE: Final = (QUEUED, RUNNING, DRAINING)


class ResyncError(QboEventsError):
    """A resync that cannot be started or cancelled as asked."""


class Database(Protocol):
    async def execute(self, op: Callable[[sqlite3.Connection], T]) -> T: ...

    def query(self, op: Callable[[sqlite3.Connection], T]) -> T: ...


class Position(msgspec.Struct, frozen=True):
    """Where a resource's Query paging stands: the objects last updated at or after `after`
    (all, when None), from the `start`th on, leaving out the `seen` ids updated at `after`."""

    after: str | None = None
    start: int = 1
    seen: tuple[str, ...] = ()


class Job(msgspec.Struct, frozen=True, kw_only=True):
    id: str
    instance: str
    resources: tuple[str, ...]
    since: str | None  # RFC 3339; None for `--full`
    state: str
    cancel: bool
    done: int  # resources finished, in the order of `resources`
    position: Position | None  # in resources[done]; None: not begun
    objects: int  # events accepted so far
    last_seq: int  # the outbox's newest row when the job's last page was stored
    created_at: float
    started_at: float | None
    finished_at: float | None
    last_error: str | None

    @property
    def active(self) -> bool:
        return self.state in ACTIVE

    def summary(self) -> dict[str, object]:
        """What /status and `resync --status` show."""
        return {
            "id": self.id,
            "state": "cancelling" if self.cancel and self.active else self.state,
            "resources_done": self.done,
            "resources_total": len(self.resources),
            "objects": self.objects,
            "since": self.since or "full",
            "last_error": self.last_error,
        }


_COLUMNS: Final = (
    "id, instance, resources, since, state, cancel, done, position, objects, last_seq,"
    " created_at, started_at, finished_at, last_error"
)
_encode_position = msgspec.json.Encoder().encode
_decode_position = msgspec.json.Decoder(Position).decode


def _job(row: Any) -> Job:
    (id_, instance, resources, since, state, cancel, done, position, objects, last_seq) = row[:10]
    created_at, started_at, finished_at, last_error = row[10:]
    return Job(
        id=str(id_),
        instance=str(instance),
        resources=tuple(str(resources).split(",")),
        since=None if since is None else str(since),
        state=str(state),
        cancel=bool(cancel),
        done=int(done),
        position=None if position is None else _decode_position(position),
        objects=int(objects),
        last_seq=int(last_seq),
        created_at=float(created_at),
        started_at=None if started_at is None else float(started_at),
        finished_at=None if finished_at is None else float(finished_at),
        last_error=None if last_error is None else str(last_error),
    )


class ResyncStore:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def create(
        self, instance: str, resources: tuple[str, ...], since: str | None, now: float
    ) -> Job:
        """A new queued job; ResyncError while the instance has one that is not over."""
        job_id = "rs_" + secrets.token_hex(8)

        # The op answers rather than raises: the group commit reports any raise as a failed write.
        def op(conn: sqlite3.Connection) -> tuple[Job | None, Job | None]:
            busy = _active_of(conn, instance)
            if busy is not None:
                return None, busy
            conn.execute(
                "INSERT INTO resync_jobs (id, instance, resources, since, state, created_at)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                (job_id, instance, ",".join(resources), since, QUEUED, now),
            )
            return _get(conn, job_id), None

        job, busy = await self._db.execute(op)
        if busy is not None:
            raise ResyncError(f"instance {instance!r} has resync {busy.id} {busy.state}")
        assert job is not None
        return job

    async def cancel(self, instance: str) -> Job:
        """Ask the instance's job to stop; ResyncError when it has none that is not over."""

        def op(conn: sqlite3.Connection) -> Job | None:
            job = _active_of(conn, instance)
            if job is not None:
                conn.execute("UPDATE resync_jobs SET cancel = 1 WHERE id = ?", (job.id,))
            return job

        job = await self._db.execute(op)
        if job is None:
            raise ResyncError(f"instance {instance!r} has no resync under way")
        return msgspec.structs.replace(job, cancel=True)

    def get(self, job_id: str) -> Job | None:
        return self._db.query(lambda conn: _get(conn, job_id))

    def active(self) -> list[Job]:
        def op(conn: sqlite3.Connection) -> list[Job]:
            marks = ", ".join("?" * len(ACTIVE))
            rows = conn.execute(
                f"SELECT {_COLUMNS} FROM resync_jobs WHERE state IN ({marks}) ORDER BY created_at",
                ACTIVE,
            ).fetchall()
            return [_job(row) for row in rows]

        return self._db.query(op)

    def latest(self, instance: str) -> Job | None:
        def op(conn: sqlite3.Connection) -> Job | None:
            row = conn.execute(
                f"SELECT {_COLUMNS} FROM resync_jobs WHERE instance = ?"
                " ORDER BY created_at DESC LIMIT 1",
                (instance,),
            ).fetchone()
            return None if row is None else _job(row)

        return self._db.query(op)

    async def start(self, job_id: str, now: float) -> None:
        await self._db.execute(
            lambda conn: conn.execute(
                "UPDATE resync_jobs SET state = ?, started_at = COALESCE(started_at, ?)"
                " WHERE id = ? AND state = ?",
                (RUNNING, now, job_id, QUEUED),
            )
        )

    async def drain(self, job_id: str) -> None:
        await self._db.execute(
            lambda conn: conn.execute(
                "UPDATE resync_jobs SET state = ?, last_error = NULL WHERE id = ? AND state = ?",
                (DRAINING, job_id, RUNNING),
            )
        )

    async def note_error(self, job_id: str, error: str | None) -> None:
        await self._db.execute(
            lambda conn: conn.execute(
                "UPDATE resync_jobs SET last_error = ? WHERE id = ?",
                (None if error is None else error[:500], job_id),
            )
        )

    def undelivered(self, instance: str, through_seq: int) -> bool:
        """Whether any row of `instance` up to `through_seq` still waits for delivery."""
        return self._db.query(
            lambda conn: (
                conn.execute(
                    "SELECT 1 FROM outbox WHERE instance = ? AND state = 'pending' AND seq <= ?"
                    " LIMIT 1",
                    (instance, through_seq),
                ).fetchone()
                is not None
            )
        )


def progress(
    job_id: str, done: int, position: Position | None, found: int
) -> Callable[[sqlite3.Connection], None]:
    """The operation that records a page as stored, run in the transaction of its events."""
    blob = None if position is None else _encode_position(position)

    def op(conn: sqlite3.Connection) -> None:
        # The newest outbox row now is this page's last event: the drain waits for it.
        conn.execute(
            "UPDATE resync_jobs SET done = ?, position = ?, objects = objects + ?,"
            " last_seq = (SELECT COALESCE(MAX(seq), 0) FROM outbox), last_error = NULL"
            " WHERE id = ?",
            (done, blob, found, job_id),
        )

    return op


def finish(job_id: str, state: str, now: float) -> Callable[[sqlite3.Connection], None]:
    """The operation that ends a job, run in the transaction of its RESYNC event."""

    def op(conn: sqlite3.Connection) -> None:
        conn.execute(
            "UPDATE resync_jobs SET state = ?, finished_at = ? WHERE id = ?", (state, now, job_id)
        )

    return op


def _get(conn: sqlite3.Connection, job_id: str) -> Job | None:
    row = conn.execute(f"SELECT {_COLUMNS} FROM resync_jobs WHERE id = ?", (job_id,)).fetchone()
    return None if row is None else _job(row)


def _active_of(conn: sqlite3.Connection, instance: str) -> Job | None:
    marks = ", ".join("?" * len(ACTIVE))
    row = conn.execute(
        f"SELECT {_COLUMNS} FROM resync_jobs WHERE instance = ? AND state IN ({marks})"
        " ORDER BY created_at LIMIT 1",
        (instance, *ACTIVE),
    ).fetchone()
    return None if row is None else _job(row)
