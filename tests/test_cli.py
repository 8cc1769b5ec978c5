"""The command line as a user runs it: exit codes, messages, `check` and `status`."""

from __future__ import annotations

import asyncio
import http.server
import os
import re
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from harness import (
    VERIFIER,
    DaemonProcess,
    Receiver,
    free_port,
    instance_toml,
    legacy_body,
    wait_for,
)
from qbo_events.events import Change, Event, EventType, Source, event_id
from qbo_events.outbox import Outbox

Factory = Callable[..., DaemonProcess]
REPO = Path(__file__).resolve().parent.parent
AT = "2026-11-27T13:04:47Z"

GOOD = f"""
state_dir = "./state"
[http]
webhook_listen = "127.0.0.1:18080"
health_listen = "127.0.0.1:18081"
[quickbooks]
client_id = "client"
client_secret = "client-secret-value"
webhook_verifier_token = "{VERIFIER}"
[[instances]]
name = "acme"
realm_id = "111"
event.vendor.type = "hybrid"
event.notification.callback.url = "https://example.com/qbo"
event.notification.signature.key = "a-signature-key"
event.poller.urls = "invoices|customers"
event.poller.refresh_interval = "0.5"
[[instances]]
name = "globex"
realm_id = "222"
event.vendor.type = "webhook"
event.notification.callback.url = "https://globex.example/hook"
"""

BROKEN = """
typo = 1
[log]
level = "loud"
[delivery]
workers = 0
[[instances]]
name = "acme"
realm_id = "1"
event.vendor.type = "webhook"
event.notification.callback.url = "https://example.com/a"
event.poller.refresh_interval = 0
[[instances]]
name = "acme"
realm_id = "2"
event.vendor.type = "webhook"
event.notification.callback.url = "https://example.com/b"
event.poller.urls = "invoices|widgets"
"""


def cli(
    *args: str, cwd: Path | None = None, env: dict[str, str] | None = None, timeout: float = 30
) -> subprocess.CompletedProcess[str]:
    environ = {k: v for k, v in os.environ.items() if k != "QBO_EVENTS_CONFIG"}
    environ.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "qbo_events", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        env=environ,
        timeout=timeout,
    )


