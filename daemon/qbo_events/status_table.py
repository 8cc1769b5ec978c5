"""`qbo-events status`: reads the running daemon's /status and prints it as tables."""

from __future__ import annotations

import datetime as dt
import sys
import urllib.error
import urllib.request
from typing import Any

import orjson

from qbo_events.config import Config, parse_listen


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
    reload = status.get("last_reload") or {}
    if reload.get("at"):
        result = "ok" if reload.get("ok") else f"REJECTED: {'; '.join(reload.get('error') or [])}"
        lines.append(f"last reload {reload['at']}: {result}")
    lines.append("")
    lines.append(
        f"{'INSTANCE':<16} {'RESOURCE':<18} {'STATE':<12} {'LAST SUCCESS':<21} {'LAG':>8}"
        "  EVENTS  ERROR"
    )
    now = dt.datetime.now(dt.UTC)
    for name, inst in (status.get("instances") or {}).items():
        resources = inst.get("resources") or {}
        note = inst.get("state") or inst.get("vendor_type", "")
        if not resources:
            lines.append(f"{name:<16} {'-':<18} {note:<12}")
        for resource, loop in resources.items():
            success = loop.get("last_success_at") or "-"
            lag = "-"
            if loop.get("cursor"):
                try:
                    cursor = dt.datetime.fromisoformat(loop["cursor"].replace("Z", "+00:00"))
                    lag = f"{(now - cursor).total_seconds():.0f} s"
                except ValueError:
                    pass
            lines.append(
                f"{name:<16} {resource:<18} {loop.get('state', '?'):<12} {success:<21} "
                f"{lag:>8}  {loop.get('events', 0):>6}  {loop.get('last_error') or ''}"
            )
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
