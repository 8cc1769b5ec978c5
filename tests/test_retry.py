"""retry: the schedule with its jitter bounds, dead-lettering, and Retry-After."""

from __future__ import annotations

from datetime import UTC, datetime
from email.utils import format_datetime

import pytest
from qbo_events.sinks.retry import next_delay, parse_retry_after

SCHEDULE = (5.0, 300.0, 1800.0, 7200.0, 18000.0, 36000.0, 36000.0)


@pytest.mark.parametrize(
    ("rand", "factor"),
    [(0.0, 0.8), (0.5, 1.0), (0.25, 0.9), (0.75, 1.1), (0.999999, 1.2)],
)
def test_jitter_is_plus_minus_twenty_percent(rand: float, factor: float) -> None:
    for attempts, step in enumerate(SCHEDULE, start=1):
        delay = next_delay(attempts, SCHEDULE, rand=lambda: rand)
        assert delay == pytest.approx(step * factor, rel=1e-5)


def test_each_attempt_uses_its_own_step() -> None:
    middle = [next_delay(n, SCHEDULE, rand=lambda: 0.5) for n in range(1, len(SCHEDULE) + 1)]
    assert middle == list(SCHEDULE)


def test_default_randomness_stays_within_bounds() -> None:
    delays = [next_delay(2, SCHEDULE) for _ in range(2000)]
    assert all(d is not None and 240.0 <= d < 360.0 for d in delays)
    assert len(set(delays)) > 1900  # it really is jittered


def test_exhausted_schedule_dead_letters() -> None:
    assert next_delay(len(SCHEDULE), SCHEDULE, rand=lambda: 0.5) == 36000.0
    assert next_delay(len(SCHEDULE) + 1, SCHEDULE, rand=lambda: 0.5) is None
    assert next_delay(100, SCHEDULE, retry_after=5.0) is None
    assert next_delay(1, (), rand=lambda: 0.5) is None


def test_retry_after_is_a_floor() -> None:
    assert next_delay(1, SCHEDULE, retry_after=120.0, rand=lambda: 0.999) == 120.0
    # a shorter Retry-After never shortens the schedule
    assert next_delay(2, SCHEDULE, retry_after=1.0, rand=lambda: 0.0) == pytest.approx(240.0)
    assert next_delay(2, SCHEDULE, retry_after=-5.0, rand=lambda: 0.5) == 300.0


def test_zero_step_is_immediate_and_never_negative() -> None:
    assert next_delay(1, [0.0, 1.5], rand=lambda: 0.0) == 0.0
    assert next_delay(2, [0.0, 1.5], rand=lambda: 0.0) == pytest.approx(1.2)


@pytest.mark.parametrize("attempts", [0, -1])
def test_attempts_count_from_one(attempts: int) -> None:
    with pytest.raises(ValueError):
        next_delay(attempts, SCHEDULE)


NOW = datetime(2026, 11, 27, 13, 0, 0, tzinfo=UTC).timestamp()


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("120", 120.0),
        (" 7 ", 7.0),
        ("0", 0.0),
        ("1.5", 1.5),
        ("Fri, 27 Nov 2026 13:02:00 GMT", 120.0),
        ("Friday, 27-Nov-26 13:00:30 GMT", 30.0),  # RFC 850, obsolete but allowed
        ("Fri Nov 27 13:00:45 2026", 45.0),  # asctime, no zone: GMT
        ("Fri, 27 Nov 2026 12:00:00 GMT", 0.0),  # in the past
        ("Fri, 27 Nov 2026 14:02:00 +0100", 120.0),
    ],
)
def test_parse_retry_after(value: str, expected: float) -> None:
    assert parse_retry_after(value, NOW) == pytest.approx(expected)


def test_parse_retry_after_round_trips_format_datetime() -> None:
    when = datetime(2026, 11, 27, 13, 10, 0, tzinfo=UTC)
    assert parse_retry_after(format_datetime(when, usegmt=True), NOW) == 600.0


@pytest.mark.parametrize("value", [None, "", "soon", "-5", "1e3", "12 seconds", "Fri, 99 Nov"])
def test_parse_retry_after_unreadable_is_none(value: str | None) -> None:
    assert parse_retry_after(value, NOW) is None
