"""What the simulated user answers on Intuit's consent page, and the log of OAuth grants made and
revoked, for tests to read."""

from __future__ import annotations

from collections import deque
from typing import Any, Final, Generic, Literal, TypeVar

import msgspec

from .clock import utc_now, utc_z

Decision = Literal["approve", "deny"]
_KEPT: Final = 1_000


class Answer(msgspec.Struct, frozen=True, kw_only=True):
    """One answer the consent page gives: approve as a company (None: the default one), or deny."""

    decision: Decision = "approve"
    realm_id: str | None = None


class ConsentSwitch:
    """The standing answer, and an optional one-shot answer that the next authorization uses
    up before the standing one applies again."""

    def __init__(self) -> None:
        self.standing = Answer()
        self.once: Answer | None = None

    def set(self, answer: Answer, *, once: bool = False) -> None:
        if once:
            self.once = answer
        else:
            self.standing = answer

    def take(self) -> Answer:
        """The answer for the authorization happening now."""
        answer, self.once = self.once or self.standing, None
        return answer


class Authorization(msgspec.Struct, frozen=True, kw_only=True):
    """One request that reached the consent page and was answered with a redirect."""

    seq: int
    at: str  # 2026-11-27T13:04:47.123Z
    realm_id: str
    decision: Decision
    redirect_uri: str
    state: str | None
    scope: str


class Revocation(msgspec.Struct, frozen=True, kw_only=True):
    """One call to the revoke endpoint, answered or refused."""

    seq: int
    at: str
    realm_id: str | None  # None when the token named no grant the sandbox knows
    token_kind: Literal["refresh", "access", "unknown"]
    status: int


T = TypeVar("T", Authorization, Revocation)


class Log(Generic[T]):
    """The latest records of one kind, numbered from 1 and stamped, and how many in all."""

    def __init__(self, kind: type[T]) -> None:
        self._kind: type[T] = kind
        self._records: deque[T] = deque(maxlen=_KEPT)
        self.count = 0

    def add(self, **fields: Any) -> T:
        self.count += 1
        record: T = self._kind(seq=self.count, at=utc_z(utc_now(), 3), **fields)
        self._records.append(record)
        return record

    def records(self, realm_id: str | None = None) -> list[T]:
        return [r for r in self._records if realm_id is None or r.realm_id == realm_id]
