"""Coverage-guided (atheris) fuzzing of the webhook parser: any body gives well-formed Changes or
WebhookPayloadError; anything else is a crash.

    .venv/bin/python fuzz/webhook_parser.py <new-corpus-dir> fuzz/corpus/webhook -max_total_time=60
"""

from __future__ import annotations

import re
import sys

import atheris

with atheris.instrument_imports():
    from qbo_events.events import Change, EventType, Source
    from qbo_events.normalize import WebhookPayloadError, parse_webhook

SECOND = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ")


def check(change: Change) -> None:
    """What every Change the parser returns must be; an AssertionError is reported as a crash."""
    assert change.realm_id.strip() and change.object_id.strip(), change
    assert change.entity, change
    assert SECOND.fullmatch(change.date), change.date
    assert isinstance(change.event_type, EventType), change.event_type
    assert change.source is Source.WEBHOOK, change.source
    assert change.deleted_id is None or change.deleted_id.strip(), change


def TestOneInput(data: bytes) -> None:  # the name atheris looks for
    try:
        changes = parse_webhook(data)
    except WebhookPayloadError:
        return
    for change in changes:
        check(change)
    assert parse_webhook(data) == changes, "not deterministic"


def main() -> None:
    atheris.Setup(sys.argv, TestOneInput)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
