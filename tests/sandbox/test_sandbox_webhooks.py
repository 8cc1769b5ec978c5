"""The webhook emitter: Intuit's signature, both body formats, and retries that hold the queue."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import orjson
import pytest
from cloudevents.core.formats.json import JSONFormat
from qbo_events.sandbox import Sandbox, SandboxOptions, sign
from qbo_events.sandbox.clock import parse_timestamp
from qbo_events.sandbox.webhooks import retry_delay
from sandbox_helpers import Receiver, eventually

# Intuit's .NET SDK test vector (WebhooksServiceTest): token, exact payload, expected header.
VECTOR_TOKEN = "00faeec4-08d0-4996-bb37-698ae19f0149"
VECTOR_BODY = (
    b'{"eventNotifications":[{"realmId":"1269959970","dataChangeEvent":{"entities":['
    b'{"name":"Vendor","id":"40","operation":"Update","lastUpdated":"2016-10-05T03:09:04.000Z"},'
    b'{"name":"Customer","id":"43","operation":"Create","lastUpdated":"2016-10-05T03:07:04.000Z"}'
    b"]}}]}"
)
VECTOR_SIGNATURE = "6q+xGyMirJupwKTh2/WBl2NcdxzxqdIbk3sneKTxLWM="


def test_signature_matches_intuits_test_vector() -> None:
    assert sign(VECTOR_BODY, VECTOR_TOKEN) == VECTOR_SIGNATURE


def test_retry_schedule_is_intuits_and_scales() -> None:
    assert [retry_delay(i) for i in range(10)] == [
        10, 20, 30, 300, 1200, 7200, 14400, 21600, 21600, 21600,
    ]  # fmt: skip
    assert retry_delay(0, 0.01) == pytest.approx(0.1)


def _verified(sandbox: Sandbox, headers: dict[str, str], body: bytes) -> Any:
    """Check the signature the way python-quickbooks does, then decode."""
    from quickbooks import QuickBooks

    client = QuickBooks(minorversion=75, verifier_token=sandbox.options.verifier_token)
    assert client.validate_webhook_signature(body.decode(), headers["intuit-signature"])
    return orjson.loads(body)


pytestmark_anyio = pytest.mark.anyio


@pytestmark_anyio
async def test_legacy_notifications_match_the_change_log(
    options: Callable[..., SandboxOptions],
) -> None:
    async with Receiver() as receiver, Sandbox(options(webhook_url=receiver.url)) as sandbox:
        made = sandbox.make_changes("Customer", "Create")
        made += sandbox.make_changes("Invoice", "Delete", object_id="2")
        made += sandbox.make_changes("Customer", "Merge", object_id="1")
        made += sandbox.make_changes("TaxCode", "Update")
        made += sandbox.make_changes("CompanyCurrency", "Update")
        sandbox.flush_webhooks()
        (delivery,) = await receiver.wait_for(1)
        body = _verified(sandbox, delivery.headers, delivery.body)
        assert delivery.headers["Content-Type"] == "application/json"
        (notification,) = body["eventNotifications"]
        assert notification["realmId"] == sandbox.options.realm_ids[0]
        entities = notification["dataChangeEvent"]["entities"]
        # One entity a change, save the merged-away record that rides on the Merge entry.
        expected = [r for r in made if r.webhook and not (r.operation == "Merge" and
                    r.event_type == "DELETED")]  # fmt: skip
        assert [(e["name"], e["id"], e["operation"]) for e in entities] == [
            ("Customer", made[0].object_id, "Create"),
            ("Invoice", "2", "Delete"),
            ("Customer", "1", "Merge"),
            ("Currency", made[-1].object_id, "Update"),
        ]
        assert entities[2]["deletedId"] == made[2].deleted_id == made[3].object_id
        for entity, record in zip(entities, expected, strict=True):
            assert parse_timestamp(entity["lastUpdated"]) == parse_timestamp(record.last_updated)
            assert entity["lastUpdated"].endswith(".000Z")
        await eventually(lambda: sandbox.stats()["webhooks"]["acks"] == 1)
        assert sandbox.stats()["webhooks"]["pending"] == 0


@pytestmark_anyio
async def test_cloudevents_are_valid_and_typed(options: Callable[..., SandboxOptions]) -> None:
    async with Receiver() as receiver:
        settings = options(webhook_url=receiver.url, webhook_format="cloudevents")
        async with Sandbox(settings) as sandbox:
            made = sandbox.make_changes("Invoice", "Void", object_id="1")
            made += sandbox.make_changes("Vendor", "Merge", object_id="2")
            made += sandbox.make_changes("CompanyCurrency", "Create")
            sandbox.flush_webhooks()
            (delivery,) = await receiver.wait_for(1)
            events = _verified(sandbox, delivery.headers, delivery.body)
            assert isinstance(events, list) and len(events) == 3
            parsed = [JSONFormat().read(None, orjson.dumps(e)) for e in events]
            assert [e.get_type() for e in parsed] == [
                "qbo.invoice.voided.v1",
                "qbo.vendor.merged.v1",
                "qbo.currency.created.v1",
            ]
            assert events[1]["data"] == {"deletedid": made[2].object_id}
            assert events[0]["data"] == {} and events[0]["intuitentityid"] == "1"
            assert {e["intuitaccountid"] for e in events} == {sandbox.options.realm_ids[0]}
            assert len({e["id"] for e in events}) == 3
            assert events[0]["source"].startswith("intuit.")
            assert parse_timestamp(events[2]["time"]) == parse_timestamp(made[3].last_updated)


@pytestmark_anyio
async def test_failed_batches_are_retried_unchanged_and_hold_later_events(
    options: Callable[..., SandboxOptions],
) -> None:
    async with Receiver(statuses=[500, 404], delays=[0, 0, 0.5]) as receiver:
        settings = options(webhook_url=receiver.url, webhook_timeout=0.3)
        async with Sandbox(settings) as sandbox:
            first = sandbox.make_changes("Bill", "Update", object_id="1")[0]
            await receiver.wait_for(1)
            later = sandbox.make_changes("Bill", "Update", object_id="1")[0]
            deliveries = await receiver.wait_for(5)
            # Three tries of the first batch (500, 404, too slow), its ack, then the next one.
            assert len({d.body for d in deliveries[:4]}) == 1
            assert len({d.headers["intuit-signature"] for d in deliveries[:4]}) == 1
            ids = [
                e["id"]
                for d in deliveries
                for n in orjson.loads(d.body)["eventNotifications"]
                for e in n["dataChangeEvent"]["entities"]
            ]
            assert ids == ["1"] * 5
            last = orjson.loads(deliveries[4].body)["eventNotifications"][0]
            stamp = last["dataChangeEvent"]["entities"][0]["lastUpdated"]
            assert parse_timestamp(stamp) == parse_timestamp(later.last_updated)
            assert parse_timestamp(later.last_updated) > parse_timestamp(first.last_updated)
            await eventually(lambda: sandbox.stats()["webhooks"]["events_acked"] == 2)
            stats = sandbox.stats()["webhooks"]
            assert (stats["posts"], stats["acks"], stats["failures"]) == (5, 2, 3)
