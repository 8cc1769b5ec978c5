"""The `status` tables: long names and long errors keep every column in place."""

from __future__ import annotations

from typing import Any

from qbo_events.status_table import render

LONG_NAME = "acme-holdings-international-subsidiary-" + "x" * 25  # 64, the longest allowed
LONG_ERROR = (
    "QuickBooks fault: AuthorizationFault 003100: message=AuthorizationFailed; errorCode=003100; "
    "statusCode=403; the company may have disconnected the app or the token was issued for "
    "another realm altogether, which needs a person to authorize it again"
)


def loop(error: str | None = None) -> dict[str, Any]:
    return {
        "state": "backoff" if error else "waiting",
        "last_success_at": "2026-11-27T13:04:47Z",
        "cursor": "2026-11-27T13:04:47Z",
        "events": 12,
        "last_error": error,
    }


def status() -> dict[str, Any]:
    return {
        "version": "1.0",
        "uptime": 5,
        "ready": True,
        "config": "/etc/qbo-events/config.toml",
        "instances": {
            "acme": {"resources": {"invoices": loop(), "customers": loop()}},
            LONG_NAME: {"resources": {"purchase-orders": loop(LONG_ERROR), "bills": loop()}},
            "globex": {"vendor_type": "webhook", "resources": {}},
        },
    }


def table(text: str) -> list[str]:
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("INSTANCE"))
    end = lines.index("", start)
    return lines[start:end]


def columns(header: str) -> dict[str, int]:
    return {
        name: header.index(name)
        for name in ("RESOURCE", "STATE", "LAST SUCCESS", "EVENTS", "ERROR")
    }


def test_long_names_and_errors_keep_the_columns_aligned() -> None:
    rows = table(render(status()))
    at = columns(rows[0])
    for row in rows[1:]:
        if row.startswith(" "):
            # A wrapped error continues under its column and nowhere else.
            assert row[: at["ERROR"]].strip() == "", row
            continue
        # Every value starts where its heading does, whatever the name before it.
        for heading in ("RESOURCE", "STATE", "LAST SUCCESS"):
            if at[heading] >= len(row):
                continue  # a row with no loops ends after its state
            assert row[at[heading] - 1] == " " and row[at[heading]] != " ", (heading, row)
    width = max(len(row) for row in rows)
    assert width <= 160, f"rows run to {width} characters"


def test_a_long_name_is_shortened_visibly_and_a_long_error_is_shown_whole() -> None:
    rows = table(render(status()))
    named = [row for row in rows if row.startswith("acme-holdings")]
    assert len(named) == 2
    assert all("…" in row.split()[0] for row in named)
    start = next(i for i, row in enumerate(rows) if "purchase-orders" in row)
    shown = [rows[start][columns(rows[0])["ERROR"] :]]
    shown += [row.strip() for row in rows[start + 1 :] if row.startswith(" ")]
    error_text = " ".join(part.strip() for part in shown)
    assert LONG_ERROR in error_text


def test_short_values_keep_the_familiar_layout() -> None:
    rows = table(render(status()))
    assert any(row.split()[:3] == ["acme", "invoices", "waiting"] for row in rows)
    assert any(row.split()[:3] == ["globex", "-", "webhook"] for row in rows)


def test_why_the_daemon_is_not_ready_degraded_or_unwatched_is_shown() -> None:
    text = render(
        {
            **status(),
            "ready": False,
            "reasons": ["outbox cannot write: database or disk is full"],
            "degraded": ["instance acme: needs re-authorization"],
            "watchdog": {"interval": 15.0, "withheld": ["senders: no dispatch for 75 s"]},
        }
    )
    head = text.splitlines()[:4]
    assert "NOT READY" in head[0]
    assert head[1:4] == [
        "not ready: outbox cannot write: database or disk is full",
        "degraded: instance acme: needs re-authorization",
        "watchdog withheld: senders: no dispatch for 75 s",
    ]
