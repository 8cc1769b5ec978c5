"""event.poller.slow_interval: its validation, which resources it slows, its cost and `check`."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
from qbo_events import cli, config, poll_budget
from qbo_events.config import SLOW_RESOURCES, Config
from qbo_events.errors import ConfigError
from qbo_events.quickbooks.resources import BY_NAME

SETTINGS = '[quickbooks]\nclient_id = "the-client"\nclient_secret = "client-secret-value"\n'


def instance(extra: str = "", name: str = "acme", realm: str = "1") -> str:
    return (
        f'[[instances]]\nname = "{name}"\nrealm_id = "{realm}"\nrefresh_token = "rt-{name}"\n'
        'event.vendor.type = "polling"\n'
        'event.notification.callback.url = "https://example.com/hook"\n' + extra + "\n"
    )


def load(text: str) -> Config:
    return config.loads(textwrap.dedent(text), environ={})


def poller(extra: str) -> config.Poller:
    return load(SETTINGS + instance(extra)).instances[0].event.poller


def problems(extra: str) -> list[str]:
    with pytest.raises(ConfigError) as info:
        load(SETTINGS + instance(extra))
    return info.value.problems


# Validation


def test_off_by_default_every_resource_at_the_refresh_interval() -> None:
    found = poller("event.poller.refresh_interval = 15")
    assert found.slow_interval_seconds is None
    assert {name: found.interval_for(name) for name in BY_NAME} == dict.fromkeys(BY_NAME, 900.0)


def test_zero_is_off() -> None:
    found = poller("event.poller.refresh_interval = 15\nevent.poller.slow_interval = 0")
    assert found.slow_interval_seconds is None
    assert found.interval_for("currencies") == 900.0


@pytest.mark.parametrize(
    ("value", "seconds"),
    [("240", 14_400.0), ('"240"', 14_400.0), ("15", 900.0), ('"60.5"', 3_630.0)],
)
def test_number_or_string_form(value: str, seconds: float) -> None:
    found = poller(f"event.poller.refresh_interval = 15\nevent.poller.slow_interval = {value}")
    assert found.slow_interval_seconds == pytest.approx(seconds)


@pytest.mark.parametrize("value", ["14.9", '"5"', "-240"])
def test_shorter_than_the_refresh_interval_is_an_error_naming_the_key(value: str) -> None:
    found = problems(f"event.poller.refresh_interval = 15\nevent.poller.slow_interval = {value}")
    assert found == [
        "instances[0].event.poller.slow_interval: must be 0 (off) or >= refresh_interval "
        "(15 minutes)"
    ]


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ('"often"', "must be a number of minutes (got 'often')"),
        ("nan", "must be a finite number of minutes"),
        ("inf", "must be a finite number of minutes"),
        ("1e308", "must be a finite number of minutes"),
    ],
)
def test_not_a_number_of_minutes(value: str, message: str) -> None:
    found = problems(f"event.poller.slow_interval = {value}")
    assert found == [f"instances[0].event.poller.slow_interval: {message}"]


def test_the_key_is_named_in_each_instance_that_gets_it_wrong() -> None:
    text = (
        SETTINGS
        + instance("event.poller.slow_interval = 240")
        + instance("event.poller.slow_interval = 1", name="globex", realm="2")
    )
    with pytest.raises(ConfigError) as info:
        load(text)
    assert [p.split(":")[0] for p in info.value.problems] == [
        "instances[1].event.poller.slow_interval"
    ]


# Which interval each resource gets


def test_the_six_slow_lists_get_the_slow_interval_every_other_resource_the_refresh_one() -> None:
    lists = {"currencies", "credit-terms", "payment-methods", "tax-codes", "tax-rates", "classes"}
    assert lists == SLOW_RESOURCES
    assert lists <= set(BY_NAME)
    found = poller("event.poller.refresh_interval = 15\nevent.poller.slow_interval = 240")
    intervals = {name: found.interval_for(name) for name in BY_NAME}
    assert {name for name, seconds in intervals.items() if seconds == 14_400.0} == SLOW_RESOURCES
    assert {name for name, seconds in intervals.items() if seconds == 900.0} == (
        set(BY_NAME) - SLOW_RESOURCES
    )


# What it saves


def test_the_poll_budget_counts_slow_resources_at_their_own_interval() -> None:
    every = load(SETTINGS + instance("event.poller.refresh_interval = 15")).instances[0]
    slowed = load(
        SETTINGS + instance("event.poller.refresh_interval = 15\nevent.poller.slow_interval = 240")
    ).instances[0]
    # Calls a day per company, the README's figures: one shared CDC call and three Queries a
    # cycle; slowed, tax codes and tax rates query a sixteenth as often.
    assert poll_budget.calls_per_minute(every) * 1440 == pytest.approx(4 * 96)
    assert poll_budget.calls_per_minute(slowed) * 1440 == pytest.approx(2 * 96 + 2 * 6)


def test_the_rate_warning_counts_the_slow_lists_at_their_own_interval() -> None:
    # 22 resources every 0.01 minutes: 4 calls a poll, 400 a minute; 2 * 100 + 2 * 1 = 202 with
    # the slow lists at 1 minute. Both pass half of 300.
    limit = "[quickbooks]\nrequests_per_minute = 300\n"
    fast = "event.poller.refresh_interval = 0.01"
    plain = load(SETTINGS.replace("[quickbooks]\n", limit) + instance(fast))
    slowed = load(
        SETTINGS.replace("[quickbooks]\n", limit)
        + instance(fast + "\nevent.poller.slow_interval = 1")
    )
    assert any("400 QuickBooks calls a minute" in w for w in poll_budget.warnings(plain))
    assert any("202 QuickBooks calls a minute" in w for w in poll_budget.warnings(slowed))


# check


def test_check_prints_the_slow_interval_only_when_set(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "config.toml"
    path.write_text(
        SETTINGS
        + instance("event.poller.refresh_interval = 15\nevent.poller.slow_interval = 240")
        + instance("event.poller.urls = 'invoices|tax-codes'", name="globex", realm="2")
    )
    assert cli.main(["check", "--config", str(path)]) == 0
    out = capsys.readouterr().out
    assert "acme: realm 1, polling, 22 resources every 900 s (6 of them every 14400 s) ->" in out
    assert "globex: realm 2, polling, 2 resources every 900 s ->" in out


EVERY_15 = "event.poller.refresh_interval = 15\nevent.poller.urls = 'invoices'"


def test_check_warns_when_the_configured_polls_would_pass_the_monthly_budget() -> None:
    settings = SETTINGS + "monthly_call_budget = 1000\n"
    # One CDC resource every 15 minutes: 2,880 calls in 30 days.
    found = poll_budget.warnings(load(settings + instance(EVERY_15)))
    assert any("monthly_call_budget" in w and "2,880" in w for w in found)
    roomy = SETTINGS + "monthly_call_budget = 3000\n"
    assert poll_budget.warnings(load(roomy + instance(EVERY_15))) == []
