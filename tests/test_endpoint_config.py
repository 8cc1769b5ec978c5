"""The endpoint health keys of [delivery]: defaults, the alert_url check, the alert key file."""

from __future__ import annotations

from pathlib import Path

import pytest
from qbo_events import config
from qbo_events.errors import ConfigError

INSTANCE = """
[[instances]]
name = "acme"
realm_id = "1"
event.vendor.type = "webhook"
event.notification.callback.url = "https://Example.com:443/hook/"
"""
BASE = '[quickbooks]\nwebhook_verifier_token = "t"\n'


def problems(text: str) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        config.loads(BASE + text + INSTANCE)
    return caught.value.problems


def test_defaults_pause_after_a_day_and_probe_every_five_minutes() -> None:
    delivery = config.loads(BASE + INSTANCE).delivery
    assert (delivery.pause_after, delivery.probe_interval) == (86400.0, 300.0)
    assert delivery.alert_url == "" and delivery.alert_key == ""


def test_alert_url_may_not_be_a_callback_url() -> None:
    found = problems('[delivery]\nalert_url = "https://example.com/hook"\n')
    assert found == ["delivery.alert_url: must differ from instances[0]'s callback URL"]
    ok = config.loads(BASE + '[delivery]\nalert_url = "https://example.com/alerts"\n' + INSTANCE)
    assert ok.delivery.alert_url == "https://example.com/alerts"


def test_bad_values_name_their_keys() -> None:
    assert problems('[delivery]\nalert_url = "ftp://x"\n') == [
        "delivery.alert_url: must be an http(s) URL (got 'ftp://x')"
    ]
    assert problems("[delivery]\nprobe_interval = 0\n") == [
        "delivery.probe_interval: must be > 0.0"
    ]
    assert problems("[delivery]\npause_after = inf\n") == [
        "delivery.pause_after: must be a finite number"
    ]


def test_alert_key_file_is_read_and_redacted(tmp_path: Path) -> None:
    (tmp_path / "alert.key").write_text("alert-secret\n")
    path = tmp_path / "config.toml"
    path.write_text(BASE + '[delivery]\nalert_key_file = "alert.key"\n' + INSTANCE)
    loaded = config.load(path)
    assert loaded.delivery.alert_key == "alert-secret"
    assert "alert-secret" in loaded.secrets()
    path.write_text(BASE + '[delivery]\nalert_key = "a"\nalert_key_file = "alert.key"\n' + INSTANCE)
    with pytest.raises(ConfigError) as caught:
        config.load(path)
    assert caught.value.problems == [
        "delivery.alert_key_file: give either alert_key or alert_key_file"
    ]