def write(tmp_path: Path, text: str, name: str = "config.toml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


# check


def test_check_a_broken_config_exits_2_with_every_error_one_a_line(tmp_path: Path) -> None:
    result = cli("check", "--config", str(write(tmp_path, BROKEN)))
    assert result.returncode == 2
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert all(line.startswith("config: ") for line in lines), lines
    errors = [line.removeprefix("config: ") for line in lines]
    assert errors[:3] == [
        "typo: unknown key",
        'log.level: must be one of debug, info, warning, error (got "loud")',
        "delivery.workers: must be >= 1",
    ]
    assert "instances[0].event.poller.refresh_interval: must be > 0" in errors
    assert "instances[1].name: 'acme' is used by an earlier instance" in errors
    assert any(
        e.startswith("instances[1].event.poller.urls: ") and "'widgets'" in e for e in errors
    )
    assert len(errors) == 6


def test_check_reports_cross_field_errors_of_a_well_formed_file(tmp_path: Path) -> None:
    text = GOOD.replace('client_secret = "client-secret-value"\n', "").replace(
        f'webhook_verifier_token = "{VERIFIER}"\n', ""
    )
    result = cli("check", "--config", str(write(tmp_path, text)))
    assert result.returncode == 2
    assert result.stderr.splitlines() == [
        "config: quickbooks.client_secret: required when an instance polls",
        "config: quickbooks.webhook_verifier_token: required when an instance takes webhooks",
    ]


def test_check_a_good_config_exits_0_with_a_summary(tmp_path: Path) -> None:
    path = write(tmp_path, GOOD.replace('refresh_interval = "0.5"', 'refresh_interval = "1.5"'))
    result = cli("check", "--config", str(path))
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    out = result.stdout
    assert out.splitlines()[0] == f"{path}: ok"
    assert "127.0.0.1:18080/webhooks/quickbooks" in out
    assert "open-connectors, 64 workers" in out
    assert re.search(r"instances\s+2\b", out)
    assert re.search(
        r"acme: realm 111, hybrid, 2 resources every 90 s -> https://example.com/qbo"
        r" \(signed\)",
        out,
    )
    # A webhook-only instance polls nothing: its resource filter, and no interval.
    assert re.search(
        r"^    globex: realm 222, webhook, webhooks only, 22 resources -> https://globex.example/hook$",
        out,
        re.M,
    ), out
    # A summary, not a dump: no secret reaches the terminal.
    for secret in ("client-secret-value", VERIFIER, "a-signature-key"):
        assert secret not in out


def test_check_prints_warnings_apart_from_errors_and_exits_0(tmp_path: Path) -> None:
    path = write(tmp_path, GOOD + "event.poller.refresh_interval = 0.01\n")
    result = cli("check", "--config", str(path))
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[0] == f"{path}: ok"
    warnings = result.stderr.splitlines()
    assert warnings == [
        "warning: instances[0].event.poller.refresh_interval: 0.5 minutes is shorter than"
        " QuickBooks serves well (1 minute or more); most polls would find nothing, and"
        " webhooks (vendor type hybrid) bring changes sooner",
    ], result.stderr
    # globex is webhook-only: its 0.01 minutes poll nothing, so they draw no warning.
    path = write(tmp_path, GOOD.replace('"0.5"', '"0.01"').replace('"invoices|customers"', '""'))
    result = cli("check", "--config", str(path))
    assert result.returncode == 0, result.stderr
    assert [line.split(":")[0] for line in result.stderr.splitlines()] == ["warning"] * 2
    assert "realm 111 (acme): polling makes about 400 QuickBooks calls a minute" in result.stderr


def test_the_daemon_logs_the_same_warnings_at_start(daemon_factory: Factory) -> None:
    closed = f"http://127.0.0.1:{free_port()}"
    d = daemon_factory(
        instance_toml(
            "acme-fast",
            "717",
            "http://127.0.0.1:9/hook",
            vendor="hybrid",
            extra='event.poller.refresh_interval = 0.5\nevent.poller.urls = "bills"',
        ),
        settings=f'[quickbooks]\nclient_id = "c"\nclient_secret = "s"\n'
        f'api_base_url = "{closed}"\ntoken_url = "{closed}/token"',
    ).start(wait=False)

    def warned() -> bool:
        return "instances[0].event.poller.refresh_interval: 0.5 minutes" in d.stderr()

    wait_for(warned, 30, "the start-up warning in the daemon's log")
    line = next(line for line in d.stderr().splitlines() if "0.5 minutes" in line)
    assert '"level":"warning"' in line.replace(" ", ""), line
    assert d.stop() == 0


def test_check_a_missing_config_file_exits_2_naming_it(tmp_path: Path) -> None:
    path = tmp_path / "nowhere.toml"
    result = cli("check", "--config", str(path))
    assert result.returncode == 2
    assert result.stdout == ""
    assert result.stderr.strip() == f"config: {path}: cannot read: No such file or directory"
    assert "Traceback" not in result.stderr


def test_check_invalid_toml_exits_2(tmp_path: Path) -> None:
    result = cli("check", "--config", str(write(tmp_path, "[log\n")))
    assert result.returncode == 2
    assert result.stderr.startswith("config: invalid TOML: ")
    assert len(result.stderr.splitlines()) == 1


def test_qbo_events_config_is_used_without_config(tmp_path: Path) -> None:
    good = write(tmp_path, GOOD, "from-env.toml")
    # ./config.toml would be broken: proof that the environment variable won.
    write(tmp_path, BROKEN)
    result = cli("check", cwd=tmp_path, env={"QBO_EVENTS_CONFIG": str(good)})
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"{good}: ok")


def test_config_beats_qbo_events_config(tmp_path: Path) -> None:
    good = write(tmp_path, GOOD, "good.toml")
    broken = write(tmp_path, BROKEN, "broken.toml")
    result = cli("check", "--config", str(good), env={"QBO_EVENTS_CONFIG": str(broken)})
    assert result.returncode == 0, result.stderr
    result = cli("check", "--config", str(broken), env={"QBO_EVENTS_CONFIG": str(good)})
    assert result.returncode == 2


