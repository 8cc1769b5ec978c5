"""Connecting companies end to end: connect links through the sandbox's consent page to the
daemon's redirect handler, the refusals, lost and restored grants, `--local` and `disconnect`."""

from __future__ import annotations

import asyncio
import os
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
from harness import SIGNATURE_KEY, DaemonProcess, Receiver, SandboxProcess, wait_for

REALM = "9341453908128517"
OTHER_REALM = "4620816365171386431"


def instance(
    name: str, url: str, *, realm: str = "", refresh_token: str = "", extra: str = ""
) -> str:
    """A polling instance of invoices; without realm_id and refresh_token unless given."""
    lines = [
        "[[instances]]",
        f'name = "{name}"',
        'event.vendor.type = "polling"',
        f'event.notification.callback.url = "{url}"',
        f'event.notification.signature.key = "{SIGNATURE_KEY}"',
        "event.poller.refresh_interval = 0.02",
        'event.poller.urls = ["invoices"]',
        "event.poller.overlap = 5",
    ]
    if realm:
        lines.append(f'realm_id = "{realm}"')
    if refresh_token:
        lines.append(f'refresh_token = "{refresh_token}"')
    return "\n".join(lines) + "\n" + extra + "\n"


def make_daemon(
    factory: Callable[..., DaemonProcess], sandbox: SandboxProcess, instances: str
) -> DaemonProcess:
    d = factory(instances)
    settings = sandbox.quickbooks_settings() + (
        f'[http]\npublic_base_url = "http://127.0.0.1:{d.webhook_port}"\n'
    )
    d.write_config(instances, settings=settings)
    return d


def cli(d: DaemonProcess, *args: str, timeout: float = 30.0) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "qbo_events", *args, "--config", str(d.config_path)],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "BROWSER": "true"},
    )


def connect_link(d: DaemonProcess, name: str, valid: str = "1h") -> str:
    done = cli(d, "connect", "--instance", name, "--valid", valid)
    assert done.returncode == 0, done.stderr
    link = done.stdout.splitlines()[0]
    assert link.startswith(f"http://127.0.0.1:{d.webhook_port}/connect/")
    return link


def browse(url: str) -> tuple[int, str, str]:
    """GET `url` following redirects as a browser does: (status, final URL, page text)."""

    async def get() -> tuple[int, str, str]:
        async with aiohttp.ClientSession() as http, http.get(url) as response:
            return response.status, str(response.url), await response.text()

    return asyncio.run(get())


def connection(d: DaemonProcess, name: str) -> dict[str, Any]:
    return dict(d.health("/status")[1]["instances"][name]["connection"])


def connection_events(receiver: Receiver, name: str | None = None) -> list[dict[str, Any]]:
    found = []
    for delivery in list(receiver.deliveries):
        message = delivery["body"]["message"]
        if message["events"][0]["eventType"] == "CONNECTION" and (
            name is None or message["instanceId"] == name
        ):
            found.append(message)
    return found


def change_ids(receiver: Receiver, name: str) -> set[str]:
    return {
        d["body"]["message"]["events"][0]["objectId"]
        for d in list(receiver.deliveries)
        if d["body"]["message"]["instanceId"] == name
        and d["body"]["message"]["events"][0]["eventType"] != "CONNECTION"
    }


def stored(d: DaemonProcess, name: str) -> tuple[int, int]:
    """(token rows, connection rows) of `name` in the daemon's outbox, read-only."""
    conn = sqlite3.connect(f"file:{d.state_dir / 'outbox.sqlite3'}?mode=ro", uri=True)
    try:
        tokens, connections = (
            conn.execute(f"SELECT COUNT(*) FROM {table} WHERE instance = ?", (name,)).fetchone()[0]
            for table in ("tokens", "connections")
        )
    finally:
        conn.close()
    return int(tokens), int(connections)


def wait_polled(d: DaemonProcess, name: str) -> None:
    def polled() -> bool:
        loops = d.health("/status")[1]["instances"][name]["resources"]
        return bool(loops) and all(loop["last_success_at"] for loop in loops.values())

    wait_for(polled, 30, f"a first poll of {name}")


