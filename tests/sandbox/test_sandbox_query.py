"""The query language subset and the Pacific clock, without a server."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from qbo_events.sandbox.clock import pacific, pacific_ms, parse_timestamp, utc_z
from qbo_events.sandbox.query import page, parse, select
from qbo_events.sandbox.responses import Fault


def _customer(number: int, updated: str, *, active: bool = True) -> dict[str, Any]:
    return {
        "Id": str(number),
        "DisplayName": f"Amy {number}" if number % 2 else f"Bill {number}",
        "Active": active,
        "Balance": number * 10,
        "MetaData": {"CreateTime": updated, "LastUpdatedTime": updated},
    }


OBJECTS = [
    _customer(1, "2026-07-01T10:00:00-07:00"),
    _customer(2, "2026-07-01T09:00:00-07:00"),
    _customer(10, "2026-01-15T10:00:00-08:00", active=False),
    _customer(3, "2026-07-02T00:00:00-07:00"),
]


def _ids(text: str) -> list[str]:
    query = parse(text)
    return [o["Id"] for o in page(query, select(query, OBJECTS))]


def test_default_order_is_by_numeric_id() -> None:
    assert _ids("select * from Customer") == ["1", "2", "3", "10"]


def test_keywords_are_case_insensitive_and_order_by_takes_both_spellings() -> None:
    expected = ["3", "1", "2", "10"]
    assert _ids("SeLeCt * FrOm Customer ORDERBY MetaData.LastUpdatedTime DESC") == expected
    assert _ids("select * from Customer order by metadata.lastupdatedtime desc") == expected
    assert _ids("SELECT * FROM Customer ORDER BY Active, Id DESC") == ["10", "3", "2", "1"]


@pytest.mark.parametrize(
    ("where", "expected"),
    [
        ("Metadata.LastUpdatedTime > '2026-07-01T16:59:59Z'", ["1", "3"]),
        ("MetaData.LastUpdatedTime > '2026-07-01T17:00:00Z'", ["3"]),
        ("METADATA.LASTUPDATEDTIME >= '2026-07-01T10:00:00-0700'", ["1", "3"]),
        # No offset means Pacific time, with daylight saving in July and without in January.
        ("MetaData.LastUpdatedTime > '2026-07-01T09:59:59'", ["1", "3"]),
        ("MetaData.LastUpdatedTime <= '2026-01-15T10:00:00'", ["10"]),
        ("MetaData.LastUpdatedTime < '2026-07-01'", ["10"]),
    ],
)
def test_timestamps_with_z_an_offset_or_none(where: str, expected: list[str]) -> None:
    assert _ids(f"select * from Customer where {where}") == expected


def test_in_like_equality_and_booleans() -> None:
    assert _ids("select * from Customer where Active = false") == ["10"]
    assert _ids("select * from Customer where Active IN (true, false) AND Id IN ('1', '10')") == [
        "1",
        "10",
    ]
    assert _ids("select * from Customer where DisplayName LIKE 'amy%'") == ["1", "3"]
    assert _ids("select * from Customer where DisplayName = 'BILL 2'") == ["2"]
    assert _ids("select * from Customer where Balance >= 30 AND Id < '10'") == ["3"]
    assert _ids("select * from Customer where Id > '2'") == ["3", "10"]


def test_paging_is_one_based_and_count_ignores_it() -> None:
    assert _ids("select * from Customer STARTPOSITION 2 MAXRESULTS 2") == ["2", "3"]
    assert _ids("select * from Customer MAXRESULTS 2 STARTPOSITION 4") == ["10"]
    assert _ids("select * from Customer STARTPOSITION 5") == []
    query = parse("select count(*) from Customer startposition 2 maxresults 1")
    assert query.count and len(select(query, OBJECTS)) == 4


def test_default_page_is_100() -> None:
    query = parse("select * from Invoice")
    assert (query.start_position, query.max_results) == (1, 100)


def test_or_is_refused_as_quickbooks_refuses_it() -> None:
    with pytest.raises(Fault) as caught:
        parse("select * from Customer where Id = '1' OR Id = '2'")
    assert caught.value.code == "4000"
    assert caught.value.status == 400
    assert caught.value.detail.startswith('QueryParserError: Encountered " <OR> "OR "" at line 1')


def test_maxresults_over_1000_gives_the_real_error() -> None:
    with pytest.raises(Fault) as caught:
        parse("select * from Invoice maxresults 1500")
    assert caught.value.detail == (
        "QueryValidationError: value 1500 is too large. Max allowed value is 1000"
    )
    assert parse("select * from Invoice maxresults 1000").max_results == 1000


def test_projections_are_accepted_and_whole_objects_returned() -> None:
    assert _ids("SELECT *, DisplayName FROM Customer MAXRESULTS 1") == ["1"]


def test_quoted_values_unescape() -> None:
    query = parse(r"select * from Customer where DisplayName = 'Amy\'s'")
    assert query.where[0].values == ("Amy's",)


def test_pacific_formatting_follows_daylight_saving_and_drops_fractions() -> None:
    summer = datetime(2026, 7, 1, 17, 0, 0, 654321, tzinfo=UTC)
    winter = datetime(2026, 11, 27, 13, 4, 47, tzinfo=UTC)
    assert pacific(summer) == "2026-07-01T10:00:00-07:00"
    assert pacific(winter) == "2026-11-27T05:04:47-08:00"
    assert pacific_ms(summer) == "2026-07-01T10:00:00.654-07:00"
    assert utc_z(winter) == "2026-11-27T13:04:47Z"
    assert utc_z(winter, 3) == "2026-11-27T13:04:47.000Z"
    assert utc_z(summer, 9) == "2026-07-01T17:00:00.654321000Z"


def test_parse_timestamp_accepts_a_plus_turned_into_a_space() -> None:
    moment = datetime(2026, 7, 1, 8, 0, tzinfo=UTC)
    assert parse_timestamp("2026-07-01T10:00:00 02:00") == moment
    assert parse_timestamp("2026-07-01T01:00:00") == moment
