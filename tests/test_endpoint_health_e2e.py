"""Endpoint health end to end: a failing callback is paused after pause_after, only probes reach it
while events keep accumulating, the pause survives a restart, a 2xx probe or `deliveries resume`
resumes it, and the alert receiver gets each notice once, signed."""

from __future__ import annotations

import base64
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from typing import Any

import orjson
import pytest
from harness import DaemonProcess, Receiver, instance_toml, legacy_body, wait_for
from standardwebhooks.webhooks import Webhook

Factory = Callable[..., DaemonProcess]
REALM = "222"
ALERT_KEY = "alert-signing-key-0123456789"
# Long enough that without the pause every event would be dead-lettered within seconds.
SCHEDULE = "[" + ", ".join(["0.3"] * 30) + "]"


@pytest.fixture
def alert_receiver() -> Iterator[Receiver]:
    receiver = Receiver(key=ALERT_KEY).start()
    yield receiver
    receiver.stop()


def settings(alerts: Receiver, probe_interval: float) -> str:
    return (
        "[delivery]\n"
        f"retry_schedule = {SCHEDULE}\n"
        "pause_after = 2\n"
        f"probe_interval = {probe_interval}\n"
        f'alert_url = "{alerts.url}"\n'
        f'alert_key = "{ALERT_KEY}"\n'
    )


def cli(d: DaemonProcess, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "qbo_events", *args, "--config", str(d.config_path)],
        capture_output=True,
        text=True,
        timeout=60,
    )


def post(d: DaemonProcess, ids: range) -> None:
    entities = [("Invoice", str(i), "Update", "2026-11-27T13:00:00Z") for i in ids]
    assert d.post(legacy_body(REALM, *entities)) == 200


def endpoint(d: DaemonProcess) -> dict[str, Any]:
    status, body = d.health("/status")
    assert status in (200, 503)
    return dict(body["instances"]["acme"]["endpoint"])


def tries(receiver: Receiver) -> int:
    """Every request that reached the receiver, answered 2xx or not."""
    return sum(receiver.attempts.values())


def undelivered(d: DaemonProcess) -> tuple[int, int]:
    """(undelivered, dead) as /status counts them."""
    outbox = d.health("/status")[1]["outbox"]
    return outbox["pending"] + outbox["retrying"], outbox["dead"]


def alert_types(alerts: Receiver) -> list[str]:
    with alerts._lock:
        return [d["body"]["type"] for d in alerts.deliveries]


