"""Fuzz the webhook parser: WebhookPayloadError or well-formed Changes, for any body at all."""

from __future__ import annotations

import re
from typing import Any

import orjson
from fuzzing import JSON, WEBHOOK_DOCUMENTS, cloudevent_bodies, fuzz_settings, legacy_bodies
from hypothesis import example, given
from hypothesis import strategies as st
from qbo_events.events import Change, EventType, Source
from qbo_events.normalize import WebhookPayloadError, parse_webhook

SECOND = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ")
OPERATIONS = {"Create", "Update", "Delete", "Merge", "Void", "Emailed"}


def parsed(body: bytes) -> list[Change] | None:
    """The changes of `body`, or None when the parser refuses it (the only refusal allowed)."""
    try:
        changes = parse_webhook(body)
    except WebhookPayloadError as exc:
        assert str(exc)  # the quarantine keeps the reason; it must say something
        return None
    assert isinstance(changes, list)
    for change in changes:
        assert_well_formed(change)
    # Deterministic: the same body gives the same changes (event ids are built from them).
    assert parse_webhook(body) == changes
    return changes


def assert_well_formed(change: Change) -> None:
    assert isinstance(change, Change)
    for ident in (change.realm_id, change.object_id):
        assert isinstance(ident, str) and ident.strip()
    assert isinstance(change.entity, str) and change.entity
    assert SECOND.fullmatch(change.date), change.date
    assert isinstance(change.event_type, EventType)
    assert change.source is Source.WEBHOOK
    assert isinstance(change.operation, str) and change.operation.strip()
    if change.operation.lower() in {op.lower() for op in OPERATIONS}:
        assert change.operation in OPERATIONS
    else:
        assert change.event_type is EventType.UNKNOWN
    assert change.deleted_id is None or change.deleted_id.strip()
    assert isinstance(change.raw, dict)
    orjson.dumps(change.raw)  # it is delivered as JSON later


@fuzz_settings(600)
@given(st.binary(max_size=400))
@example(b"")
@example(b"\xff\xfe")
@example(b"[" * 5000)
@example(b'{"eventNotifications": [' * 600)
@example(b'"\\ud800"')
@example(b"1" * 400)
def test_any_bytes(body: bytes) -> None:
    parsed(body)


@fuzz_settings(600)
@given(JSON)
def test_any_json_document(document: Any) -> None:
    for wrapped in (
        document,
        [document],
        {"eventNotifications": document},
        {"eventNotifications": [document]},
        {"eventNotifications": [{"realmId": "1", "dataChangeEvent": {"entities": [document]}}]},
    ):
        parsed(orjson.dumps(wrapped))


@fuzz_settings(300)
@given(WEBHOOK_DOCUMENTS)
@example(
    {
        "eventNotifications": [
            {
                "realmId": "1",
                "dataChangeEvent": {
                    "entities": [
                        {"name": "Invoice", "id": "1", "operation": "Create", "lastUpdated": 1e29}
                    ]
                },
            }
        ]
    }
)
def test_near_valid_bodies(document: Any) -> None:
    parsed(orjson.dumps(document))


@fuzz_settings(150)
@given(st.one_of(legacy_bodies(), cloudevent_bodies()))
def test_understood_bodies_keep_their_ids(document: Any) -> None:
    changes = parsed(orjson.dumps(document))
    if not changes:
        return
    if isinstance(document, dict):
        entries = [
            (n["realmId"], e["id"])
            for n in document["eventNotifications"]
            for e in n["dataChangeEvent"]["entities"]
        ]
    else:
        entries = [(e["intuitaccountid"], e["intuitentityid"]) for e in document]
    reported = {(c.realm_id, c.object_id) for c in changes}
    # Every entity is reported, under the ids it came with (numbers as their decimal text).
    assert {(str(realm), str(ident)) for realm, ident in entries} <= reported


@fuzz_settings(60)
@given(legacy_bodies(), st.sampled_from([" ", "\n", "\t\r\n "]))
def test_whitespace_around_the_json_changes_nothing(document: Any, pad: str) -> None:
    body = orjson.dumps(document)
    assert parsed(pad.encode() + body + pad.encode()) == parsed(body)
