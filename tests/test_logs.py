"""Log lines: JSON and console formats, bound instance/resource, and the redaction of secrets."""

from __future__ import annotations

import asyncio
import datetime
import io
import logging
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
import structlog
from qbo_events import logs

SECRET = "client-secret-Zx81kq"
TOKEN = "AB11700000000cK9xQwRefreshTokenValue"


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(autouse=True)
def clean_logging(restore_logging: None) -> Iterator[None]:
    """Each test configures logging for itself; leave the process as it was found."""
    yield
    structlog.contextvars.clear_contextvars()
    logs.set_secrets([])


@pytest.fixture
def out() -> io.StringIO:
    stream = io.StringIO()
    logs.configure("info", "json", stream=stream)
    logs.set_secrets([SECRET, TOKEN])
    return stream


def lines(stream: io.StringIO) -> list[dict[str, Any]]:
    return [orjson.loads(line) for line in stream.getvalue().splitlines()]


class Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


# Format


def test_json_line_format(out: io.StringIO) -> None:
    log = logs.get_logger(instance="acme", resource="invoices")
    log.info("polled", changes=3, cursor="2026-11-27T13:04:47Z")
    [line] = lines(out)
    assert list(line)[:3] == ["timestamp", "level", "event"]
    assert line["level"] == "info"
    assert line["event"] == "polled"
    assert line["instance"] == "acme"
    assert line["resource"] == "invoices"
    assert line["changes"] == 3
    stamp = datetime.datetime.fromisoformat(line["timestamp"])
    assert stamp.utcoffset() == datetime.timedelta(0)
    now = datetime.datetime.now(datetime.UTC)
    assert abs((now - stamp).total_seconds()) < 60
    assert out.getvalue().endswith("\n")
    assert out.getvalue().count("\n") == 1


def test_bound_keys_reach_every_line(out: io.StringIO) -> None:
    log = logs.get_logger(instance="acme").bind(resource="bills")
    log.warning("slow")
    log.error("failed", status=503)
    parsed = lines(out)
    assert [(p["instance"], p["resource"], p["level"]) for p in parsed] == [
        ("acme", "bills", "warning"),
        ("acme", "bills", "error"),
    ]


@pytest.mark.anyio
async def test_context_bound_in_a_task_stays_in_that_task(out: io.StringIO) -> None:
    log = logs.get_logger()

    async def loop(instance: str, resource: str) -> None:
        structlog.contextvars.bind_contextvars(instance=instance, resource=resource)
        await asyncio.sleep(0)
        log.info("poll")

    async with asyncio.TaskGroup() as group:
        group.create_task(loop("acme", "invoices"))
        group.create_task(loop("globex", "customers"))
    log.info("outside")
    seen = {(p.get("instance"), p.get("resource"), p["event"]) for p in lines(out)}
    assert seen == {
        ("acme", "invoices", "poll"),
        ("globex", "customers", "poll"),
        (None, None, "outside"),
    }


def test_level_filters_and_a_reconfigure_reaches_loggers_bound_before(out: io.StringIO) -> None:
    log = logs.get_logger(instance="acme").bind(resource="items")
    log.debug("hidden")
    log.info("shown")
    logs.configure("debug", "json", stream=out)
    log.debug("now shown")
    assert [p["event"] for p in lines(out)] == ["shown", "now shown"]


def test_console_format(out: io.StringIO) -> None:
    console = io.StringIO()
    logs.configure("info", "console", stream=console)
    logs.get_logger(instance="acme", resource="invoices").info("polled", token_count=2)
    text = console.getvalue()
    assert "polled" in text
    assert "instance=acme" in text
    assert "resource=invoices" in text
    assert "\x1b[" not in text  # no colours when the stream is not a terminal


@pytest.mark.parametrize(("stream", "expect_json"), [(io.StringIO, True), (Tty, False)])
def test_auto_chooses_console_on_a_terminal(stream: type[io.StringIO], expect_json: bool) -> None:
    target = stream()
    logs.configure("info", "auto", stream=target)
    logs.get_logger().info("hello")
    text = target.getvalue()
    assert text.startswith("{") is expect_json


def test_standard_library_logging_goes_through_the_same_chain(out: io.StringIO) -> None:
    logging.getLogger("aiohttp.access").warning("GET /cb?refresh_token=%s 200", TOKEN)
    logging.getLogger("aiohttp.access").debug("below the level")
    [line] = lines(out)
    assert line["logger"] == "aiohttp.access"
    assert line["level"] == "warning"
    assert TOKEN not in out.getvalue()
    assert line["event"] == "GET /cb?refresh_token=[REDACTED] 200"