def test_pause_probes_only_survives_restart_and_recovers_with_alerts(
    daemon_factory: Factory, receiver: Receiver, alert_receiver: Receiver
) -> None:
    failing = True
    receiver.plan = lambda _id, _n: (500, {}) if failing else (200, {})
    d = daemon_factory(
        instance_toml("acme", REALM, receiver.url), settings=settings(alert_receiver, 1)
    ).start()
    post(d, range(100, 103))
    wait_for(lambda: endpoint(d)["state"] == "failing", what="the endpoint failing")
    wait_for(lambda: endpoint(d)["state"] == "paused", timeout=30, what="the endpoint paused")
    shown = endpoint(d)
    assert shown["consecutive_failures"] >= 2 and shown["failing_since"]
    assert shown["paused_until_probe"] and shown["last_success_at"] is None
    assert 'qbo_events_endpoint_state{instance="acme"} 2.0' in d.health("/metrics")[1]

    # Paused: intake goes on, and only about one probe a second reaches the receiver.
    post(d, range(200, 203))
    began, before = time.monotonic(), tries(receiver)
    wait_for(lambda: tries(receiver) >= before + 3, what="three probes")
    probes, elapsed = tries(receiver) - before, time.monotonic() - began
    # One per probe_interval, plus one on the wire when the pause came.
    assert probes <= elapsed / 1.0 + 2, (probes, elapsed)
    assert undelivered(d) == (6, 0)  # kept, and none dead-lettered

    # The pause survives a restart: still paused, still only probes.
    assert d.stop() == 0
    d.start()
    assert endpoint(d)["state"] == "paused"
    began, before = time.monotonic(), tries(receiver)
    wait_for(lambda: tries(receiver) >= before + 2, what="probes after the restart")
    probes, elapsed = tries(receiver) - before, time.monotonic() - began
    assert probes <= elapsed / 1.0 + 2, (probes, elapsed)
    assert undelivered(d) == (6, 0)

    # The receiver recovers: the next probe resumes the endpoint and everything goes.
    failing = False
    wait_for(lambda: receiver.count() == 6, timeout=30, what="all six delivered")
    assert endpoint(d)["state"] == "healthy" and endpoint(d)["last_success_at"]
    assert receiver.bad_signatures == 0
    assert undelivered(d) == (0, 0)

    wait_for(lambda: len(alert_types(alert_receiver)) >= 3, what="three alerts")
    assert alert_types(alert_receiver) == [
        "endpoint.failing",
        "endpoint.paused",
        "endpoint.recovered",
    ]
    assert alert_receiver.bad_signatures == 0
    secret = "whsec_" + base64.b64encode(ALERT_KEY.encode()).decode()
    for alert in alert_receiver.deliveries:
        Webhook(secret).verify(alert["raw"], alert["headers"])  # raises when it does not verify
        body = orjson.loads(alert["raw"])
        assert body["instance"] == "acme" and body["endpoint"] == receiver.url
        assert body["since"] and body["at"] and body["consecutive_failures"] >= 1
    metrics = d.health("/metrics")[1]
    host = f'endpoint="127.0.0.1:{receiver.port}"'
    assert f'qbo_events_delivery_attempts_total{{{host},outcome="5xx"}}' in metrics
    assert f'qbo_events_delivery_attempts_total{{{host},outcome="2xx"}} 6.0' in metrics
    assert f"qbo_events_delivery_attempt_seconds_count{{{host}}}" in metrics
    assert 'qbo_events_endpoint_state{instance="acme"} 0.0' in metrics
    assert "acme: healthy; last success" in cli(d, "status").stdout
    assert d.stop() == 0


def test_deliveries_resume_resumes_by_hand(
    daemon_factory: Factory, receiver: Receiver, alert_receiver: Receiver
) -> None:
    failing = True
    receiver.plan = lambda _id, _n: (500, {}) if failing else (200, {})
    # No probe for an hour: only the hand resume can bring the endpoint back.
    d = daemon_factory(
        instance_toml("acme", REALM, receiver.url), settings=settings(alert_receiver, 3600)
    ).start()
    post(d, range(100, 104))
    wait_for(lambda: endpoint(d)["state"] == "paused", timeout=30, what="the endpoint paused")
    assert "acme: paused since" in cli(d, "status").stdout
    failing = False
    done = cli(d, "deliveries", "resume", "--instance", "acme")
    assert done.returncode == 0, done.stderr
    assert "resumed acme" in done.stdout
    wait_for(lambda: receiver.count() == 4, timeout=15, what="the backlog delivered")
    assert endpoint(d)["state"] == "healthy"
    again = cli(d, "deliveries", "resume", "--instance", "acme")
    assert again.returncode == 1 and "not paused" in again.stderr
    unknown = cli(d, "deliveries", "resume", "--instance", "nobody")
    assert unknown.returncode == 2
    assert d.stop() == 0


def test_a_reload_shortens_the_probe_interval_of_a_paused_endpoint(
    daemon_factory: Factory, receiver: Receiver, alert_receiver: Receiver
) -> None:
    failing = True
    receiver.plan = lambda _id, _n: (500, {}) if failing else (200, {})
    instances = instance_toml("acme", REALM, receiver.url)
    d = daemon_factory(instances, settings=settings(alert_receiver, 3600)).start()
    post(d, range(100, 102))
    wait_for(lambda: endpoint(d)["state"] == "paused", timeout=30, what="the endpoint paused")
    failing = False
    d.write_config(instances, settings=settings(alert_receiver, 1))
    d.signal(signal.SIGHUP)
    wait_for(lambda: receiver.count() == 2, timeout=15, what="delivery after the reload")
    assert d.health("/status")[1]["last_reload"]["ok"] is True
    assert endpoint(d)["state"] == "healthy"
    assert d.stop() == 0
