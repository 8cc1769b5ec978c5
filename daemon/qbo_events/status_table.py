"""`qbo-events status`: reads the running daemon's /status and prints it as tables."""

from __future__ import annotations

import datetime as dt
import sys
import textwrap
import urllib.error
import urllib.request
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import orjson

from qbo_events import health_address, qbtime
from qbo_events.config import Config, parse_listen
from qbo_events.connect.status import line as connection_line


def status_url(config: Config) -> str:
    return url_for(config.http.health_listen)


def url_for(health_listen: str) -> str:
    host, port = parse_listen(health_listen)
    if host in ("0.0.0.0", "::", ""):
        host = "127.0.0.1"
    if ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{port}/status"


def fetch_and_print(config: Config) -> int:
    return show(status_url(config))


def fetch_and_print_recorded(config_path: Path) -> int:
    """`status` when the config file does not load: ask the address the daemon recorded in its
    state_dir, saying so; 2 when no address was recorded there."""
    recorded = health_address.state_dir_of(config_path) / health_address.FILE
    address = health_address.read(recorded.parent)
    if address is None:
        print(
            f"qbo-events: {config_path} does not load (`qbo-events check` lists why) and "
            f"{recorded} names no running daemon to ask",
            file=sys.stderr,
        )
        return 2
    print(
        f"qbo-events: {config_path} does not load (`qbo-events check` lists why); asking the "
        f"daemon at {address}, the health address recorded in {recorded}",
        file=sys.stderr,
    )
    return show(url_for(address))


def show(url: str) -> int:
    """Print the daemon's /status at `url` as tables; 1 when no daemon answers there."""
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            status = orjson.loads(response.read())
    except (urllib.error.URLError, OSError) as exc:
        print(f"qbo-events: cannot reach the daemon at {url}: {exc}", file=sys.stderr)
        return 1
    except orjson.JSONDecodeError:
        status = None
    if not isinstance(status, dict):
        # Something else holds the port (or a proxy answered): say so rather than a traceback.
        print(f"qbo-events: {url} did not answer with the daemon's JSON status", file=sys.stderr)
        return 1
    print(render(status))
    return 0


def render(status: dict[str, Any]) -> str:
    lines = [
        f"qbo-events {status.get('version', '?')}, up {status.get('uptime', 0):.0f} s, "
        f"{'ready' if status.get('ready') else 'NOT READY'}, config {status.get('config')}",
    ]
    for label, key in (("not ready", "reasons"), ("degraded", "degraded")):
        lines += [f"{label}: {reason}" for reason in status.get(key) or ()]
    withheld = (status.get("watchdog") or {}).get("withheld") or ()
    lines += [f"watchdog withheld: {reason}" for reason in withheld]
    reload = status.get("last_reload") or {}
    if reload.get("at"):
        result = "ok" if reload.get("ok") else f"REJECTED: {'; '.join(reload.get('error') or [])}"
        lines.append(f"last reload {reload['at']}: {result}")
    lines.append("")
    lines += _connection_lines(status.get("instances") or {})
    lines += _loops_table(status.get("instances") or {})
    lines += _resync_lines(status.get("instances") or {})
    lines += _endpoint_lines(status.get("instances") or {})
    lines += _calls_lines(status)
    outbox = status.get("outbox") or {}
    deliveries = status.get("deliveries") or {}
    lines += [
        "",
        "outbox: "
        + ", ".join(
            f"{k} {outbox.get(k, 0)}" for k in ("pending", "retrying", "dead", "quarantined")
        ),
        "deliveries: "
        + ", ".join(
            f"{k} {deliveries.get(k, 0)}"
            for k in ("delivered", "failed_attempts", "dead_lettered", "in_flight")
        ),
        "webhooks: "
        + (", ".join(f"{k} {v}" for k, v in (status.get("webhooks") or {}).items()) or "none"),
    ]
    return "\n".join(lines)


def _connection_lines(instances: dict[str, Any]) -> list[str]:
    """Which company each instance is connected to, and since when; or what it waits for;
    and the days its refresh token has left before its hard expiry, when known."""
    found = [
        f"{name}: {connection_line(inst['connection'])}"
        for name, inst in instances.items()
        if isinstance(inst.get("connection"), dict)
    ]
    for name, inst in instances.items():
        left = (inst.get("tokens") or {}).get("refresh_token_days_left")
        if left is not None:
            found.append(f"{name}: refresh token valid {left:g} more days (then connect again)")
    return [*found, ""] if found else []


def _resync_lines(instances: dict[str, Any]) -> list[str]:
    """Each instance's latest resync: how far it got, and what holds it up."""
    lines = []
    for name, inst in instances.items():
        job = inst.get("resync")
        if not isinstance(job, dict):
            continue
        line = (
            f"{name}: resync {job.get('id')} {job.get('state')}, resources"
            f" {job.get('resources_done')}/{job.get('resources_total')},"
            f" {job.get('objects')} objects ({job.get('since')})"
        )
        if job.get("last_error"):
            line += f": {job['last_error']}"
        lines.append(line)
    return [*lines, ""] if lines else []


