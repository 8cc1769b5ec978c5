"""The API under /v3/company, checked with python-quickbooks and with raw HTTP where it matters."""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
import anyio
import pytest
from qbo_events.sandbox import Sandbox, SandboxOptions
from qbo_events.sandbox.clock import parse_timestamp
from sandbox_helpers import Api, eventually

pytestmark = pytest.mark.anyio

PACIFIC_SECONDS = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d-0[78]:00$")
PACIFIC_MS = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}-0[78]:00$")


def _minutes_ago(minutes: float) -> datetime:
    return datetime.now(UTC) - timedelta(minutes=minutes)


async def test_python_quickbooks_query_count_and_read(
    options: Callable[..., SandboxOptions], quickbooks_client: Callable[..., Any]
) -> None:
    from quickbooks.objects.company_info import CompanyInfo
    from quickbooks.objects.customer import Customer
    from quickbooks.objects.invoice import Invoice
    from quickbooks.objects.item import Item

    async with Sandbox(options(seed=12)) as sandbox:
        sandbox.make_changes("Customer", "Delete", object_id="3")

        def calls() -> None:
            qb = quickbooks_client(sandbox)
            customers = Customer.all(qb=qb)
            assert [c.Id for c in customers] == [str(i) for i in range(1, 13) if i != 3]
            assert Customer.count(qb=qb) == 11
            assert Customer.count("Active IN (true, false)", qb=qb) == 12
            assert len(Item.all(max_results=5, qb=qb)) == 5  # "SELECT *, Sku FROM Item"
            page = Invoice.where(
                "", order_by="TotalAmt DESC", start_position=3, max_results=4, qb=qb
            )
            every = sorted((i.TotalAmt for i in Invoice.all(qb=qb)), reverse=True)
            assert [i.TotalAmt for i in page] == every[2:6]
            invoice = Invoice.get(7, qb=qb)
            assert invoice.Id == "7" and invoice.DocNumber == "00007"
            assert PACIFIC_SECONDS.match(invoice.MetaData.LastUpdatedTime)
            found = Customer.filter(DisplayName=customers[0].DisplayName, qb=qb)
            assert [c.Id for c in found] == [customers[0].Id]
            assert Customer.choose(["2", "5"], qb=qb)[1].Id == "5"
            info = CompanyInfo.get(sandbox.options.realm_ids[0], qb=qb)
            assert info.CompanyName.startswith("Sandbox Company")

        await anyio.to_thread.run_sync(calls)
        requests = sandbox.stats()["requests"]
        assert requests["query-post 200"] >= 8 and requests["read 200"] == 2


async def test_python_quickbooks_cdc_sees_changes_and_tombstones(
    options: Callable[..., SandboxOptions], quickbooks_client: Callable[..., Any]
) -> None:
    from quickbooks.cdc import change_data_capture
    from quickbooks.objects.customer import Customer
    from quickbooks.objects.invoice import Invoice

    async with Sandbox(options()) as sandbox:
        created = sandbox.make_changes("Invoice", "Create")[0].object_id
        sandbox.make_changes("Invoice", "Delete", object_id="2")
        sandbox.make_changes("Customer", "Delete", object_id="4")
        since = _minutes_ago(1).isoformat()

        def calls() -> Any:
            qb = quickbooks_client(sandbox)
            return change_data_capture([Invoice, Customer], since, qb=qb)

        result = await anyio.to_thread.run_sync(calls)
        invoices = {i.Id: i for i in result.Invoice}
        assert set(invoices) == {created, "2"}
        assert invoices["2"].status == "Deleted"
        assert [(c.Id, c.Active) for c in result.Customer] == [("4", False)]
        assert PACIFIC_MS.match(result.time)


