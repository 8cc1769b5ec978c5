"""The admin API against the daemon as a subprocess: its document matches the code, reads answer,
actions need the token, and schemathesis finds no 5xx and no answer outside the document."""

from __future__ import annotations

import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
import schemathesis
from harness import DaemonProcess, Receiver, instance_toml, legacy_body, wait_for
from hypothesis import HealthCheck, settings
from qbo_events.admin.schema import DOCUMENT, render
from schemathesis.specs.openapi.checks import positive_data_acceptance

TOKEN = "admin-token-0123456789abcdef"
REALM = "111"
schema = schemathesis.openapi.from_path(str(DOCUMENT))


def call(
    d: DaemonProcess, method: str, path: str, body: Any = None, token: str | None = None
) -> tuple[int, Any]:
    headers = {"Content-Type": "application/json"}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    request = urllib.request.Request(
        f"http://127.0.0.1:{d.health_port}{path}",
        data=None if body is None else orjson.dumps(body),
        method=method,
        headers=headers,
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, orjson.loads(response.read())
    except urllib.error.HTTPError as exc:
        with exc:
            return exc.code, orjson.loads(exc.read())


def start(tmp: Path, receiver: Receiver, token: str | None) -> DaemonProcess:
    # QuickBooks is a closed local port: a resync the API starts must not reach the internet.
    settings_text = (
        '[quickbooks]\napi_base_url = "http://127.0.0.1:9"\n'
        'token_url = "http://127.0.0.1:9/token"\n'
    )
    if token is not None:
        (tmp / "admin_token").write_text(token)
        settings_text += '[http]\nadmin_token_file = "admin_token"\n'
    d = DaemonProcess(tmp, instance_toml("acme", REALM, receiver.url), settings=settings_text)
    return d.start()


def test_the_kept_document_is_the_one_the_code_builds() -> None:
    assert DOCUMENT.read_bytes() == render(), (
        "rebuild: python -m qbo_events.admin.schema > daemon/qbo_events/admin/openapi.json"
    )


def test_reads_answer_and_actions_need_the_token(tmp_path: Path, receiver: Receiver) -> None:
    d = start(tmp_path, receiver, TOKEN)
    try:
        at = "2026-11-27T13:04:47Z"
        assert d.post(legacy_body(REALM, ("Invoice", "130", "Create", at))) == 200
        wait_for(lambda: receiver.count() == 1, what="a delivery")
        status, served = call(d, "GET", "/api/v1/openapi.json")
        assert status == 200 and served["openapi"] == "3.1.0"
        status, instances = call(d, "GET", "/api/v1/instances")
        assert status == 200 and "acme" in instances["instances"]

        def listed() -> list[Any]:
            return call(d, "GET", "/api/v1/deliveries?state=delivered&instance=acme")[1][
                "deliveries"
            ]

        (item,) = wait_for(listed, what="the delivery in the history")
        assert item["object_type"] == "invoices" and item["object_id"] == "130"
        status, shown = call(d, "GET", f"/api/v1/deliveries/{item['event_id']}")
        assert status == 200 and shown["copies"][0]["attempts"][0]["status"] == 200
        assert call(d, "GET", "/api/v1/deliveries/evt_none")[0] == 404
        assert call(d, "GET", "/api/v1/deliveries?since=yesterday")[0] == 400

        replay = {"instance": "acme", "since": "1h"}
        assert call(d, "POST", "/api/v1/replays", replay)[0] == 401
        assert call(d, "POST", "/api/v1/replays", replay, token="wrong")[0] == 401
        dry = call(d, "POST", "/api/v1/replays", {**replay, "dry_run": True}, TOKEN)
        assert dry == (200, {"queued": 1, "dry_run": True})
        assert call(d, "POST", "/api/v1/replays", replay, TOKEN) == (
            200,
            {"queued": 1, "dry_run": False},
        )
        wait_for(lambda: receiver.count() == 2, what="the replayed delivery")
        assert receiver.ids()[0] == receiver.ids()[1]
        unknown = {"instance": "nobody", "since": "1h"}
        assert call(d, "POST", "/api/v1/replays", unknown, TOKEN)[0] == 404
        assert call(d, "POST", "/api/v1/retries", {}, TOKEN) == (200, {"requeued": 0})

        # A signed body no parser understands: quarantined, shown, retried (still bad: it stays).
        assert d.post(b'{"eventNotifications": "not a list"}') == 200
        status, kept = call(d, "GET", "/api/v1/quarantine")
        assert status == 200 and kept["total"] == 1
        quarantined = kept["quarantined"][0]["id"]
        status, shown = call(d, "GET", f"/api/v1/quarantine/{quarantined}")
        assert status == 200 and "not a list" in shown["body"]
        assert call(d, "POST", "/api/v1/quarantine-retries", {})[0] == 401
        status, retried = call(d, "POST", "/api/v1/quarantine-retries", {}, TOKEN)
        assert status == 200 and retried["tried"] == 1 and retried["parsed"] == []
        assert call(d, "GET", "/api/v1/quarantine")[1]["total"] == 1
        assert call(d, "POST", "/api/v1/quarantine-retries", {"id": 999}, TOKEN)[0] == 404

        # One instance's actions: a link needs a public base URL; resume; a resync's life.
        base = "/api/v1/instances/acme"
        status, refused = call(d, "POST", f"{base}/connect-links", {}, TOKEN)
        assert status == 400 and "public_base_url" in refused["error"]
        assert call(d, "POST", "/api/v1/instances/nobody/resume", None, TOKEN)[0] == 404
        assert call(d, "POST", f"{base}/resume", None, TOKEN) == (200, {"resumed": False})
        both = {"since": "1h", "full": True}
        assert call(d, "POST", f"{base}/resyncs", both, TOKEN)[0] == 400
        assert call(d, "GET", f"{base}/resync")[0] == 404
        status, started = call(d, "POST", f"{base}/resyncs", {"full": True}, TOKEN)
        assert status == 200 and started["resync"]["id"].startswith("rs_")
        assert call(d, "POST", f"{base}/resyncs", {"full": True}, TOKEN)[0] == 409
        assert call(d, "GET", f"{base}/resync")[1]["resync"]["id"] == started["resync"]["id"]
        status, cancelled = call(d, "POST", f"{base}/resync-cancel", None, TOKEN)
        assert status == 200 and cancelled["resync"]["state"] in ("cancelling", "cancelled")
    finally:
        assert d.stop() == 0
        d.close()


def test_without_a_configured_token_every_action_is_refused(
    tmp_path: Path, receiver: Receiver
) -> None:
    d = start(tmp_path, receiver, None)
    try:
        status, body = call(d, "POST", "/api/v1/retries", {}, token="anything")
        assert status == 403 and "admin_token" in body["error"]
        assert call(d, "GET", "/api/v1/deliveries")[0] == 200
    finally:
        assert d.stop() == 0
        d.close()


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DaemonProcess]:
    receiver = Receiver().start()
    d = start(tmp_path_factory.mktemp("admin"), receiver, TOKEN)
    at = "2026-11-27T13:04:47Z"
    assert d.post(legacy_body(REALM, ("Invoice", "130", "Create", at))) == 200
    wait_for(lambda: receiver.count() == 1, what="a delivery")
    yield d
    d.close()
    receiver.stop()


@schema.parametrize()
@settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck))
def test_the_api_keeps_to_its_document(case: Any, live: DaemonProcess) -> None:
    case.call_and_validate(
        base_url=f"http://127.0.0.1:{live.health_port}",
        headers={"Authorization": f"Bearer {TOKEN}"},
        # A schema-valid time such as "°E" is still no time: a 400 that says so is right.
        # Every other check stays: no 5xx, documented status codes and bodies, content types.
        excluded_checks=[positive_data_acceptance],
    )
