"""Every entity of Intuit's API reference: CDC, Query and read by id; empty where no data."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from importlib import import_module
from typing import Any

import aiohttp
import anyio
import pytest
from qbo_events.sandbox import Sandbox, SandboxOptions
from sandbox_helpers import Api

pytestmark = pytest.mark.anyio

# The entities a client that syncs everything names in one CDC call.
SYNC_ALL = [
    "Account",
    "BillPayment",
    "Bill",
    "Budget",
    "Class",
    "CreditMemo",
    "Customer",
    "Department",
    "Deposit",
    "Employee",
    "Estimate",
    "Invoice",
    "Item",
    "JournalEntry",
    "PaymentMethod",
    "Payment",
    "PurchaseOrder",
    "Purchase",
    "RefundReceipt",
    "SalesReceipt",
    "Term",
    "Transfer",
    "VendorCredit",
    "Vendor",
]
DATA_LESS = (
    "Attachable",
    "Budget",
    "CreditCardPayment",
    "CustomerType",
    "Department",
    "Deposit",
    "Entitlements",
    "Estimate",
    "ExchangeRate",
    "JournalCode",
    "Preferences",
    "Purchase",
    "RecurringTransaction",
    "ReimburseCharge",
    "TaxAgency",
    "TaxClassification",
    "TaxPayment",
    "Transfer",
)
CDC_REFUSED = ("JournalCode", "TaxAgency", "TimeActivity", "TaxCode", "TaxRate")


def _module(entity: str) -> str:
    return "trackingclass" if entity == "Class" else entity.lower()


def _an_hour_ago() -> str:
    return (datetime.now(UTC) - timedelta(hours=1)).isoformat()


async def test_cdc_of_every_entity_a_full_sync_names_answers_a_block_each(
    options: Callable[..., SandboxOptions],
) -> None:
    async with Sandbox(options()) as sandbox, aiohttp.ClientSession() as session:
        api = await Api.connect(sandbox, session)
        sandbox.make_changes("Invoice", "Create")
        sandbox.make_changes("Customer", "Update")
        status, body = await api.cdc(",".join(SYNC_ALL), _an_hour_ago())
        assert status == 200, body
        blocks = body["CDCResponse"][0]["QueryResponse"]
        assert len(blocks) == len(SYNC_ALL)
        named = [next((k for k in b if k in SYNC_ALL), None) for b in blocks]
        assert named[SYNC_ALL.index("Invoice")] == "Invoice"
        assert named[SYNC_ALL.index("Customer")] == "Customer"
        assert sum(name is not None for name in named) == 2
        assert blocks[SYNC_ALL.index("Budget")] == {}
        # Lower case, as Intuit's own blog writes them, names the same entities.
        status, body = await api.cdc("budget,deposit,invoice", _an_hour_ago())
        assert status == 200 and len(body["CDCResponse"][0]["QueryResponse"]) == 3


@pytest.mark.parametrize("entity", CDC_REFUSED)
async def test_cdc_refuses_what_quickbooks_refuses(
    options: Callable[..., SandboxOptions], entity: str
) -> None:
    async with Sandbox(options()) as sandbox, aiohttp.ClientSession() as session:
        api = await Api.connect(sandbox, session)
        status, body = await api.cdc(f"Invoice,{entity}", _an_hour_ago())
        assert status == 400
        error = body["Fault"]["Error"][0]
        assert error["code"] == "500"
        assert error["Detail"] == f"Operation cdc is not supported for {entity}"


async def test_cdc_still_refuses_a_name_quickbooks_does_not_know(
    options: Callable[..., SandboxOptions],
) -> None:
    async with Sandbox(options()) as sandbox, aiohttp.ClientSession() as session:
        api = await Api.connect(sandbox, session)
        status, body = await api.cdc("Invoice,Widget", _an_hour_ago())
        assert status == 400
        assert body["Fault"]["Error"][0]["Detail"] == "Invalid entity name for cdc: Widget"


@pytest.mark.parametrize("entity", DATA_LESS)
async def test_query_and_read_of_an_entity_without_data(
    options: Callable[..., SandboxOptions], entity: str
) -> None:
    async with Sandbox(options()) as sandbox, aiohttp.ClientSession() as session:
        api = await Api.connect(sandbox, session)
        status, body = await api.query(f"select * from {entity}")
        assert (status, body["QueryResponse"]) == (200, {})
        where = f"select * from {entity} where Metadata.LastUpdatedTime > '2026-01-01'"
        status, body = await api.query(where)
        assert (status, body["QueryResponse"]) == (200, {})
        status, body = await api.query(f"select count(*) from {entity}")
        assert (status, body["QueryResponse"]) == (200, {"totalCount": 0})
        status, body, _ = await api.get(f"/{entity.lower()}/1")
        assert status == 400
        error = body["Fault"]["Error"][0]
        assert error["code"] == "610" and error["Message"] == "Object Not Found"


async def test_query_of_a_misspelt_entity_is_still_refused(
    options: Callable[..., SandboxOptions],
) -> None:
    async with Sandbox(options()) as sandbox, aiohttp.ClientSession() as session:
        api = await Api.connect(sandbox, session)
        status, body = await api.query("select * from budget")
        assert status == 400 and "case-sensitive" in body["Fault"]["Error"][0]["Detail"]


async def test_python_quickbooks_syncs_everything(
    options: Callable[..., SandboxOptions], quickbooks_client: Callable[..., Any]
) -> None:
    from quickbooks.cdc import change_data_capture
    from quickbooks.objects.budget import Budget

    # python-quickbooks' own classes, whose qbo_object_name is what it puts in the CDC call.
    classes = [
        getattr(import_module(f"quickbooks.objects.{_module(name)}"), name) for name in SYNC_ALL
    ]
    assert [c.qbo_object_name for c in classes] == SYNC_ALL

    async with Sandbox(options()) as sandbox:
        made = sandbox.make_changes("Invoice", "Create")[0].object_id

        def calls() -> tuple[Any, list[Any]]:
            qb = quickbooks_client(sandbox)
            # A string keeps the offset, which the library's datetime formatting drops.
            result = change_data_capture(classes, _an_hour_ago(), qb=qb)
            return result, Budget.all(qb=qb)

        result, budgets = await anyio.to_thread.run_sync(calls)
        assert [i.Id for i in result.Invoice] == [made]
        assert not hasattr(result, "Budget")
        assert budgets == []
        assert [c.kind for c in sandbox.calls()] == ["token", "cdc", "query"]
        assert sandbox.stats()["calls"]["cdc"] == 1
