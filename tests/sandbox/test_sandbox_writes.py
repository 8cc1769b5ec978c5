"""Writes through the REST API: python-quickbooks' save, delete and void against the sandbox,
their way into the change log, CDC and webhooks, and QuickBooks' faults for bad writes."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
import anyio
import orjson
import pytest
from qbo_events.sandbox import Sandbox, SandboxOptions
from sandbox_helpers import Receiver
from test_sandbox_api import Api

pytestmark = pytest.mark.anyio


async def test_python_quickbooks_creates_updates_voids_and_deletes(
    options: Callable[..., SandboxOptions], quickbooks_client: Callable[..., Any]
) -> None:
    from quickbooks.cdc import change_data_capture
    from quickbooks.objects.customer import Customer
    from quickbooks.objects.detailline import SalesItemLine, SalesItemLineDetail
    from quickbooks.objects.invoice import Invoice
    from quickbooks.objects.payment import Payment

    async with Sandbox(options(seed=3)) as sandbox:
        realm = sandbox.options.realm_ids[0]
        before = len(sandbox.change_log())

        def calls() -> dict[str, Any]:
            qb = quickbooks_client(sandbox)
            customer = Customer()
            customer.DisplayName = "Written Through The API"
            customer.save(qb=qb)
            created_id, first_token = customer.Id, customer.SyncToken
            customer.Notes = "edited by a client"
            customer.save(qb=qb)  # a full update, with the SyncToken it read
            again = Customer.get(created_id, qb=qb)

            invoice = Invoice()
            invoice.CustomerRef = customer.to_ref()
            line = SalesItemLine()
            line.Amount = 125.5
            line.SalesItemLineDetail = SalesItemLineDetail()
            invoice.Line = [line]
            invoice.save(qb=qb)
            invoice_id = invoice.Id
            to_void = Invoice.get("1", qb=qb)
            to_void.void(qb=qb)
            # Payments are voided as `?operation=update&include=void`.
            Payment.get("1", qb=qb).void(qb=qb)
            payment_total = Payment.get("1", qb=qb).TotalAmt
            Invoice.get(invoice_id, qb=qb).delete(qb=qb)
            since = (datetime.now(UTC) - timedelta(minutes=5)).isoformat()
            cdc = change_data_capture([Invoice, Customer], since, qb=qb)
            return {
                "customer": (created_id, first_token, again.SyncToken, again.Notes),
                "display": again.DisplayName,
                "invoice": invoice_id,
                "voided": (Invoice.get("1", qb=qb).TotalAmt, payment_total),
                "cdc_invoices": {i.Id: getattr(i, "status", None) for i in cdc.Invoice},
            }

        seen = await anyio.to_thread.run_sync(calls)
        created_id, first_token, token, notes = seen["customer"]
        assert int(token) == int(first_token) + 1 and notes == "edited by a client"
        assert seen["display"] == "Written Through The API"
        assert seen["voided"] == (0, 0)
        assert seen["cdc_invoices"][seen["invoice"]] == "Deleted"
        made = [(r.entity, r.object_id, r.operation, r.event_type.value)
                for r in sandbox.change_log(realm, before)]  # fmt: skip
        assert made == [
            ("Customer", created_id, "Create", "CREATED"),
            ("Customer", created_id, "Update", "UPDATED"),
            ("Invoice", seen["invoice"], "Create", "CREATED"),
            ("Invoice", "1", "Void", "UPDATED"),
            ("Payment", "1", "Void", "UPDATED"),
            ("Invoice", seen["invoice"], "Delete", "DELETED"),
        ]


async def test_sparse_update_deactivation_and_the_faults_of_bad_writes(
    options: Callable[..., SandboxOptions],
) -> None:
    async with Sandbox(options(seed=3)) as sandbox, aiohttp.ClientSession() as session:
        api = await Api.connect(sandbox, session)

        async def post(path: str, body: Any, **params: str) -> tuple[int, Any]:
            async with session.post(
                api.base + path, data=orjson.dumps(body), params=params, headers=api.headers
            ) as response:
                return response.status, await response.json()

        _, read = await post("/customer", {"Id": "2", "SyncToken": "x", "sparse": True})
        assert read["Fault"]["Error"][0]["code"] == "5010"  # stale SyncToken
        customer = stored(sandbox, "2")
        token, name = customer["SyncToken"], customer["DisplayName"]

        status, body = await post(
            "/customer", {"Id": "2", "SyncToken": token, "sparse": True, "Notes": "sparse"}
        )
        assert status == 200
        assert body["Customer"]["Notes"] == "sparse" and body["Customer"]["DisplayName"] == name
        token = body["Customer"]["SyncToken"]
        # Setting Active to false is how a client deletes a name list entry.
        status, body = await post(
            "/customer", {"Id": "2", "SyncToken": token, "sparse": True, "Active": False}
        )
        assert status == 200 and body["Customer"]["Active"] is False
        assert body["Customer"]["DisplayName"] == f"{name} (deleted)"
        assert sandbox.change_log()[-1].event_type.value == "DELETED"

        status, body = await post("/customer", {"Id": "3", "SyncToken": "0"}, operation="delete")
        assert status == 400 and body["Fault"]["Error"][0]["code"] == "500"
        status, body = await post("/invoice", {"SyncToken": "0"}, operation="delete")
        assert status == 400 and body["Fault"]["Error"][0]["code"] == "2020"
        status, body = await post("/invoice", {"Id": "999", "SyncToken": "0"}, operation="delete")
        assert status == 400 and body["Fault"]["Error"][0]["code"] == "610"
        status, body = await post("/widget", {"Name": "x"})
        assert status == 400 and body["Fault"]["Error"][0]["Message"] == "Unsupported Operation"
        status, body = await post("/customer", ["not", "an", "object"])
        assert status == 400 and body["Fault"]["Error"][0]["code"] == "2010"
        # An inactive entry takes no edit but being made active again.
        token = stored(sandbox, "2")["SyncToken"]
        status, body = await post(
            "/customer", {"Id": "2", "SyncToken": token, "sparse": "true", "Notes": "x"}
        )
        assert status == 400 and body["Fault"]["Error"][0]["code"] == "610"
        status, body = await post(
            "/customer", {"Id": "2", "SyncToken": token, "sparse": "true", "Active": True}
        )
        assert status == 200 and body["Customer"]["Active"] is True
        assert sandbox.change_log()[-1].event_type.value == "UPDATED"
        # A full update must carry the name; a string "true" is a sparse update.
        token = body["Customer"]["SyncToken"]
        status, body = await post("/customer", {"Id": "2", "SyncToken": token, "Notes": "y"})
        assert status == 400 and body["Fault"]["Error"][0]["Detail"] == "DisplayName"
        status, body = await post("/customer", {"Id": "2", "Notes": "y", "sparse": True})
        assert status == 400 and body["Fault"]["Error"][0]["Detail"] == "SyncToken"
        # Entries with no Delete in Intuit's matrix cannot be deactivated: the webhook would say
        # Update where a poll reads Active=false as a delete.
        term = stored(sandbox, "1", entity="Term")
        status, body = await post(
            "/term", {"Id": "1", "SyncToken": term["SyncToken"], "sparse": True, "Active": False}
        )
        assert status == 400 and body["Fault"]["Error"][0]["code"] == "6000"
        # Voiding twice is a business rule, answered as a Fault.
        invoice = stored(sandbox, "3", entity="Invoice")
        voided = {"Id": "3", "SyncToken": invoice["SyncToken"]}
        assert (await post("/invoice", voided, operation="void"))[0] == 200
        voided["SyncToken"] = stored(sandbox, "3", entity="Invoice")["SyncToken"]
        status, body = await post("/invoice", voided, operation="void")
        assert status == 400 and body["Fault"]["Error"][0]["code"] == "6000"
        # Query and batch keep their own routes, whatever their method.
        status, _ = await api.query("SELECT * FROM Customer")
        assert status == 200
        async with session.post(
            api.base + "/query",
            data="SELECT COUNT(*) FROM Invoice",
            headers={**api.headers, "Content-Type": "application/text"},
        ) as response:
            assert response.status == 200
            assert "totalCount" in (await response.json())["QueryResponse"]
        batch = {"BatchItemRequest": [{"bId": "1", "Query": "SELECT * FROM Term"}]}
        status, body = await post("/batch", batch)
        assert status == 200 and body["BatchItemResponse"][0]["bId"] == "1"
        status, body = await post("/companyinfo", {"SyncToken": "0", "CompanyName": "Renamed"})
        assert status == 200 and body["CompanyInfo"]["CompanyName"] == "Renamed"
        assert body["CompanyInfo"]["SyncToken"] == "1"


def stored(sandbox: Sandbox, object_id: str, *, entity: str = "Customer") -> Any:
    """The sandbox's own copy of an object of the first realm."""
    found = sandbox.state.companies[sandbox.options.realm_ids[0]].get(entity, object_id)
    assert found is not None
    return found


async def test_a_write_is_announced_by_webhook(options: Callable[..., SandboxOptions]) -> None:
    async with Receiver() as receiver, Sandbox(options(webhook_url=receiver.url)) as sandbox:
        async with aiohttp.ClientSession() as session:
            api = await Api.connect(sandbox, session)
            async with session.post(
                api.base + "/vendor",
                data=orjson.dumps({"DisplayName": "A New Vendor"}),
                headers=api.headers,
            ) as response:
                vendor = (await response.json())["Vendor"]
        sandbox.flush_webhooks()
        (delivery,) = await receiver.wait_for(1)
        entities = [
            e
            for n in orjson.loads(delivery.body)["eventNotifications"]
            for e in n["dataChangeEvent"]["entities"]
        ]
        assert [(e["name"], e["id"], e["operation"]) for e in entities] == [
            ("Vendor", vendor["Id"], "Create")
        ]