async def test_python_quickbooks_raises_its_own_exceptions(
    options: Callable[..., SandboxOptions], quickbooks_client: Callable[..., Any]
) -> None:
    from quickbooks.cdc import change_data_capture
    from quickbooks.exceptions import (
        AuthorizationException,
        ObjectNotFoundException,
        UnsupportedException,
        ValidationException,
    )
    from quickbooks.objects.customer import Customer
    from quickbooks.objects.invoice import Invoice
    from quickbooks.objects.taxcode import TaxCode

    async with Sandbox(options()) as sandbox:

        def calls() -> None:
            qb = quickbooks_client(sandbox)
            with pytest.raises(ObjectNotFoundException) as not_found:
                Invoice.get(999, qb=qb)
            assert not_found.value.error_code == 610
            with pytest.raises(ValidationException) as parse_error:
                Customer.where("Id = '1' OR Id = '2'", qb=qb)
            assert "QueryParserError" in parse_error.value.detail
            with pytest.raises(ValidationException) as too_many:
                Invoice.all(max_results=1500, qb=qb)
            assert too_many.value.detail == (
                "QueryValidationError: value 1500 is too large. Max allowed value is 1000"
            )
            with pytest.raises(UnsupportedException):
                change_data_capture([TaxCode], _minutes_ago(5).isoformat(), qb=qb)
            sandbox.set_faults(expire_tokens=True)
            with pytest.raises(AuthorizationException) as expired:
                Invoice.get(1, qb=qb)
            assert expired.value.error_code == 401

        await anyio.to_thread.run_sync(calls)


async def test_cdc_caps_at_1000_objects_across_entities(
    options: Callable[..., SandboxOptions],
) -> None:
    async with Sandbox(options()) as sandbox, aiohttp.ClientSession() as session:
        api = await Api.connect(sandbox, session)
        made = sandbox.make_changes("Invoice", "Create", 700)
        made += sandbox.make_changes("Customer", "Create", 400)
        status, body = await api.cdc("invoice,CUSTOMER", _minutes_ago(1))
        assert status == 200
        (blocks,) = body["CDCResponse"]
        invoices, customers = blocks["QueryResponse"]
        returned = [("Invoice", o["Id"]) for o in invoices["Invoice"]]
        returned += [("Customer", o["Id"]) for o in customers["Customer"]]
        assert len(returned) == len(set(returned)) == 1000
        assert set(returned) <= {(r.entity, r.object_id) for r in made}
        assert invoices["maxResults"] == invoices["totalCount"] == len(invoices["Invoice"])
        assert invoices["startPosition"] == 1


async def test_cdc_tombstones_window_and_refusals(options: Callable[..., SandboxOptions]) -> None:
    async with Sandbox(options()) as sandbox, aiohttp.ClientSession() as session:
        api = await Api.connect(sandbox, session)
        status, body = await api.cdc("Invoice", _minutes_ago(1))
        assert (status, body["CDCResponse"]) == (200, [{"QueryResponse": [{}]}])
        (deleted,) = sandbox.make_changes("Invoice", "Delete", object_id="1")
        status, body = await api.cdc("Invoice", _minutes_ago(1))
        (block,) = body["CDCResponse"][0]["QueryResponse"]
        (stone,) = block["Invoice"]
        assert stone == {
            "domain": "QBO",
            "status": "Deleted",
            "Id": "1",
            "MetaData": {"LastUpdatedTime": stone["MetaData"]["LastUpdatedTime"]},
        }
        assert parse_timestamp(stone["MetaData"]["LastUpdatedTime"]) == parse_timestamp(
            deleted.last_updated
        )
        # changedSince is inclusive, and a bare time is Pacific.
        moment = parse_timestamp(deleted.last_updated)
        bare = moment.astimezone(parse_timestamp("2026-01-01T00:00:00").tzinfo)
        status, body = await api.cdc("Invoice", bare.replace(tzinfo=None).isoformat())
        assert body["CDCResponse"][0]["QueryResponse"][0]["Invoice"][0]["Id"] == "1"
        status, body = await api.cdc("Invoice", moment + timedelta(seconds=1))
        assert body["CDCResponse"][0]["QueryResponse"] == [{}]

        old = (datetime.now(UTC) - timedelta(days=31)).strftime("%Y-%m-%dT%H:%M:%S-00:00")
        status, body = await api.cdc("Invoice", old)
        assert status == 400
        assert body["Fault"]["Error"][0]["Message"] == (
            f"Operation cdc with changedSince date {old} which is older than fixed days "
            f"is not supported."
        )
        for refused in ("TaxCode", "TaxRate", "TimeActivity", "JournalCode", "TaxAgency"):
            status, body = await api.cdc(f"Invoice,{refused}", _minutes_ago(1))
            assert status == 400 and body["Fault"]["type"] == "ValidationFault", refused
            assert refused in body["Fault"]["Error"][0]["Detail"]


