"""Fuzz the one QuickBooks time parser: an aware UTC instant or ValueError, and round trips."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Any

from fuzzing import JSON, OFFSETS, fuzz_settings, qbo_times
from hypothesis import example, given
from hypothesis import strategies as st
from qbo_events import qbtime
from qbo_events.normalize import utc_second
from qbo_events.sources.poller import _last_updated

SECOND = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ")
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

ISO_LIKE = st.from_regex(
    r"\s?[0-9]{1,6}-[0-9]{1,3}-[0-9]{1,3}[Tt ][0-9]{1,3}:[0-9]{1,3}(:[0-9]{1,3}([.,][0-9]{0,40})?)?"
    r"([Zz]|[+-][0-9]{1,3}(:?[0-9]{1,3})?)?\s?",
    fullmatch=True,
)
NUMERIC_TEXT = st.from_regex(r"\s?[+-]?[0-9]{1,40}(\.[0-9]{0,20})?\s?", fullmatch=True)
ANYTHING = st.one_of(
    st.text(),
    ISO_LIKE,
    NUMERIC_TEXT,
    st.integers(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(),
    JSON,
)


@fuzz_settings(800)
@given(ANYTHING)
@example("9999-12-31T23:59:59-01:00")  # past year 9999 once in UTC
@example("0001-01-01T00:00:00+01:00")  # before year 1 once in UTC
@example("0001-01-01T00:00:00")  # Pacific, before year 1 in UTC
@example("9" * 5000)  # epoch milliseconds far past any date
@example(float("inf"))
@example(True)
def test_parse_is_an_aware_utc_instant_or_value_error(value: Any) -> None:
    try:
        parsed = qbtime.parse(value)
    except ValueError:
        return
    assert isinstance(parsed, datetime)
    assert parsed.tzinfo is UTC
    assert SECOND.fullmatch(qbtime.utc_second(value))


@fuzz_settings(400)
@given(qbo_times())
def test_iso_with_an_offset_round_trips_to_the_microsecond(pair: tuple[str, datetime]) -> None:
    text, expected = pair
    assert qbtime.parse(text) == expected
    assert qbtime.parse(text.lower()) == expected
    assert qbtime.utc_second(text) == expected.strftime("%Y-%m-%dT%H:%M:%SZ")


@fuzz_settings(300)
@given(
    st.datetimes(
        min_value=datetime(1971, 1, 1), max_value=datetime(9998, 1, 1), timezones=st.just(UTC)
    )
)
def test_no_offset_means_pacific(instant: datetime) -> None:
    local = instant.astimezone(qbtime.PACIFIC).replace(tzinfo=None)
    earlier = local.replace(tzinfo=qbtime.PACIFIC, fold=0).utcoffset()
    later = local.replace(tzinfo=qbtime.PACIFIC, fold=1).utcoffset()
    if earlier == later:  # the hour repeated when daylight time ends cannot round trip
        assert qbtime.parse(local.isoformat()) == instant


@fuzz_settings(300)
@given(st.integers(min_value=-(2**40), max_value=253_402_300_799_999))  # to year 9999
def test_epoch_milliseconds_as_number_or_text(ms: int) -> None:
    expected = EPOCH + timedelta(milliseconds=ms)
    assert qbtime.parse(ms) == expected
    assert qbtime.parse(str(ms)) == expected
    assert qbtime.parse(float(ms)) == expected


@fuzz_settings(200)
@given(OFFSETS, st.integers(min_value=0, max_value=86399))
def test_offsets_of_a_day_either_side_are_read(tz: Any, second: int) -> None:
    instant = datetime(2026, 3, 8, tzinfo=UTC) + timedelta(seconds=second)
    assert qbtime.parse(instant.astimezone(tz).isoformat()) == instant


@fuzz_settings(300)
@given(
    st.one_of(
        qbo_times().map(lambda pair: pair[0]),
        qbo_times().map(lambda pair: pair[0].lower()),
        st.integers(min_value=0, max_value=2**45),
        st.integers(min_value=0, max_value=2**45).map(str),
    )
)
@example(1475637544000)
@example("2026-11-27t13:04:47z")
def test_the_poller_pages_by_the_instant_normalize_reports(value: Any) -> None:
    # The poller's page cursor and the events' dates must agree, or a page boundary can skip
    # or repeat changes the events say were seen.
    paged = _last_updated({"MetaData": {"LastUpdatedTime": value}}).astimezone(UTC)
    assert paged.strftime("%Y-%m-%dT%H:%M:%SZ") == utc_second(value)
