"""Fuzz the Retry-After parser: None or a finite, bounded number of seconds, never an exception."""

from __future__ import annotations

import math
from datetime import UTC, datetime

import pytest
from fuzzing import fuzz_settings
from hypothesis import example, given
from hypothesis import strategies as st
from qbo_events.sinks.retry import MAX_RETRY_AFTER, parse_retry_after

NOW = datetime(2026, 11, 27, 13, 0, 0, tzinfo=UTC).timestamp()

DATES = st.datetimes(min_value=datetime(1000, 1, 1), max_value=datetime(9999, 12, 31))
# RFC 850 has a two-digit year, which the email parser places in 1969-2068.
RFC850_DATES = st.datetimes(min_value=datetime(1969, 1, 1), max_value=datetime(2068, 12, 31))


def imf_fixdate(when: datetime) -> str:
    return when.strftime("%a, %d %b %Y %H:%M:%S GMT")


def rfc850(when: datetime) -> str:
    return when.strftime("%A, %d-%b-%y %H:%M:%S GMT")


def asctime(when: datetime) -> str:
    return f"{when:%a %b} {when.day:2d} {when:%H:%M:%S %Y}"


HEADER_LIKE = st.one_of(
    st.text(),
    st.from_regex(r"\s*[+-]?[0-9]{1,30}(\.[0-9]{0,10})?\s*", fullmatch=True),
    st.from_regex(
        r"([A-Za-z]{3,9}, )?[0-9]{1,25}[ -][A-Za-z]{3}[ -][0-9]{1,25} [0-9]{1,25}:[0-9]{1,25}"
        r"(:[0-9]{1,25})?( (GMT|UT|[A-Z]{1,3}|[+-][0-9]{1,25}))?",
        fullmatch=True,
    ),
    DATES.map(imf_fixdate),
    RFC850_DATES.map(rfc850),
    DATES.map(asctime),
)


@fuzz_settings(600)
@given(HEADER_LIKE)
@example("1 JAN 99999999999999999999 0:0")  # year past a C long: OverflowError
@example("Fri, 27 Nov 2026 13:02:00 +9999999999999999999999")  # zone past a C int
@example("Fri, 27 Nov 2026 99999999999999999999:02:00 GMT")
@example("1 JAN 2127 0:0")  # a century ahead
@example("1" * 20)  # 10^19 seconds
@example("1" * 400)  # past a float
def test_anything_is_none_or_bounded_seconds(value: str) -> None:
    seconds = parse_retry_after(value, NOW)
    assert seconds is None or (math.isfinite(seconds) and 0.0 <= seconds <= MAX_RETRY_AFTER)


def test_the_cap_is_a_day() -> None:
    # A receiver or QuickBooks asking for longer must not park an endpoint or a realm for ever.
    assert MAX_RETRY_AFTER == 86400.0


@fuzz_settings(300)
@given(
    st.one_of(st.integers(0, 10**30).map(str), st.floats(0, 1e30).map(lambda f: f"{f:.3f}")),
    st.sampled_from(["", " ", "\t"]),
)
def test_delta_seconds_are_read_and_capped(seconds: str, pad: str) -> None:
    expected = min(float(seconds), MAX_RETRY_AFTER)
    assert parse_retry_after(f"{pad}{seconds}{pad}", NOW) == pytest.approx(expected)


@fuzz_settings(300)
@given(st.one_of(DATES.map(lambda d: (d, imf_fixdate(d))), DATES.map(lambda d: (d, asctime(d)))))
def test_http_dates_are_seconds_from_now_clamped(pair: tuple[datetime, str]) -> None:
    when, text = pair
    expected = min(max(when.replace(tzinfo=UTC).timestamp() - NOW, 0.0), MAX_RETRY_AFTER)
    assert parse_retry_after(text, NOW) == pytest.approx(expected)


@fuzz_settings(200)
@given(RFC850_DATES)
def test_rfc850_dates_are_read(when: datetime) -> None:
    expected = min(max(when.replace(tzinfo=UTC).timestamp() - NOW, 0.0), MAX_RETRY_AFTER)
    assert parse_retry_after(rfc850(when), NOW) == pytest.approx(expected)


@fuzz_settings(200)
@given(st.floats(min_value=0, max_value=MAX_RETRY_AFTER - 1))
def test_a_date_ahead_within_the_cap_is_its_distance(ahead: float) -> None:
    when = datetime.fromtimestamp(int(NOW + ahead), UTC)
    assert parse_retry_after(imf_fixdate(when), NOW) == pytest.approx(int(NOW + ahead) - NOW)