def test_without_either_the_config_is_config_toml_in_the_working_directory(
    tmp_path: Path,
) -> None:
    result = cli("check", cwd=tmp_path)
    assert result.returncode == 2
    assert "config: config.toml: cannot read: No such file or directory" in result.stderr
    write(tmp_path, GOOD)
    result = cli("check", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("config.toml: ok")


def test_the_example_config_in_the_repository_passes_check(tmp_path: Path) -> None:
    result = cli("check", "--config", str(REPO / "config.toml"), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "acme: realm 9130357766900216, hybrid" in result.stdout


# state_dir beside the config file


def test_deliveries_list_from_another_directory_reads_the_daemons_outbox(tmp_path: Path) -> None:
    (tmp_path / "etc").mkdir()
    (tmp_path / "elsewhere").mkdir()
    path = write(tmp_path / "etc", GOOD)  # state_dir = "./state"
    change = Change(
        realm_id="222",
        entity="Invoice",
        object_id="42",
        event_type=EventType.CREATED,
        date=AT,
        source=Source.WEBHOOK,
        raw={},
    )

    async def store() -> None:
        async with Outbox(tmp_path / "etc" / "state" / "outbox.sqlite3") as outbox:
            await outbox.accept(
                [
                    Event(
                        event_id=event_id("globex", change),
                        instance="globex",
                        object_type="invoices",
                        change=change,
                    )
                ]
            )

    asyncio.run(store())
    result = cli("deliveries", "list", "--config", str(path), cwd=tmp_path / "elsewhere")
    assert result.returncode == 0, result.stderr
    assert "invoices/42" in result.stdout
    assert result.stdout.splitlines()[-1] == "1 pending deliveries"
    assert not (tmp_path / "elsewhere" / "state").exists()


# --help and usage errors

COMMANDS = [
    [],
    ["run"],
    ["check"],
    ["status"],
    ["deliveries"],
    ["deliveries", "list"],
    ["deliveries", "retry"],
    ["sandbox"],
    ["demo"],
    ["authorize"],
]


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: " ".join(c) or "top")
def test_help_on_each_command_exits_0(command: list[str]) -> None:
    result = cli(*command, "--help")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"usage: qbo-events{''.join(' ' + c for c in command)}")
    if command in (["run"], ["check"], ["status"], ["authorize"]):
        assert "--config" in result.stdout


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: " ".join(c) or "top")
def test_every_option_of_every_command_says_what_it_does(command: list[str]) -> None:
    result = cli(*command, "--help")
    assert result.returncode == 0, result.stderr
    undescribed = [option for option, text in _options(result.stdout) if not _describes(text)]
    assert undescribed == [], f"options without help text: {undescribed}"


def _options(help_text: str) -> list[tuple[str, str]]:
    """(invocation, description) of each entry under `options:` in argparse's --help."""
    section = help_text.partition("\noptions:\n")[2].split("\n\n")[0]
    entries: list[tuple[str, str]] = []
    for line in section.splitlines():
        if re.match(r"^  -", line):
            # The description follows the invocation after two or more spaces, or on the next line.
            invocation, _, text = line.strip().partition("  ")
            entries.append((invocation, text.strip()))
        elif entries:
            invocation, text = entries[-1]
            entries[-1] = (invocation, f"{text} {line.strip()}".strip())
    assert entries, help_text
    return entries


def _describes(text: str) -> bool:
    # A bare "(default X)" names a value, not what the option does.
    return bool(re.sub(r"\(default[^)]*\)", "", text).strip())


@pytest.mark.parametrize(
    "args",
    [
        [],
        ["nonsense"],
        ["deliveries"],
        ["check", "--bogus"],
        ["deliveries", "list", "--limit", "x"],
    ],
    ids=lambda a: " ".join(a) or "nothing",
)
def test_usage_errors_exit_2(args: list[str]) -> None:
    result = cli(*args)
    assert result.returncode == 2
    assert "usage: qbo-events" in result.stderr


def test_the_console_script_is_installed() -> None:
    script = Path(sys.executable).parent / "qbo-events"
    assert script.exists()
    result = subprocess.run([str(script), "--version"], capture_output=True, text=True, timeout=30)
    assert result.returncode == 0
    assert result.stdout.startswith("qbo-events ")


# status


def test_status_prints_the_running_daemons_table(daemon_factory: Factory) -> None:
    absent = Receiver()  # never started: the delivery stays in the outbox
    d = daemon_factory(
        instance_toml("acme-status", "515", absent.url),
        settings="[delivery]\nretry_schedule = [60]",
    ).start()
    assert d.post(legacy_body("515", ("Invoice", "1", "Create", AT))) == 200

    def retrying() -> bool:
        return bool(d.health("/status")[1]["outbox"]["retrying"] == 1)

    wait_for(retrying, what="the failed delivery to wait for its retry")
    result = cli("status", "--config", str(d.config_path))
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert re.search(r"^acme-status\s+-\s+webhook", out, re.M), out
    assert "outbox: pending 0, retrying 1, dead 0, quarantined 0" in out
    assert "failed_attempts 1" in out
    assert " ready," in out.splitlines()[0]
    assert str(d.config_path) in out.splitlines()[0]
    assert d.stop() == 0


