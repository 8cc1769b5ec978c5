"""The control API under /_sandbox/: its index, operation names, and the calls counted by kind."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import aiohttp
import pytest
from qbo_events.sandbox import Sandbox, SandboxOptions
from sandbox_helpers import Api

pytestmark = pytest.mark.anyio

REALMS = ("1111", "2222")
CONTROL_ENDPOINTS = {
    ("GET", "/_sandbox/calls"),
    ("GET", "/_sandbox/changes"),
    ("POST", "/_sandbox/changes"),
    ("POST", "/_sandbox/connect"),
    ("GET", "/_sandbox/faults"),
    ("POST", "/_sandbox/faults"),
    ("POST", "/_sandbox/generator"),
    ("GET", "/_sandbox/stats"),
    ("POST", "/_sandbox/webhooks/flush"),
    ("POST", "/_sandbox/webhooks/hold"),
    ("GET", "/_sandbox/authorizations"),
    ("GET", "/_sandbox/consent"),
    ("POST", "/_sandbox/consent"),
    ("POST", "/_sandbox/disconnect"),
    ("POST", "/_sandbox/hard_expiry"),
    ("GET", "/_sandbox/revocations"),
}


async def test_the_index_lists_every_control_endpoint(
    options: Callable[..., SandboxOptions],
) -> None:
    async with Sandbox(options()) as sandbox, aiohttp.ClientSession() as session:
        for path in ("/_sandbox/", "/_sandbox"):
            async with session.get(sandbox.base_url + path) as response:
                assert response.status == 200
                index = await response.json()
        assert {(e["method"], e["path"]) for e in index["endpoints"]} == CONTROL_ENDPOINTS
        assert all(e["description"] for e in index["endpoints"])
        # Each listed endpoint is served: none of them answers 404 or 405.
        for endpoint in index["endpoints"]:
            url = sandbox.base_url + endpoint["path"]
            async with session.request(endpoint["method"], url, json={}) as response:
                assert response.status not in (404, 405), endpoint


@pytest.mark.parametrize(
    ("entity", "operation"),
    [("Invoice", "create"), ("Invoice", "CREATE"), ("invoice", "Create"), ("INVOICE", "emailed")],
)
async def test_operation_and_entity_names_are_case_insensitive(
    options: Callable[..., SandboxOptions], entity: str, operation: str
) -> None:
    async with Sandbox(options()) as sandbox, aiohttp.ClientSession() as session:
        wanted = {"entity": entity, "operation": operation}
        async with session.post(f"{sandbox.base_url}/_sandbox/changes", json=wanted) as response:
            assert response.status == 200, await response.text()
            made = (await response.json())["changes"]
        assert [(c["entity"], c["operation"]) for c in made] == [
            ("Invoice", operation.capitalize())
        ]


async def test_an_unknown_operation_is_refused_naming_the_accepted_ones(
    options: Callable[..., SandboxOptions],
) -> None:
    async with Sandbox(options()) as sandbox, aiohttp.ClientSession() as session:
        wanted = {"entity": "Invoice", "operation": "destroy"}
        async with session.post(f"{sandbox.base_url}/_sandbox/changes", json=wanted) as response:
            assert response.status == 400
            error = (await response.json())["error"]
        assert error == (
            "unknown operation 'destroy'; accepted: Create, Update, Delete, Void, Merge, Emailed"
        )


async def test_calls_are_counted_by_kind_and_realm(
    options: Callable[..., SandboxOptions],
) -> None:
    async with (
        Sandbox(options(realm_ids=REALMS)) as sandbox,
        aiohttp.ClientSession() as session,
    ):
        first = await Api.connect(sandbox, session)  # one token call for the first realm
        since = (datetime.now(UTC) - timedelta(hours=1)).isoformat()
        await first.cdc("Invoice,Customer", since)
        await first.cdc("Budget", since)
        await first.query("select * from Invoice")
        await first.get("/invoice/1")
        batch = {"BatchItemRequest": [{"bId": "1", "Query": "select * from Term"}]}
        async with session.post(first.base + "/batch", json=batch, headers=first.headers) as r:
            assert r.status == 200
        invoice = {"CustomerRef": {"value": "1"}, "Line": []}
        async with session.post(first.base + "/invoice", json=invoice, headers=first.headers) as r:
            assert r.status == 200
        # The second realm's calls: a query refused for the first realm's token still counts.
        other = f"{sandbox.base_url}/v3/company/{REALMS[1]}/query"
        params = {"query": "select * from Item"}
        async with session.get(other, params=params, headers=first.headers) as r:
            assert r.status == 403
        async with session.post(f"{sandbox.base_url}/_sandbox/changes", json={}) as r:
            assert r.status == 400  # control calls are not QuickBooks calls
        async with session.get(f"{sandbox.base_url}/_sandbox/stats") as response:
            stats = await response.json()
        assert stats["calls"] == {
            "batch": 1,
            "cdc": 2,
            "query": 2,
            "read": 1,
            "token": 1,
            "write": 1,
        }
        zero = dict.fromkeys(stats["calls"], 0)
        assert stats["calls_by_realm"] == {
            REALMS[0]: {
                **zero,
                "batch": 1,
                "cdc": 2,
                "query": 1,
                "read": 1,
                "token": 1,
                "write": 1,
            },
            REALMS[1]: {**zero, "query": 1},
        }
        assert stats["requests"]["cdc 200"] == 2  # the older counts stay as they were

        async with session.get(
            f"{sandbox.base_url}/_sandbox/calls", params={"realm_id": REALMS[0], "after": "1"}
        ) as response:
            log = (await response.json())["calls"]
        assert [c["kind"] for c in log] == ["cdc", "cdc", "query", "read", "batch", "write"]
        assert [c["seq"] for c in log] == [2, 3, 4, 5, 6, 7]
        assert {c["realm_id"] for c in log} == {REALMS[0]} and log[0]["status"] == 200
        async with session.get(
            f"{sandbox.base_url}/_sandbox/calls", params={"after": "x"}
        ) as response:
            assert response.status == 400