# Wider names are cut (with an ellipsis) so rows stay readable; the error wraps instead, since
# its end is often the part that says what to do.
NAME_MAX = 32
RESOURCE_MAX = 24
STATE_MAX = 16
ERROR_WIDTH = 60


def _loops_table(instances: dict[str, Any]) -> list[str]:
    """One row per (instance, resource) loop, columns sized to their longest value."""
    now = dt.datetime.now(dt.UTC)
    rows: list[tuple[str, str, str, str, str, str, str]] = []
    for name, inst in instances.items():
        resources = inst.get("resources") or {}
        if not resources:
            note = str(inst.get("state") or inst.get("vendor_type", ""))
            rows.append((name, "-", note, "", "", "", ""))
        for resource, loop in resources.items():
            lag = "-"
            if loop.get("cursor"):
                try:
                    cursor = qbtime.parse(loop["cursor"])
                    lag = f"{(now - cursor).total_seconds():.0f} s"
                except ValueError:
                    pass
            rows.append(
                (
                    name,
                    resource,
                    str(loop.get("state", "?")),
                    str(loop.get("last_success_at") or "-"),
                    lag,
                    str(loop.get("events", 0)),
                    str(loop.get("last_error") or ""),
                )
            )
    name_w = _width("INSTANCE", (r[0] for r in rows), NAME_MAX)
    resource_w = _width("RESOURCE", (r[1] for r in rows), RESOURCE_MAX)
    state_w = _width("STATE", (r[2] for r in rows), STATE_MAX)

    def line(cells: tuple[str, ...]) -> str:
        name, resource, state, success, lag, events, error = cells
        return (
            f"{_cut(name, name_w):<{name_w}} {_cut(resource, resource_w):<{resource_w}} "
            f"{_cut(state, state_w):<{state_w}} {success:<21} {lag:>8}  {events:>6}  {error}"
        ).rstrip()

    header = line(("INSTANCE", "RESOURCE", "STATE", "LAST SUCCESS", "LAG", "EVENTS", "ERROR"))
    lines = [header]
    indent = " " * header.index("ERROR")
    for row in rows:
        first, *more = textwrap.wrap(row[6], ERROR_WIDTH) or [""]
        lines.append(line((*row[:6], first)))
        lines += [indent + part for part in more]
    return lines


def _endpoint_lines(instances: dict[str, Any]) -> list[str]:
    """Each instance's callback endpoint: healthy, or failing or paused since when."""
    lines = []
    for name, inst in instances.items():
        endpoint = inst.get("endpoint")
        if not isinstance(endpoint, dict):
            continue
        state = str(endpoint.get("state", "?"))
        line = f"  {name}: {state}"
        if state != "healthy":
            line += (
                f" since {endpoint.get('failing_since') or '?'},"
                f" {endpoint.get('consecutive_failures', 0)} failures in a row"
            )
        if endpoint.get("paused_until_probe"):
            line += f", next probe {endpoint['paused_until_probe']}"
        line += f"; last success {endpoint.get('last_success_at') or '-'}"
        lines.append(line)
    return ["", "endpoints:", *lines] if lines else []


def _calls_lines(status: dict[str, Any]) -> list[str]:
    """The month's QuickBooks calls: the app's total (Intuit meters per app), then each instance."""
    month = (status.get("quickbooks") or {}).get("api_calls")
    if not month:
        return []
    lines = [
        "",
        f"quickbooks calls {month.get('month')}: {month.get('total', 0)}, "
        f"projected {month.get('projection', 0)} for the month",
    ]
    budget = (status.get("quickbooks") or {}).get("budget") or {}
    if budget.get("monthly_call_budget"):
        stretch = budget.get("stretch") or {}
        lines.append(
            f"budget {budget['monthly_call_budget']}: {budget.get('used', 0)} used; "
            + (
                f"poll intervals stretched (hybrid x{stretch.get('hybrid')}, "
                f"polling-only x{stretch.get('polling')}) since {budget.get('since')}"
                if budget.get("stretched")
                else "poll intervals as configured"
            )
        )
    for name, inst in (status.get("instances") or {}).items():
        calls = inst.get("api_calls") or {}
        kinds = ", ".join(f"{k} {v}" for k, v in (calls.get("by_kind") or {}).items())
        lines.append(f"  {name}: {calls.get('total', 0)}" + (f" ({kinds})" if kinds else ""))
    return lines


def _width(heading: str, values: Iterable[str], cap: int) -> int:
    return min(cap, max([len(heading), *map(len, values)]))


def _cut(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"
