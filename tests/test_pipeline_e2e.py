"""End to end: signed webhooks into the daemon subprocess, signed deliveries out to a receiver."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
from collections.abc import Callable

import orjson
from cloudevents.v1.http import from_http
from harness import (
    DaemonProcess,
    Receiver,
    instance_toml,
    intuit_sign,
    legacy_body,
    wait_for,
)

Factory = Callable[..., DaemonProcess]
AT = "2026-11-27T13:04:47.657Z"


def test_legacy_body_delivered_as_signed_open_connectors_events(
    daemon_factory: Factory, receiver: Receiver
) -> None:
    d = daemon_factory(instance_toml("acme", "111", receiver.url)).start()
    body = orjson.dumps(
        {
            "eventNotifications": [
                {
                    "realmId": "111",
                    "dataChangeEvent": {
                        "entities": [
                            {
                                "name": "Invoice",
                                "id": "130",
                                "operation": "Create",
                                "lastUpdated": AT,
                            },
                            {
                                "name": "Customer",
                                "id": "7",
                                "operation": "Merge",
                                "lastUpdated": AT,
                                "deletedId": "9",
                            },
                        ]
                    },
                },
                {
                    "realmId": "999",
                    "dataChangeEvent": {
                        "entities": [
                            {"name": "Bill", "id": "1", "operation": "Delete", "lastUpdated": AT}
                        ]
                    },
                },
            ]
        }
    )
    assert d.post(body) == 200
    wait_for(lambda: receiver.count() == 3, what="3 deliveries")
    assert receiver.bad_signatures == 0
    events = {(e["objectType"], e["objectId"]): e for e in receiver.events()}
    assert events[("invoices", "130")]["eventType"] == "CREATED"
    assert events[("invoices", "130")]["date"] == "2026-11-27T13:04:47Z"
    assert events[("customers", "7")]["eventType"] == "UPDATED"
    assert events[("customers", "7")]["deletedId"] == "9"
    assert events[("customers", "9")]["eventType"] == "DELETED"
    assert events[("customers", "9")]["operation"] == "Merge"
    delivery = receiver.deliveries[0]
    message = delivery["body"]["message"]
    assert message["instanceId"] == "acme" and message["realmId"] == "111"
    assert message["instanceTags"] == ["Docs"] and message["source"] == "webhook"
    assert message["raw"]["realmId"] == "111"
    headers = delivery["headers"]
    assert headers["Elements-Webhook-Id"] == headers["webhook-id"] == message["eventId"]
    assert headers["User-Agent"].startswith("qbo-events/")
    status = d.health("/status")[1]
    assert status["webhooks"]["unknown_realm_entities"] == 1
    # The commits were timed (whether storage counts as slow depends on the machine).
    assert status["outbox"]["commit_ms"] > 0 and status["outbox"]["slow_storage"] in (True, False)
    metrics = d.health("/metrics")[1]
    average = re.search(r"^qbo_events_outbox_commit_seconds (\S+)$", metrics, re.M)
    assert average is not None and float(average.group(1)) > 0
    # Read apart from /status, which it may have changed since (it is a time window).
    assert re.search(r"^qbo_events_outbox_slow_storage [01]\.0$", metrics, re.M)
    assert d.stop() == 0


def test_cloudevents_body_and_cloudevents_delivery_format(
    daemon_factory: Factory, receiver: Receiver
) -> None:
    d = daemon_factory(
        instance_toml("acme", "222", receiver.url), settings='[delivery]\nformat = "cloudevents"'
    ).start()
    body = orjson.dumps(
        [
            {
                "specversion": "1.0",
                "id": "a1",
                "source": "intuit.x",
                "type": "qbo.journalentry.created.v1",
                "datacontenttype": "application/json",
                "time": "2026-11-27T13:04:47.034359333Z",
                "intuitentityid": "55",
                "intuitaccountid": "222",
                "data": {},
            },
            {
                "specversion": "1.0",
                "id": "a2",
                "source": "intuit.x",
                "type": "qbo.invoice.voided.v1",
                "time": AT,
                "intuitentityid": "56",
                "intuitaccountid": "222",
            },
        ]
    )
    assert d.post(body, **{"Content-Type": "application/cloudevents+json"}) == 200
    wait_for(lambda: receiver.count() == 2, what="2 deliveries")
    assert receiver.bad_signatures == 0
    by_subject = {}
    for delivery in receiver.deliveries:
        assert delivery["headers"]["Content-Type"] == "application/cloudevents+json"
        event = from_http(delivery["headers"], delivery["raw"])
        by_subject[event["subject"]] = event
    assert by_subject["55"]["type"] == "com.quickbooks.journal-entries.created"
    assert by_subject["55"]["source"] == "qbo-events/acme"
    assert by_subject["55"].data["events"][0]["entity"] == "JournalEntry"
    assert by_subject["56"]["type"] == "com.quickbooks.invoices.updated"
    assert by_subject["56"].data["events"][0]["operation"] == "Void"


def test_bad_requests_are_refused_and_store_nothing(
    daemon_factory: Factory, receiver: Receiver
) -> None:
    d = daemon_factory(
        instance_toml("acme", "333", receiver.url), settings="[http]\nmax_body_bytes = 4096"
    ).start()
    body = legacy_body("333", ("Invoice", "1", "Create", AT))
    assert d.post(body, signature=intuit_sign(body, "wrong-token")) == 401
    assert d.post(body, signature="") == 401
    big = legacy_body("333", *[("Invoice", str(i), "Create", AT) for i in range(200)])
    assert len(big) > 4096
    assert d.post(big) == 413
    garbage = b'{"eventNotifications": "not a list"}'
    assert d.post(garbage) == 200
    status = d.health("/status")[1]
    assert status["outbox"]["accepted"] == 0
    assert status["outbox"]["quarantined"] == 1
    assert status["webhooks"]["http_401"] == 2
    assert status["webhooks"]["http_413"] == 1
    import urllib.error
    import urllib.request

    try:
        urllib.request.urlopen(d.webhook_url, timeout=5)
        raise AssertionError("GET should be refused")
    except urllib.error.HTTPError as exc:
        with exc:
            assert exc.code == 405
    assert receiver.count() == 0


def test_same_body_twice_is_delivered_once(daemon_factory: Factory, receiver: Receiver) -> None:
    d = daemon_factory(instance_toml("acme", "444", receiver.url)).start()
    body = legacy_body("444", ("Vendor", "40", "Update", AT))
    assert d.post(body) == 200
    assert d.post(body) == 200
    wait_for(lambda: receiver.count() >= 1, what="a delivery")
    d.stop()  # drains; a second delivery, if any, would have happened by now
    assert receiver.count() == 1


def test_receiver_down_then_kill9_then_everything_arrives(
    daemon_factory: Factory,
) -> None:
    receiver = Receiver()  # not started: its port refuses connections
    d = daemon_factory(
        instance_toml("acme", "555", receiver.url),
        settings="[delivery]\nretry_schedule = [1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1]",
    ).start()
    for i in range(300):
        assert d.post(legacy_body("555", ("Invoice", str(i), "Create", AT))) == 200
    d.kill9()
    receiver.start()
    try:
        d.start()
        wait_for(lambda: len(set(receiver.ids())) == 300, timeout=60, what="300 deliveries")
        assert receiver.bad_signatures == 0
        assert {e["objectId"] for e in receiver.events()} == {str(i) for i in range(300)}
    finally:
        receiver.stop()


def test_kill9_right_after_200_loses_nothing(daemon_factory: Factory) -> None:
    receiver = Receiver()
    d = daemon_factory(instance_toml("acme", "666", receiver.url)).start()
    assert d.post(legacy_body("666", ("Payment", "77", "Create", AT))) == 200
    d.kill9()
    receiver.start()
    try:
        d.start()
        wait_for(lambda: receiver.count() == 1, what="the delivery after restart")
        assert receiver.events()[0]["objectId"] == "77"
    finally:
        receiver.stop()


def test_events_of_one_object_keep_their_order_across_a_failed_attempt(
    daemon_factory: Factory, receiver: Receiver
) -> None:
    first: dict[str, str] = {}

    def plan(event_id: str, attempt: int) -> tuple[int, dict[str, str]]:
        first.setdefault("id", event_id)
        return (500, {}) if event_id == first["id"] and attempt == 1 else (200, {})

    receiver.plan = plan
    d = daemon_factory(instance_toml("acme", "777", receiver.url)).start()
    body = legacy_body(
        "777",
        ("Invoice", "5", "Create", "2026-11-27T13:00:00Z"),
        ("Invoice", "5", "Update", "2026-11-27T13:00:01Z"),
        ("Invoice", "5", "Delete", "2026-11-27T13:00:02Z"),
    )
    assert d.post(body) == 200
    wait_for(lambda: receiver.count() == 3, what="3 deliveries")
    assert [e["eventType"] for e in receiver.events()] == ["CREATED", "UPDATED", "DELETED"]
    assert receiver.attempts[first["id"]] == 2


def test_410_dead_letters_and_retry_requeues(daemon_factory: Factory, receiver: Receiver) -> None:
    gone = {"on": True}
    receiver.plan = lambda _id, _n: (410, {}) if gone["on"] else (200, {})
    d = daemon_factory(instance_toml("acme", "888", receiver.url)).start()
    assert d.post(legacy_body("888", ("Bill", "3", "Create", AT))) == 200
    wait_for(lambda: d.health("/status")[1]["outbox"]["dead"] == 1, what="a dead letter")
    assert sum(receiver.attempts.values()) == 1
    cli = [sys.executable, "-m", "qbo_events", "deliveries"]
    listed = subprocess.run(
        [*cli, "list", "--dead", "--config", str(d.config_path)], capture_output=True, text=True
    )
    assert listed.returncode == 0 and "bills/3" in listed.stdout and "HTTP 410" in listed.stdout
    gone["on"] = False
    again = subprocess.run(
        [*cli, "retry", "--config", str(d.config_path)], capture_output=True, text=True
    )
    assert again.returncode == 0 and "re-queued 1" in again.stdout
    wait_for(lambda: receiver.count() == 1, timeout=30, what="the re-queued delivery")


def test_retry_after_is_honoured(daemon_factory: Factory, receiver: Receiver) -> None:
    import time

    attempted: list[float] = []

    def plan(_id: str, n: int) -> tuple[int, dict[str, str]]:
        attempted.append(time.monotonic())
        return (503, {"Retry-After": "2"}) if n == 1 else (200, {})

    receiver.plan = plan
    d = daemon_factory(instance_toml("acme", "121", receiver.url)).start()
    assert d.post(legacy_body("121", ("Bill", "4", "Create", AT))) == 200
    wait_for(lambda: receiver.count() == 1, what="the delivery")
    assert len(attempted) == 2
    # The schedule says 0.2 s (+-20 %); Retry-After says 2 s, and wins.
    assert attempted[1] - attempted[0] >= 1.9
    status = d.health("/status")[1]
    assert status["deliveries"]["failed_attempts"] == 1
    metrics = d.health("/metrics")[1]
    assert 'qbo_events_deliveries_total{outcome="retry"} 1.0' in metrics


def test_max_pending_answers_503(daemon_factory: Factory) -> None:
    receiver = Receiver()  # down: nothing leaves the outbox
    d = daemon_factory(
        instance_toml("acme", "131", receiver.url),
        settings="[outbox]\nmax_pending = 5\n[delivery]\nretry_schedule = [60]",
    ).start()
    codes = [d.post(legacy_body("131", ("Item", str(i), "Create", AT))) for i in range(8)]
    assert codes[:5] == [200] * 5
    assert set(codes[5:]) == {503}
    outbox = d.health("/status")[1]["outbox"]
    assert outbox["undelivered"] == 5
    assert outbox["pending"] + outbox["retrying"] == 5


def test_sigterm_stops_intake_and_exits_zero(daemon_factory: Factory, receiver: Receiver) -> None:
    d = daemon_factory(instance_toml("acme", "141", receiver.url)).start()
    d.signal(signal.SIGTERM)
    assert d.proc is not None
    assert d.proc.wait(20) == 0
    assert '"stopped"' in d.stderr()


def test_a_hanging_endpoint_does_not_hold_up_another(
    daemon_factory: Factory, receiver: Receiver
) -> None:
    import socket
    import time

    # Accepts connections (the kernel's backlog) and never answers: every attempt hangs.
    with socket.socket() as hole:
        hole.bind(("127.0.0.1", 0))
        hole.listen(64)
        dead_url = f"http://127.0.0.1:{hole.getsockname()[1]}/hook"
        d = daemon_factory(
            instance_toml("dead", "901", dead_url) + instance_toml("live", "902", receiver.url),
            settings="[delivery]\ntimeout = 10\nmax_in_flight_per_endpoint = 4\nworkers = 8",
        ).start()
        for i in range(20):
            assert d.post(legacy_body("901", ("Invoice", str(i), "Create", AT))) == 200
        posted = time.monotonic()
        for i in range(20):
            assert d.post(legacy_body("902", ("Invoice", str(i), "Create", AT))) == 200
        wait_for(lambda: receiver.count() == 20, timeout=8, what="the live endpoint's events")
        # Well before the hanging attempts time out (10 s): they held no sender the live
        # endpoint needed.
        assert time.monotonic() - posted < 9
        assert d.health("/status")[1]["deliveries"]["endpoints_busy"] == {
            f"http://127.0.0.1:{hole.getsockname()[1]}": 4
        }


def test_an_empty_verifier_token_refuses_every_webhook(daemon_factory: Factory) -> None:
    # Polling-only deployments may leave the token empty; an HMAC with an empty key is one
    # anybody can make, so such a daemon must take no webhook at all.
    receiver = Receiver()
    d = daemon_factory(
        instance_toml("acme", "951", receiver.url, vendor="polling")
        + 'refresh_token = "unused-token-0123456789"\n',
        settings='[quickbooks]\nwebhook_verifier_token = ""\nclient_id = "id"\n'
        'client_secret = "secret-0123456789"\napi_base_url = "http://127.0.0.1:9"\n'
        'token_url = "http://127.0.0.1:9/token"',
    ).start()
    body = b"not json at all"
    assert d.post(body, signature=intuit_sign(body, "")) == 401
    assert d.health("/status")[1]["outbox"]["quarantined"] == 0


def _raw_request(port: int, head: bytes, body: bytes, *, wait_for_continue: bool) -> list[bytes]:
    """Send `head`; if asked, read the interim answer before the body. Returns each status line."""
    import socket

    lines = []
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(head)
        received = b""
        if wait_for_continue:
            while b"\r\n\r\n" not in received:
                chunk = sock.recv(4096)
                assert chunk, f"connection closed before an interim answer: {received!r}"
                received += chunk
            interim, _, received = received.partition(b"\r\n\r\n")
            lines.append(interim.split(b"\r\n")[0])
            if not interim.startswith(b"HTTP/1.1 100"):
                return lines
        sock.sendall(body)
        while b"\r\n\r\n" not in received:
            chunk = sock.recv(4096)
            assert chunk, f"connection closed before an answer: {received!r}"
            received += chunk
        lines.append(received.split(b"\r\n")[0])
    return lines


def test_expect_100_continue_is_answered_after_the_length_check(
    daemon_factory: Factory, receiver: Receiver
) -> None:
    d = daemon_factory(
        instance_toml("acme", "777", receiver.url), settings="[http]\nmax_body_bytes = 4096"
    ).start()
    body = legacy_body("777", ("Invoice", "70", "Create", AT))

    def head(length: int) -> bytes:
        return (
            b"POST /webhooks/quickbooks HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            b"Content-Type: application/json\r\nExpect: 100-continue\r\n"
            + f"intuit-signature: {intuit_sign(body)}\r\nContent-Length: {length}\r\n\r\n".encode()
        )

    lines = _raw_request(d.webhook_port, head(len(body)), body, wait_for_continue=True)
    assert lines == [b"HTTP/1.1 100 Continue", b"HTTP/1.1 200 OK"]
    wait_for(lambda: receiver.count() == 1, what="the delivery")
    # Declared too large: refused at once, without asking for (or reading) the body.
    lines = _raw_request(d.webhook_port, head(10_000), b"", wait_for_continue=True)
    assert lines == [b"HTTP/1.1 413 Request Entity Too Large"]