async def test_query_paging_empty_pages_and_pacific_times(
    options: Callable[..., SandboxOptions],
) -> None:
    async with Sandbox(options()) as sandbox, aiohttp.ClientSession() as session:
        api = await Api.connect(sandbox, session)
        sandbox.make_changes("TaxCode", "Create", 20)
        seen: list[str] = []
        start = 1
        since = _minutes_ago(10).isoformat()
        while True:
            text = (
                f"SELECT * FROM TaxCode WHERE MetaData.LastUpdatedTime > '{since}' "
                f"ORDERBY MetaData.LastUpdatedTime STARTPOSITION {start} MAXRESULTS 8"
            )
            status, body = await api.query(text)
            assert status == 200 and PACIFIC_MS.match(body["time"])
            rows = body["QueryResponse"].get("TaxCode", [])
            if rows:
                assert body["QueryResponse"]["startPosition"] == start
                assert body["QueryResponse"]["maxResults"] == len(rows)
            assert all(PACIFIC_SECONDS.match(r["MetaData"]["CreateTime"]) for r in rows)
            seen += [r["Id"] for r in rows]
            if len(rows) < 8:
                break
            start += 8
        assert body["QueryResponse"] == {} or len(rows) == 4
        assert seen == [str(i) for i in range(6, 26)]
        status, body = await api.query("select count(*) from TaxCode")
        assert body["QueryResponse"] == {"totalCount": 25}
        status, body = await api.query("select * from TaxCode startposition 100")
        assert body["QueryResponse"] == {}


async def test_query_by_post_text_and_refusals(options: Callable[..., SandboxOptions]) -> None:
    async with Sandbox(options()) as sandbox, aiohttp.ClientSession() as session:
        api = await Api.connect(sandbox, session)
        for content_type in ("application/text", "text/plain"):
            headers = {**api.headers, "Content-Type": content_type}
            async with session.post(
                f"{api.base}/query?minorversion=75",
                data="select * from Vendor where Active = true maxresults 2",
                headers=headers,
            ) as response:
                assert response.status == 200 and response.headers["intuit_tid"]
                assert len((await response.json())["QueryResponse"]["Vendor"]) == 2
        status, body = await api.query("select * from invoice")
        assert status == 400 and body["Fault"]["Error"][0]["code"] == "4000"
        status, body = await api.query("select * from Invoice where Nonsense = '1'")
        assert status == 400
        assert "not queryable" in body["Fault"]["Error"][0]["Detail"]


async def test_batch_answers_each_item(options: Callable[..., SandboxOptions]) -> None:
    async with Sandbox(options()) as sandbox, aiohttp.ClientSession() as session:
        api = await Api.connect(sandbox, session)
        request = {
            "BatchItemRequest": [
                {"bId": "1", "Query": "select * from Bill maxresults 2"},
                {"bId": "2", "Query": "select * from Bill where Id = '1' or Id = '2'"},
                {"bId": "3", "Query": "select count(*) from Term"},
            ]
        }
        async with session.post(f"{api.base}/batch", json=request, headers=api.headers) as r:
            assert r.status == 200
            body = await r.json()
        first, second, third = body["BatchItemResponse"]
        assert first["bId"] == "1" and len(first["QueryResponse"]["Bill"]) == 2
        assert second["bId"] == "2" and second["Fault"]["Error"][0]["code"] == "4000"
        assert third["QueryResponse"] == {"totalCount": 5}
        assert PACIFIC_MS.match(body["time"])