def test_a_connect_link_connects_a_company_and_polling_starts(
    sandbox_factory: Callable[..., SandboxProcess],
    daemon_factory: Callable[..., DaemonProcess],
    receiver: Receiver,
) -> None:
    sandbox = sandbox_factory()
    d = make_daemon(daemon_factory, sandbox, instance("acme", receiver.url)).start()
    assert connection(d, "acme")["state"] == "waiting for connect"
    assert d.health("/status")[1]["instances"]["acme"]["resources"] == {}

    status, final, text = browse(connect_link(d, "acme"))
    assert status == 200, text
    assert final.startswith(f"http://127.0.0.1:{d.webhook_port}/oauth/callback?")
    assert "acme" in text and "Connected" in text
    # The sandbox's consent page was asked with what Intuit needs.
    asked = sandbox.control("GET", "/_sandbox/authorizations")["authorizations"]
    assert asked[-1]["scope"] == "com.intuit.quickbooks.accounting"
    assert asked[-1]["redirect_uri"] == f"http://127.0.0.1:{d.webhook_port}/oauth/callback"

    wait_polled(d, "acme")
    now = connection(d, "acme")
    assert now["state"] == "connected" and now["realm_id"] == REALM
    assert now["company_name"] and now["connected_at"]
    made = sandbox.change("Invoice", "Create", 2)
    wait_for(
        lambda: {c["object_id"] for c in made} <= change_ids(receiver, "acme"),
        30,
        "the changes of the connected company",
    )
    first = receiver.deliveries[0]["body"]["message"]
    assert first["events"][0]["eventType"] == "CONNECTION"
    assert first["events"][0]["status"] == "connected"
    assert first["events"][0]["realmId"] == REALM == first["realmId"]
    assert first["events"][0]["companyName"] == now["company_name"]
    assert "connectUrl" not in first["events"][0]
    assert first["source"] == "connection"
    assert receiver.bad_signatures == 0
    # The learned realm outlives a restart.
    assert d.stop() == 0
    d.start()
    assert connection(d, "acme")["realm_id"] == REALM
    wait_polled(d, "acme")
    assert len(connection_events(receiver)) == 1
    assert d.stop() == 0


def test_refusals_store_nothing_and_disturb_nothing(
    sandbox_factory: Callable[..., SandboxProcess],
    daemon_factory: Callable[..., DaemonProcess],
    receiver: Receiver,
) -> None:
    sandbox = sandbox_factory(realms=(REALM, OTHER_REALM))
    instances = instance("acme", receiver.url, realm=REALM) + instance(
        "steady",
        receiver.url,
        realm=OTHER_REALM,
        refresh_token=sandbox.realm_refresh_token(OTHER_REALM),
    )
    d = make_daemon(daemon_factory, sandbox, instances).start()
    wait_polled(d, "steady")
    base = f"http://127.0.0.1:{d.webhook_port}"

    # A reused link: the first use starts the flow (declined here), the second is refused.
    sandbox.control("POST", "/_sandbox/consent", {"decision": "deny"})
    link = connect_link(d, "acme")
    status, _, text = browse(link)
    assert status == 400 and "access_denied" in text
    status, _, text = browse(link)
    assert status == 410 and "used" in text

    # An expired link.
    sandbox.control("POST", "/_sandbox/consent", {"decision": "approve"})
    link = connect_link(d, "acme", valid="1s")
    deadline = time.time() + 1.0
    wait_for(lambda: time.time() > deadline, 5, "the link to expire")
    status, _, text = browse(link)
    assert status == 410 and "expired" in text

    # An unknown link, a forged state, a missing state.
    assert browse(f"{base}/connect/not-a-link")[0] == 404
    status, _, text = browse(f"{base}/oauth/callback?code=c&realmId={REALM}&state=forged")
    assert status == 400 and "not one this service issued" in text
    status, _, text = browse(f"{base}/oauth/callback?code=c&realmId={REALM}")
    assert status == 400 and "no state" in text

    # A company other than the configured realm.
    sandbox.control("POST", "/_sandbox/consent", {"decision": "approve", "realm_id": OTHER_REALM})
    status, _, text = browse(connect_link(d, "acme"))
    assert status == 403 and REALM in text and OTHER_REALM in text

    assert connection(d, "acme")["state"] == "waiting for connect"
    assert stored(d, "acme") == (0, 0)
    assert connection_events(receiver) == []
    stderr = d.stderr()
    assert "connect declined at QuickBooks" in stderr
    assert "connect refused: another company" in stderr
    # The other instance went on polling all along.
    made = sandbox.control("POST", "/_sandbox/changes", {
        "entity": "Invoice", "operation": "Create", "count": 1, "realm_id": OTHER_REALM,
    })["changes"]  # fmt: skip
    wait_for(
        lambda: {c["object_id"] for c in made} <= change_ids(receiver, "steady"),
        30,
        "the other instance's change",
    )
    assert d.stop() == 0