def test_bad_level_or_format_is_refused() -> None:
    with pytest.raises(ValueError, match="level"):
        logs.configure("verbose", "json")
    with pytest.raises(ValueError, match="format"):
        logs.configure("info", "xml")


# Redaction


def test_registered_secrets_are_redacted_in_messages(out: io.StringIO) -> None:
    logs.get_logger().info(f"token endpoint refused {SECRET}")
    [line] = lines(out)
    assert line["event"] == "token endpoint refused [REDACTED]"
    assert SECRET not in out.getvalue()


def test_registered_secrets_are_redacted_in_bound_and_nested_values(out: io.StringIO) -> None:
    log = logs.get_logger(instance="acme", note=f"key {SECRET}")
    log.info(
        "request",
        body={"grant": {"value": TOKEN, "list": [1, f"x{SECRET}y", (TOKEN,)]}},
        headers=[("X-Debug", TOKEN)],
    )
    text = out.getvalue()
    assert SECRET not in text
    assert TOKEN not in text
    [line] = lines(out)
    assert line["note"] == "key [REDACTED]"
    assert line["body"] == {
        "grant": {"value": "[REDACTED]", "list": [1, "x[REDACTED]y", ["[REDACTED]"]]}
    }
    assert line["headers"] == [["X-Debug", "[REDACTED]"]]


def test_secrets_are_redacted_in_exception_tracebacks(out: io.StringIO) -> None:
    def refresh(refresh_token: str) -> None:
        raise RuntimeError(f"invalid_grant for {refresh_token}")

    try:
        refresh(TOKEN)
    except RuntimeError:
        logs.get_logger(instance="acme").exception("refresh failed")
    text = out.getvalue()
    assert TOKEN not in text
    [line] = lines(out)
    assert line["level"] == "error"
    assert "Traceback (most recent call last)" in line["exception"]
    assert "RuntimeError: invalid_grant for [REDACTED]" in line["exception"]


def test_secrets_are_redacted_in_console_tracebacks() -> None:
    console = io.StringIO()
    logs.configure("info", "console", stream=console)
    logs.set_secrets([SECRET])
    try:
        raise ValueError(f"bad secret {SECRET}")
    except ValueError:
        logs.get_logger().exception("failed")
    text = console.getvalue()
    assert "ValueError: bad secret [REDACTED]" in text
    assert SECRET not in text


def test_objects_are_rendered_before_redaction(out: io.StringIO) -> None:
    class Credentials:
        def __repr__(self) -> str:
            return f"Credentials(secret={SECRET!r})"

    logs.get_logger().info("loaded", credentials=Credentials(), error=ValueError(TOKEN))
    assert SECRET not in out.getvalue()
    assert TOKEN not in out.getvalue()


def test_secret_named_keys_are_redacted_even_unregistered(out: io.StringIO) -> None:
    logs.get_logger().info(
        "tokens", access_token="eyJhbGciOi.unregistered", payload={"Refresh-Token": "rt-unknown"}
    )
    [line] = lines(out)
    assert line["access_token"] == "[REDACTED]"
    assert line["payload"] == {"Refresh-Token": "[REDACTED]"}


def test_set_secrets_replaces_the_registry() -> None:
    logs.set_secrets(["first-secret-value"])
    logs.register_secrets(["second-secret-value"])
    assert logs.redact("first-secret-value second-secret-value") == "[REDACTED] [REDACTED]"
    logs.set_secrets(["third-secret-value"])
    assert logs.redact("first-secret-value third-secret-value") == "first-secret-value [REDACTED]"


def test_short_values_are_not_registered() -> None:
    logs.set_secrets(["abc", "12345", ""])
    assert logs.redact("abc 12345 abcdef") == "abc 12345 abcdef"


