"""Time as QuickBooks writes and reads it: Pacific time with an offset, at whole seconds."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

PACIFIC = ZoneInfo("America/Los_Angeles")
SECOND = timedelta(seconds=1)


def utc_now() -> datetime:
    return datetime.now(UTC)


def whole_second(moment: datetime) -> datetime:
    return moment.replace(microsecond=0)


def pacific(moment: datetime) -> str:
    """Object timestamps: `2026-11-27T05:04:47-08:00` (QuickBooks stores whole seconds)."""
    return whole_second(moment).astimezone(PACIFIC).isoformat()


def pacific_ms(moment: datetime) -> str:
    """The `time` of a response envelope: `2026-11-27T05:04:47.123-08:00`."""
    return moment.astimezone(PACIFIC).isoformat(timespec="milliseconds")


def utc_z(moment: datetime, digits: int = 0) -> str:
    """`2026-11-27T13:04:47Z`, or with `digits` (3 or 9) zero-padded fraction digits."""
    utc = moment.astimezone(UTC)
    text = utc.strftime("%Y-%m-%dT%H:%M:%S")
    if digits:
        text += "." + f"{utc.microsecond:06d}{'0' * 3}"[:digits]
    return text + "Z"


def parse_timestamp(text: str) -> datetime:
    """Read a timestamp the way QuickBooks does: `Z`, `+hh:mm`, `+hhmm`, or none (= Pacific).

    A bare date is midnight Pacific. Raises ValueError on anything else.
    """
    value = text.strip()
    # An unencoded `+` in a query string arrives as a space; QuickBooks' own clients do this.
    if len(value) > 19 and value[-6] == " " and value[-5:-3].isdigit():
        value = value[:-6] + "+" + value[-5:]
    elif len(value) > 19 and value[-5] == " " and value[-4:].isdigit():
        value = value[:-5] + "+" + value[-4:]
    parsed = datetime.fromisoformat(value)
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=PACIFIC)
    return parsed


def looks_like_timestamp(value: object) -> bool:
    return isinstance(value, str) and len(value) >= 19 and value[4:5] == "-" and value[10:11] == "T"
