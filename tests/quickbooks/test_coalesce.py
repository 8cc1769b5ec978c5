"""The CDC coalescer against the sandbox: one request for reads that fall due together."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest
from qbo_events.errors import QuickBooksError
from qbo_events.sources.coalesce import CdcCoalescer


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def cdc_urls(urls: list[str]) -> list[str]:
    return [url for url in urls if "/cdc?" in url]


@pytest.mark.anyio
async def test_reads_that_fall_due_together_share_one_request_split_by_entity(qbo, wire) -> None:
    q = await qbo()
    since = datetime.now(UTC) - timedelta(minutes=5)
    invoices = {c.object_id for c in q.sandbox.make_changes("Invoice", "Create", 2)}
    customers = {c.object_id for c in q.sandbox.make_changes("Customer", "Create", 3)}
    coalescer = CdcCoalescer(q.client, q.realm, q.tokens)

    parts = await asyncio.gather(
        coalescer.cdc("Invoice", since),
        coalescer.cdc("Customer", since - timedelta(minutes=1)),
        coalescer.cdc("Vendor", since),
    )
    assert [{o["Id"] for o in p.objects} for p in parts] == [invoices, customers, set()]
    [url] = cdc_urls(wire.urls)
    assert "entities=Invoice,Customer,Vendor" in url
    # The shared request reads from the earliest `since` asked.
    earliest = (since - timedelta(minutes=1)).strftime("%Y-%m-%dT%H") + "%3A"
    assert earliest in url
    assert len({p.opened for p in parts}) == 1 and not any(p.capped for p in parts)

    # A read after the batch went out opens a batch of its own.
    alone = await coalescer.cdc("Invoice", since)
    assert {o["Id"] for o in alone.objects} == invoices
    assert len(cdc_urls(wire.urls)) == 2


@pytest.mark.anyio
async def test_a_fault_reaches_every_read_of_the_batch(qbo, wire) -> None:
    q = await qbo()
    since = datetime.now(UTC) - timedelta(minutes=5)
    coalescer = CdcCoalescer(q.client, q.realm, q.tokens)
    await q.tokens.access_token()
    q.sandbox.set_faults(errors=1, error_status=500)
    results = await asyncio.gather(
        coalescer.cdc("Invoice", since), coalescer.cdc("Customer", since), return_exceptions=True
    )
    assert all(isinstance(r, QuickBooksError) for r in results), results
    assert len(cdc_urls(wire.urls)) == 1


@pytest.mark.anyio
async def test_a_cancelled_first_read_leaves_the_others_reading_alone(qbo, wire) -> None:
    q = await qbo()
    since = datetime.now(UTC) - timedelta(minutes=5)
    made = {c.object_id for c in q.sandbox.make_changes("Customer", "Create", 2)}
    coalescer = CdcCoalescer(q.client, q.realm, q.tokens, window=0.5)
    first = asyncio.create_task(coalescer.cdc("Invoice", since))
    await asyncio.sleep(0)
    other = asyncio.create_task(coalescer.cdc("Customer", since))
    await asyncio.sleep(0.05)
    first.cancel()
    part = await asyncio.wait_for(other, 10)
    assert {o["Id"] for o in part.objects} == made
    with pytest.raises(asyncio.CancelledError):
        await first
    [url] = cdc_urls(wire.urls)
    assert "entities=Customer&" in url or url.endswith("entities=Customer")