def test_a_lost_grant_is_announced_once_and_a_new_connect_restores_it(
    sandbox_factory: Callable[..., SandboxProcess],
    daemon_factory: Callable[..., DaemonProcess],
    receiver: Receiver,
) -> None:
    sandbox = sandbox_factory(realms=(REALM, OTHER_REALM))
    instances = instance("acme", receiver.url) + instance(
        "steady",
        receiver.url,
        realm=OTHER_REALM,
        refresh_token=sandbox.realm_refresh_token(OTHER_REALM),
    )
    d = make_daemon(daemon_factory, sandbox, instances).start()
    assert browse(connect_link(d, "acme"))[0] == 200
    wait_polled(d, "acme")
    wait_for(lambda: connection_events(receiver, "acme"), 20, "the connected event")

    sandbox.control("POST", "/_sandbox/disconnect", {"realm_id": REALM})
    wait_for(
        lambda: len(connection_events(receiver, "acme")) == 2, 30, "the needs_reauthorization event"
    )
    lost = connection_events(receiver, "acme")[1]["events"][0]
    assert lost["status"] == "needs_reauthorization" and lost["realmId"] == REALM
    assert lost["connectUrl"].startswith(f"http://127.0.0.1:{d.webhook_port}/connect/")
    assert connection(d, "acme")["state"] == "needs re-authorization"
    # Made while the grant is dead; polled once the company is back, from the old cursor.
    missed = sandbox.change("Invoice", "Create", 1)
    # Many polls later, and after a restart, still one event for the loss.
    d.stop()
    d.start()
    steady = sandbox.control("POST", "/_sandbox/changes", {
        "entity": "Invoice", "operation": "Create", "count": 1, "realm_id": OTHER_REALM,
    })["changes"]  # fmt: skip
    wait_for(
        lambda: {c["object_id"] for c in steady} <= change_ids(receiver, "steady"),
        30,
        "the other instance's change",
    )
    assert [e["events"][0]["status"] for e in connection_events(receiver, "acme")] == [
        "connected",
        "needs_reauthorization",
    ]
    assert connection_events(receiver, "steady") == []

    # The link the event carried reconnects the company.
    status, _, text = browse(lost["connectUrl"])
    assert status == 200, text
    wait_for(lambda: len(connection_events(receiver, "acme")) == 3, 30, "the restored event")
    assert connection_events(receiver, "acme")[2]["events"][0]["status"] == "restored"
    wait_for(
        lambda: {c["object_id"] for c in missed} <= change_ids(receiver, "acme"),
        30,
        "the change made while the grant was dead",
    )
    assert connection(d, "acme")["state"] == "connected"
    assert receiver.bad_signatures == 0
    assert d.stop() == 0


