"""/readyz against the sandbox: an instance that needs re-authorization, alone and beside others."""

from __future__ import annotations

import signal
from collections.abc import Callable
from typing import Any

from harness import (
    DaemonProcess,
    Receiver,
    SandboxProcess,
    instance_toml,
    legacy_body,
    wait_for,
)

REALM = "9341453908128517"
REALM_B = "4620816365178912"
AT = "2026-11-27T13:04:47Z"


def polling(sandbox: SandboxProcess, name: str, url: str, realm: str = REALM) -> str:
    return instance_toml(
        name, realm, url, vendor="polling",
        extra=(
            f'refresh_token = "{sandbox.realm_refresh_token(realm)}"\n'
            "event.poller.refresh_interval = 0.02\n"
            'event.poller.urls = ["invoices", "customers"]\n'
        ),
    )  # fmt: skip


def readyz(d: DaemonProcess) -> tuple[int, Any] | None:
    assert d.proc is not None
    if d.proc.poll() is not None:
        raise AssertionError(f"daemon exited {d.proc.returncode}: {d.stderr()}")
    try:
        return d.health("/readyz")
    except OSError:
        return None


def refused(d: DaemonProcess, name: str) -> bool:
    loops = d.health("/status")[1]["instances"][name]["resources"].values()
    return len(loops) == 2 and all(loop["state"] == "needs re-authorization" for loop in loops)


def test_not_ready_while_the_only_instance_needs_reauthorization_then_degraded(
    sandbox_factory: Callable[..., SandboxProcess],
    daemon_factory: Callable[..., DaemonProcess],
    receiver: Receiver,
) -> None:
    sandbox = sandbox_factory(realms=(REALM, REALM_B))
    sandbox.faults(revoke=REALM)
    d = daemon_factory(
        polling(sandbox, "acme", receiver.url), settings=sandbox.quickbooks_settings()
    )
    d.start(wait=False)
    expected = (503, {"status": "not ready", "reasons": ["instance acme: needs re-authorization"]})
    wait_for(lambda: readyz(d) == expected, what="/readyz to say acme needs re-authorization")

    # A second instance that can work makes the daemon ready; acme stays listed.
    d.write_config(
        polling(sandbox, "acme", receiver.url)
        + instance_toml("globex", REALM_B, receiver.url, vendor="webhook"),
        settings=sandbox.quickbooks_settings(),
    )
    d.signal(signal.SIGHUP)
    wait_for(lambda: "globex" in d.health("/status")[1]["instances"], what="the reload")
    wait_for(lambda: refused(d, "acme"), what="acme refused again after the reload")
    degraded = (200, {"status": "ready", "degraded": ["instance acme: needs re-authorization"]})
    wait_for(lambda: readyz(d) == degraded, what="/readyz ready, with acme degraded")
    assert d.stop() == 0


def test_a_refusal_is_logged_once_per_instance_and_a_polled_realm_is_not_unknown(
    sandbox_factory: Callable[..., SandboxProcess],
    daemon_factory: Callable[..., DaemonProcess],
    receiver: Receiver,
) -> None:
    sandbox = sandbox_factory()
    d = daemon_factory(
        polling(sandbox, "acme", receiver.url), settings=sandbox.quickbooks_settings()
    ).start()
    sandbox.faults(revoke=REALM)
    wait_for(lambda: refused(d, "acme"), what="both of acme's loops to pause")
    # One line for the instance, not one per resource.
    assert d.stderr().count("polling paused: needs re-authorization") == 1

    # QuickBooks may send webhooks for a realm that is only polled: known, not logged.
    assert d.post(legacy_body(REALM, ("Invoice", "1", "Create", AT))) == 200
    assert d.post(legacy_body("5550001", ("Invoice", "2", "Create", AT))) == 200
    webhooks = d.health("/status")[1]["webhooks"]
    assert webhooks.get("polled_realm_entities") == 1, webhooks
    assert webhooks.get("unknown_realm_entities") == 1, webhooks
    unknown = [line for line in d.stderr().splitlines() if "no instance serves" in line]
    assert len(unknown) == 1 and REALM not in unknown[0] and "5550001" in unknown[0]
    assert d.stop() == 0