async def test_throttling_is_xml_429_and_limits_are_per_realm(
    options: Callable[..., SandboxOptions],
) -> None:
    async with Sandbox(options(max_per_second=3)) as sandbox, aiohttp.ClientSession() as session:
        api = await Api.connect(sandbox, session)
        sandbox.set_faults(throttle=1)
        status, body, response = await api.get("/invoice/1")
        assert status == 429
        assert response.content_type == "application/xml"
        assert (
            "<Message>message=ThrottleExceeded; errorCode=003001; statusCode=429</Message>" in body
        )
        assert '<Error code="3001">' in body and response.headers["intuit_tid"]
        started = time.monotonic()
        statuses = [(await api.get("/invoice/1"))[0] for _ in range(5)]
        if time.monotonic() - started < 0.9:  # all five fell in one second
            assert statuses == [200, 200, 200, 429, 429]
        assert sandbox.stats()["throttled_by_limits"] >= 1


async def test_server_errors_and_slow_answers(options: Callable[..., SandboxOptions]) -> None:
    async with Sandbox(options()) as sandbox, aiohttp.ClientSession() as session:
        api = await Api.connect(sandbox, session)
        sandbox.set_faults(errors=1)
        assert (await api.get("/invoice/1"))[0] == 503
        sandbox.set_faults(error5xx=1, error_status=500)
        status, body, _ = await api.get("/invoice/1")
        assert status == 500 and body["Fault"]["type"] == "SystemFault"
        assert (await api.get("/invoice/1"))[0] == 200
        sandbox.set_faults(slow=0.3)
        started = time.monotonic()
        assert (await api.get("/invoice/1"))[0] == 200
        assert time.monotonic() - started >= 0.3
        assert sandbox.stats()["requests"]["read 503"] == 1


async def test_control_api_makes_and_lists_changes(options: Callable[..., SandboxOptions]) -> None:
    async with Sandbox(options()) as sandbox, aiohttp.ClientSession() as session:
        control = f"{sandbox.base_url}/_sandbox"
        wanted = {"entity": "Invoice", "operation": "Void", "count": 2}
        async with session.post(f"{control}/changes", json=wanted) as response:
            assert response.status == 200
            made = (await response.json())["changes"]
        assert [c["operation"] for c in made] == ["Void", "Void"]
        assert {c["event_type"] for c in made} == {"UPDATED"}
        async with session.post(f"{control}/changes", json={**wanted, "entity": "Bill"}) as bad:
            assert bad.status == 400 and "does not allow" in (await bad.json())["error"]
        async with session.post(f"{control}/faults", json={"throttle": "x"}) as bad:
            assert bad.status == 400
        async with session.get(f"{control}/changes", params={"after": "1"}) as response:
            assert [c["seq"] for c in (await response.json())["changes"]] == [2]
        async with session.get(f"{control}/stats") as response:
            stats = await response.json()
        assert stats["changes"] == 2 and stats["requests"]["control-changes 200"] == 1
        assert stats["refresh_tokens"] == {sandbox.options.realm_ids[0]: ["sandbox-refresh-token"]}
        async with session.get(f"{sandbox.base_url}/nowhere") as response:
            assert response.status == 404 and response.headers["intuit_tid"]


async def test_change_log_matches_what_the_api_returns(
    options: Callable[..., SandboxOptions],
) -> None:
    async with Sandbox(options(rate=200)) as sandbox, aiohttp.ClientSession() as session:
        api = await Api.connect(sandbox, session)
        await eventually(lambda: len(sandbox.change_log()) >= 40)
        sandbox.set_rate(0)
        log = sandbox.change_log()
        latest: dict[tuple[str, str], Any] = {}
        for record in log:
            latest[(record.entity, record.object_id)] = record
        for (entity, object_id), record in latest.items():
            status, body, _ = await api.get(f"/{entity.lower()}/{object_id}")
            if status == 200:
                stamp = body[entity]["MetaData"]["LastUpdatedTime"]
            else:
                assert record.operation == "Delete", record
                status, body = await api.query(f"select * from {entity} where Id = '{object_id}'")
                assert body["QueryResponse"] == {}
                continue
            assert parse_timestamp(stamp) == parse_timestamp(record.last_updated), record
