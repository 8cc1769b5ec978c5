"""The one QuickBooks time parser: ISO-8601 with `Z`, an offset or none (Pacific), or epoch ms."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta, timezone
from decimal import ROUND_FLOOR, Decimal, InvalidOperation
from typing import Final
from zoneinfo import ZoneInfo

# QuickBooks reads a time without an offset as Pacific time, and so do we.
PACIFIC: Final = ZoneInfo("America/Los_Angeles")
_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)

_ISO: Final = re.compile(
    r"(?P<year>\d{4})-(?P<month>\d{2})-(?P<day>\d{2})[Tt ](?P<hour>\d{2}):(?P<minute>\d{2})"
    r"(?::(?P<second>\d{2})(?:[.,](?P<fraction>\d+))?)?"
    r"(?P<offset>[Zz]|(?P<sign>[+-])(?P<off_hours>\d{2})(?::?(?P<off_minutes>\d{2}))?)?",
    re.ASCII,
)
_EPOCH_MS: Final = re.compile(r"[+-]?\d+(?:\.\d+)?", re.ASCII)
_MAX_EPOCH_DIGITS: Final = 30


def parse(value: object) -> datetime:
    """The instant of a QuickBooks timestamp (any JSON value), in UTC, to the microsecond.

    Raises ValueError for anything else, including instants outside datetime's range.
    """
    try:
        return _local(value).astimezone(UTC)
    except OverflowError:
        raise ValueError(f"timestamp out of range: {_shown(value)}") from None


def utc_second(value: object) -> str:
    """`2025-10-07T12:59:07.0343-07:00`, a bare Pacific time or epoch ms -> `2025-10-07T19:59:07Z`.

    Truncated, not rounded, so that `.999` stays in its second as QuickBooks' own second does.
    Raises ValueError for anything else.
    """
    utc = parse(value)
    return (
        f"{utc.year:04d}-{utc.month:02d}-{utc.day:02d}"
        f"T{utc.hour:02d}:{utc.minute:02d}:{utc.second:02d}Z"
    )


def _local(value: object) -> datetime:
    """The timestamp as written: aware, in the offset it was given in (Pacific when none)."""
    if isinstance(value, bool):
        raise ValueError(f"not a timestamp: {value!r}")
    if isinstance(value, int | float):
        return _from_epoch_ms(value)
    if not isinstance(value, str):
        raise ValueError(f"not a timestamp: {_shown(value)}")
    text = value.strip()
    if _EPOCH_MS.fullmatch(text):
        return _from_epoch_ms(text)
    match = _ISO.fullmatch(text)
    if match is None:
        raise ValueError(f"not an ISO-8601 date-time or epoch milliseconds: {_shown(value)}")
    fraction = (match["fraction"] or "")[:6].ljust(6, "0")
    if match["offset"] is None:
        tz: timezone | ZoneInfo = PACIFIC
    elif match["sign"] is None:
        tz = UTC
    else:
        minutes = int(match["off_hours"]) * 60 + int(match["off_minutes"] or 0)
        if minutes >= 24 * 60 or int(match["off_minutes"] or 0) >= 60:
            raise ValueError(f"offset out of range: {_shown(value)}")
        tz = timezone(timedelta(minutes=-minutes if match["sign"] == "-" else minutes))
    return datetime(
        int(match["year"]),
        int(match["month"]),
        int(match["day"]),
        int(match["hour"]),
        int(match["minute"]),
        int(match["second"] or 0),
        int(fraction),
        tzinfo=tz,
    )


def _from_epoch_ms(value: str | int | float) -> datetime:
    try:
        ms = Decimal(value)
    except InvalidOperation:
        raise ValueError(f"not a timestamp: {_shown(value)}") from None
    if not ms.is_finite():
        raise ValueError(f"not a timestamp: {_shown(value)}")
    # Year 9999 is 2.5e14 ms; refusing long numbers here keeps the arithmetic below small.
    if ms.adjusted() > _MAX_EPOCH_DIGITS:
        raise ValueError(f"epoch milliseconds out of range: {_shown(value)}")
    micros = int((ms * 1000).to_integral_value(rounding=ROUND_FLOOR))
    try:
        return _EPOCH + timedelta(microseconds=micros)
    except OverflowError:
        raise ValueError(f"epoch milliseconds out of range: {_shown(value)}") from None


def _shown(value: object) -> str:
    """A short repr for a message; a huge int's repr would itself raise."""
    if isinstance(value, str):
        return repr(value[:64])
    if isinstance(value, int) and value.bit_length() > 200:
        return f"a {value.bit_length()}-bit integer"
    return repr(value)[:64]