def test_encoded_forms_of_a_secret_are_redacted() -> None:
    secret = 'p/ss+w rd"long'
    logs.set_secrets([secret])
    assert logs.redact("client_id=x&pw=p%2Fss%2Bw%20rd%22long") == "client_id=x&pw=[REDACTED]"
    assert logs.redact("pw=p%2Fss%2Bw+rd%22long") == "pw=[REDACTED]"
    assert logs.redact('{"pw": "p/ss+w rd\\"long"}') == '{"pw": "[REDACTED]"}'


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Authorization: Bearer eyJhbGciOiJSUzI1NiJ9.e30.sig", "Authorization: [REDACTED]"),
        ("sent Bearer eyJhbGciOiJSUzI1NiJ9.e30.sig-_ ok", "sent Bearer [REDACTED] ok"),
        ("{'Authorization': 'Basic Y2xpZW50OnNlY3JldA=='}", "{'Authorization': '[REDACTED]'}"),
        (
            "grant_type=refresh_token&refresh_token=AB11.x-y_z&client_id=abc",
            "grant_type=refresh_token&refresh_token=[REDACTED]&client_id=abc",
        ),
        (
            '{"access_token": "eyJ.a.b", "expires_in": 3600, "x_refresh_token_expires_in": 1}',
            '{"access_token": "[REDACTED]", "expires_in": 3600, "x_refresh_token_expires_in": 1}',
        ),
        ('{"refresh_token":"AB11abc"}', '{"refresh_token":"[REDACTED]"}'),
        ("client_secret=hunter2hunter2 next", "client_secret=[REDACTED] next"),
        ("key whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw used", "key [REDACTED] used"),
        (
            "token eyJlbmMiOiJBMTI4Q0JDIn0..iv_-x.cipher-text.tag expired",
            "token [REDACTED] expired",
        ),
        ("id eyJraWQiOiJyczI1NiJ9.eyJzdWIiOiIxIn0.c2ln,", "id [REDACTED],"),
        ("keyJumpers eyJ alone", "keyJumpers eyJ alone"),
        ("nothing to see: invoices 42 polled", "nothing to see: invoices 42 polled"),
        (
            "the bearer token expired, basic checks pass",
            "the bearer token expired, basic checks pass",
        ),
        ("status: needs re-authorization: acme", "status: needs re-authorization: acme"),
    ],
)
def test_token_shapes_are_redacted_unregistered(text: str, expected: str) -> None:
    assert logs.redact(text) == expected
    # Idempotent: redacting twice changes nothing more.
    assert logs.redact(expected) == expected


def test_bearer_tokens_are_redacted_in_log_lines(out: io.StringIO) -> None:
    logs.get_logger(instance="acme").info(
        "request", headers={"Authorization": "Bearer eyJraWQiOi.abc.def", "Accept": "json"}
    )
    logs.get_logger().info("retrying with Bearer eyJraWQiOi.abc.def")
    assert "eyJraWQiOi" not in out.getvalue()
    first, second = lines(out)
    assert first["headers"] == {"Authorization": "[REDACTED]", "Accept": "json"}
    assert second["event"] == "retrying with Bearer [REDACTED]"


def test_redaction_of_a_long_near_miss_takes_linear_time() -> None:
    """A run of token-like fragments (an attacker's body quoted in an error, say) must not make
    the redaction backtrack quadratically: 160 kB took a minute with a naive pattern."""
    code = (
        "from qbo_events import logs\n"
        "text = '-eyJ' * 40_000 + ' eyJhbGciOiJIUzI1NiJ9.e30.c2ln'\n"
        "assert logs.redact(text).endswith(' [REDACTED]')\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=20)


def test_lines_to_the_journal_carry_their_syslog_priority(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On the stream systemd names in $JOURNAL_STREAM, each line starts with `<N>`, which
    journald turns into the entry's priority (so `journalctl -p warning` works) and strips."""
    with (tmp_path / "journal").open("w+") as journal:
        stat = os.fstat(journal.fileno())
        monkeypatch.setenv("JOURNAL_STREAM", f"{stat.st_dev}:{stat.st_ino}")
        logs.configure("debug", "json", stream=journal)
        logs.get_logger().debug("a debug line")
        logs.get_logger().warning("a warning", token="s3cr3t-value")
        logging.getLogger("aiohttp.server").error("an error from a library")
        journal.seek(0)
        written = journal.read().splitlines()
    assert [line[:3] for line in written] == ["<7>", "<4>", "<3>"]
    assert orjson.loads(written[1][3:])["token"] == "[REDACTED]"
    assert orjson.loads(written[2][3:])["event"] == "an error from a library"


def test_lines_elsewhere_have_no_priority_prefix(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with (tmp_path / "journal").open("w+") as journal, (tmp_path / "other").open("w+") as other:
        stat = os.fstat(journal.fileno())
        monkeypatch.setenv("JOURNAL_STREAM", f"{stat.st_dev}:{stat.st_ino}")
        logs.configure("info", "json", stream=other)
        logs.get_logger().warning("a warning")
        other.seek(0)
        assert other.read().startswith("{")