def test_the_reconnect_url_restarts_the_flow_for_the_company_it_names(
    sandbox_factory: Callable[..., SandboxProcess],
    daemon_factory: Callable[..., DaemonProcess],
    receiver: Receiver,
) -> None:
    sandbox = sandbox_factory(realms=(REALM, OTHER_REALM))
    d = make_daemon(daemon_factory, sandbox, instance("acme", receiver.url)).start()
    base = f"http://127.0.0.1:{d.webhook_port}"
    assert browse(f"{base}/reconnect?realmId={REALM}")[0] == 404  # not connected yet
    assert browse(connect_link(d, "acme"))[0] == 200
    status, _, text = browse(f"{base}/reconnect?realmId={REALM}")
    assert status == 200 and "acme" in text
    # Another company coming through the Reconnect URL is refused.
    sandbox.control("POST", "/_sandbox/consent", {"decision": "approve", "realm_id": OTHER_REALM})
    assert browse(f"{base}/reconnect?realmId={OTHER_REALM}")[0] == 404
    status, _, text = browse(f"{base}/reconnect?realmId={REALM}")
    assert status == 403 and OTHER_REALM in text
    assert connection(d, "acme")["realm_id"] == REALM
    assert d.stop() == 0


def test_connect_local_then_disconnect_revokes_and_forgets(
    sandbox_factory: Callable[..., SandboxProcess],
    daemon_factory: Callable[..., DaemonProcess],
    receiver: Receiver,
    tmp_path: Path,
) -> None:
    sandbox = sandbox_factory()
    d = make_daemon(daemon_factory, sandbox, instance("acme", receiver.url))
    proc = subprocess.Popen(
        [sys.executable, "-m", "qbo_events", "connect", "--local", "--instance", "acme",
         "--valid", "60s", "--config", str(d.config_path)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "BROWSER": "true"},
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        url = ""
        while not url.startswith("http"):
            url = proc.stdout.readline().strip()
            assert url or proc.poll() is None, proc.stderr.read() if proc.stderr else ""
        assert url.startswith(f"{sandbox.base_url}/connect/oauth2?")
        status, final, text = browse(url)
        assert status == 200 and "acme" in text
        assert final.startswith("http://localhost:")
        out, err = proc.communicate(timeout=30)
        assert proc.returncode == 0, err
        assert "connected" in out and REALM in out
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    checked = cli(d, "check")
    assert checked.returncode == 0, checked.stderr
    assert "connected to" in checked.stdout and f"realm {REALM}" in checked.stdout

    # The daemon starts polling the company connected while it was down.
    d.start()
    wait_polled(d, "acme")
    wait_for(lambda: connection_events(receiver, "acme"), 20, "the connected event")

    done = cli(d, "disconnect", "--instance", "acme")
    assert done.returncode == 0, done.stderr
    assert "revoked" in done.stdout
    revoked = sandbox.control("GET", "/_sandbox/revocations")["revocations"]
    assert [r["status"] for r in revoked] == [200]
    # The running daemon stops polling it and shows it waiting.
    wait_for(
        lambda: connection(d, "acme")["state"] == "waiting for connect",
        20,
        "the daemon to notice the disconnect",
    )
    wait_for(
        lambda: d.health("/status")[1]["instances"]["acme"]["resources"] == {},
        20,
        "the loops to stop",
    )

    # Connected again, then disconnected at QuickBooks: the revoke answers 400, and the tokens
    # are forgotten all the same.
    assert browse(connect_link(d, "acme"))[0] == 200
    wait_for(lambda: connection(d, "acme")["state"] == "connected", 20, "the new connection")
    sandbox.control("POST", "/_sandbox/disconnect", {"realm_id": REALM})
    done = cli(d, "disconnect", "--instance", "acme")
    assert done.returncode == 0, done.stderr
    assert "no longer knew" in done.stdout
    revoked = sandbox.control("GET", "/_sandbox/revocations")["revocations"]
    assert [r["status"] for r in revoked] == [200, 400]
    wait_for(
        lambda: connection(d, "acme")["state"] == "waiting for connect", 20, "the second disconnect"
    )
    assert d.stop() == 0