def test_a_reload_that_moves_the_health_listener_records_the_new_address(
    daemon_factory: Factory,
) -> None:
    instances = instance_toml("acme-moved", "818", "http://127.0.0.1:9/hook")
    d = daemon_factory(instances).start()
    recorded = d.state_dir / "health_address"
    moved = free_port()
    d.write_config(instances, settings=f'[http]\nhealth_listen = "127.0.0.1:{moved}"')
    d.signal(signal.SIGHUP)
    wait_for(
        lambda: recorded.read_text().strip() == f"127.0.0.1:{moved}",
        what="the new health address to be recorded",
    )
    d.config_path.write_text("[broken\n")
    result = cli("status", "--config", str(d.config_path))
    assert result.returncode == 0, result.stderr
    assert "acme-moved" in result.stdout
    assert d.stop() == 0


def test_status_exits_1_when_nothing_listens(tmp_path: Path) -> None:
    port = free_port()
    path = write(tmp_path, f'[http]\nhealth_listen = "127.0.0.1:{port}"\n')
    result = cli("status", "--config", str(path))
    assert result.returncode == 1
    assert result.stdout == ""
    assert f"cannot reach the daemon at http://127.0.0.1:{port}/status" in result.stderr
    assert "Traceback" not in result.stderr


class _NotTheDaemon(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = b"<html>some other service</html>"
        self.send_response(200)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *_: object) -> None:
        pass


@pytest.fixture
def other_service() -> Iterator[int]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _NotTheDaemon)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield int(server.server_address[1])
    server.shutdown()
    server.server_close()
    thread.join(10)


def test_status_exits_1_when_something_else_answers(tmp_path: Path, other_service: int) -> None:
    path = write(tmp_path, f'[http]\nhealth_listen = "127.0.0.1:{other_service}"\n')
    result = cli("status", "--config", str(path))
    assert result.returncode == 1
    assert f"http://127.0.0.1:{other_service}/status" in result.stderr
    assert "Traceback" not in result.stderr


def test_status_with_a_broken_config_and_no_daemon_state_exits_2_in_one_line(
    tmp_path: Path,
) -> None:
    path = write(tmp_path, BROKEN)
    result = cli("status", "--config", str(path))
    assert result.returncode == 2
    assert result.stdout == ""
    message = result.stderr.strip()
    assert len(message.splitlines()) == 1, message
    assert message.startswith(f"qbo-events: {path} does not load")
    assert "qbo-events check" in message
    assert "Traceback" not in result.stderr


def test_status_falls_back_to_the_running_daemons_address_when_the_config_breaks(
    daemon_factory: Factory,
) -> None:
    d = daemon_factory(instance_toml("acme-fallback", "616", "http://127.0.0.1:9/hook")).start()
    # The operator breaks the file on disk; the daemon runs on with what it loaded.
    text = d.config_path.read_text()
    d.config_path.write_text(text + "\nhealth_listen = [\n")
    result = cli("status", "--config", str(d.config_path))
    assert result.returncode == 0, result.stderr
    assert re.search(r"^acme-fallback\s+-\s+webhook", result.stdout, re.M), result.stdout
    assert f"{d.config_path} does not load" in result.stderr
    assert f"127.0.0.1:{d.health_port}" in result.stderr
    recorded = d.state_dir / "health_address"
    assert recorded.read_text().strip() == f"127.0.0.1:{d.health_port}"
    assert recorded.stat().st_mode & 0o777 == 0o600
    # From another directory too: the state directory is found beside the config file.
    d.config_path.write_text(text.replace(f'state_dir = "{d.state_dir}"', 'state_dir = "state"'))
    d.config_path.write_text(d.config_path.read_text() + "typo = 1\n")
    result = cli("status", "--config", str(d.config_path), cwd=d.tmp.parent)
    assert result.returncode == 0, result.stderr
    assert "acme-fallback" in result.stdout
    assert d.stop() == 0
