"""The config schema: defaults, the Open Connectors forms, errors named by key path, secrets."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
from qbo_events import config, poll_budget
from qbo_events.config import Config
from qbo_events.errors import ConfigError
from qbo_events.quickbooks.resources import BY_NAME

# The run-together string printed in the Open Connectors docs: all 22 names, no separators.
DOCS_URLS = (
    "bill-paymentsbillsclassescredit-memoscredit-termscurrenciescustomersemployeesinvoices"
    "journal-entriesledger-accountspayment-methodspaymentsproductspurchase-ordersrefund-receipts"
    "sales-receiptstax-codestax-ratestime-activitiesvendor-creditsvendors"
)
WEBHOOKS = '[quickbooks]\nwebhook_verifier_token = "verifier-token-value"\n'
POLLING = '[quickbooks]\nclient_id = "the-client"\nclient_secret = "client-secret-value"\n'
BOTH = POLLING + 'webhook_verifier_token = "verifier-token-value"\n'


def instance(name: str = "acme", realm: str = "1", vendor: str = "webhook", extra: str = "") -> str:
    return (
        f'[[instances]]\nname = "{name}"\nrealm_id = "{realm}"\n'
        f'event.vendor.type = "{vendor}"\n'
        'event.notification.callback.url = "https://example.com/hook"\n' + extra + "\n"
    )


def load(text: str, **environ: str) -> Config:
    return config.loads(textwrap.dedent(text), environ=environ)


def problems(text: str, **environ: str) -> list[str]:
    with pytest.raises(ConfigError) as info:
        load(text, **environ)
    assert info.value.problems, "a ConfigError must say what is wrong"
    return info.value.problems


def poller(extra: str) -> config.Poller:
    return load(WEBHOOKS + instance(extra=extra)).instances[0].event.poller


# Defaults


def test_an_empty_file_is_every_default() -> None:
    cfg = load("")
    assert cfg.state_dir == "./state"
    assert (cfg.log.level, cfg.log.format) == ("info", "auto")
    assert cfg.http.webhook_listen == "0.0.0.0:8080"
    assert cfg.http.webhook_path == "/webhooks/quickbooks"
    assert cfg.http.health_listen == "127.0.0.1:8081"
    assert cfg.http.max_body_bytes == 2_097_152
    qb = cfg.quickbooks
    assert (qb.environment, qb.minor_version) == ("production", 75)
    assert (qb.requests_per_minute, qb.max_concurrent_requests) == (500, 10)
    assert (qb.api_base_url, qb.token_url) == ("", "")
    d = cfg.delivery
    assert (d.workers, d.timeout, d.max_in_flight_per_endpoint) == (64, 15, 16)
    assert d.retry_schedule == (5, 300, 1800, 7200, 18000, 36000, 36000)
    assert (d.format, d.shutdown_timeout) == ("open-connectors", 10)
    assert (cfg.outbox.durability, cfg.outbox.max_pending) == ("full", 1_000_000)
    assert cfg.outbox.dedupe_window_days == 7
    assert cfg.instances == []
    assert cfg.secrets() == []


def test_instance_defaults() -> None:
    cfg = load(
        POLLING + '[[instances]]\nname = "acme"\nrealm_id = "42"\n'
        'event.notification.callback.url = "https://example.com/hook"\n'
    )
    inst = cfg.instances[0]
    assert inst.event.vendor.type == "polling" and inst.polls and not inst.takes_webhooks
    assert inst.event.notification.enabled is True
    assert inst.signature_key == "" and inst.refresh_token == "" and inst.tags == []
    p = inst.event.poller
    assert p.interval_seconds == 15 * 60
    assert p.resources == tuple(BY_NAME) and len(p.resources) == 22
    assert p.overlap == 60 and p.since_time is None


def test_the_config_is_frozen() -> None:
    cfg = load(WEBHOOKS + instance())
    with pytest.raises(AttributeError):
        cfg.state_dir = "/elsewhere"  # type: ignore[misc]
    with pytest.raises(AttributeError):
        cfg.instances[0].event.poller.overlap = 1  # type: ignore[misc]


# Dotted Open Connectors keys


def test_dotted_open_connectors_keys() -> None:
    cfg = load(
        POLLING
        + WEBHOOKS.replace("[quickbooks]\n", "")
        + """
        [[instances]]
        name = "acme"
        realm_id = "9130357766900216"
        refresh_token = "refresh-token-value"
        tags = ["Docs", "Prod"]
        event.notification.enabled = true
        event.vendor.type = "hybrid"
        event.notification.callback.url = "https://example.com/qbo"
        event.notification.signature.key = "signature-key-value"
        event.poller.refresh_interval = 0.05
        event.poller.urls = ["invoices", "customers"]
        event.poller.overlap = 30
        event.poller.since = "2026-01-01T00:00:00Z"
        """
    )
    inst = cfg.instances[0]
    assert inst.polls and inst.takes_webhooks
    assert inst.callback_url == "https://example.com/qbo"
    assert inst.signature_key == "signature-key-value"
    assert inst.tags == ["Docs", "Prod"]
    assert inst.event.poller.interval_seconds == pytest.approx(3.0)
    assert inst.event.poller.resources == ("invoices", "customers")
    assert inst.event.poller.overlap == 30
    since = inst.event.poller.since_time
    assert since is not None and since.isoformat() == "2026-01-01T00:00:00+00:00"


def test_dotted_keys_and_nested_tables_are_the_same_thing() -> None:
    nested = load(
        WEBHOOKS
        + """
        [[instances]]
        name = "acme"
        realm_id = "1"
        [instances.event.vendor]
        type = "webhook"
        [instances.event.notification.callback]
        url = "https://example.com/hook"
        [instances.event.poller]
        urls = "bills"
        """
    )
    dotted = load(WEBHOOKS + instance(extra='event.poller.urls = "bills"'))
    assert nested == dotted


@pytest.mark.parametrize("vendor", ["webhook", "webhooks", "hybrid"])
def test_webhook_vendor_types_take_webhooks(vendor: str) -> None:
    inst = load(POLLING + WEBHOOKS.replace("[quickbooks]\n", "") + instance(vendor=vendor))
    assert inst.instances[0].takes_webhooks
    assert inst.instances[0].polls == (vendor == "hybrid")


# event.poller.urls


@pytest.mark.parametrize(
    "urls",
    [
        '["invoices", "customers", "bills"]',
        '"invoices|customers|bills"',
        '"invoices,customers,bills"',
        '"invoices, customers, bills"',
        '"invoices customers bills"',
        '"invoices\\ncustomers\\nbills"',
        '"""\ninvoices\ncustomers\nbills\n"""',
        '"invoicescustomersbills"',
        '"Invoices|CUSTOMERS|bills"',
        '"invoices|customers|bills|invoices"',
        '" |invoices||customers ,bills| "',
    ],
)
def test_urls_list_and_string_forms(urls: str) -> None:
    assert poller(f"event.poller.urls = {urls}").resources == ("invoices", "customers", "bills")


def test_urls_the_run_together_docs_string_names_all_22() -> None:
    resources = poller(f'event.poller.urls = "{DOCS_URLS}"').resources
    assert resources == tuple(BY_NAME)
    assert len(resources) == 22
    # Longest match: prefixes of longer names are not split off wrongly.
    assert {"bill-payments", "bills", "payment-methods", "payments"} <= set(resources)
    assert {"vendor-credits", "vendors"} <= set(resources)


@pytest.mark.parametrize("urls", ["[]", '""', '"  "'])
def test_urls_empty_means_all_22(urls: str) -> None:
    assert poller(f"event.poller.urls = {urls}").resources == tuple(BY_NAME)


@pytest.mark.parametrize(
    ("urls", "fragment"),
    [
        ('"invoices|widgets"', "widgets"),
        ('"invoicesgadgets"', "gadgets"),
        ('["invoices", "customerz"]', "customerz"),
        ('"bill-paymentsbillsXclasses"', "xclasses"),
    ],
)
def test_urls_an_unknown_fragment_is_named(urls: str, fragment: str) -> None:
    found = problems(WEBHOOKS + instance(extra=f"event.poller.urls = {urls}"))
    assert len(found) == 1
    assert found[0].startswith("instances[0].event.poller.urls: ")
    assert repr(fragment) in found[0]


def test_urls_of_the_wrong_type() -> None:
    found = problems(WEBHOOKS + instance(extra='event.poller.urls = ["invoices", 3]'))
    assert found == ["instances[0].event.poller.urls[1]: expected str, got int"]
    found = problems(WEBHOOKS + instance(extra="event.poller.urls = 3"))
    assert len(found) == 1 and found[0].startswith("instances[0].event.poller.urls: expected")


# event.poller.refresh_interval


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        ("15", 900.0),
        ('"15"', 900.0),
        ('" 15 "', 900.0),
        ("0.05", 3.0),
        ('"0.05"', 3.0),
        ("1.5", 90.0),
        ('"2.5"', 150.0),
    ],
)
def test_refresh_interval_number_string_and_fraction(value: str, seconds: float) -> None:
    assert poller(f"event.poller.refresh_interval = {value}").interval_seconds == pytest.approx(
        seconds
    )


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("0", "must be > 0"),
        ("-1", "must be > 0"),
        ('"0"', "must be > 0"),
        ('"-0.5"', "must be > 0"),
        ('"fifteen"', "must be a number of minutes (got 'fifteen')"),
        ('""', "must be a number of minutes (got '')"),
        ("nan", "must be a finite number of minutes"),
        ("inf", "must be a finite number of minutes"),
        ('"nan"', "must be a finite number of minutes"),
        ('"inf"', "must be a finite number of minutes"),
        ("true", "expected float | str, got bool"),
    ],
)
def test_refresh_interval_out_of_range_or_not_a_number(value: str, message: str) -> None:
    found = problems(WEBHOOKS + instance(extra=f"event.poller.refresh_interval = {value}"))
    assert found == [f"instances[0].event.poller.refresh_interval: {message}"]


def test_the_spec_example_error_names_the_second_instance() -> None:
    found = problems(
        WEBHOOKS
        + instance("first", "1")
        + instance("second", "2", extra="event.poller.refresh_interval = 0")
    )
    assert found == ["instances[1].event.poller.refresh_interval: must be > 0"]


# Errors name their key path


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("bogus = 1", "bogus: unknown key"),
        ("[logs]\nlevel = 'info'", "logs: unknown key; did you mean log?"),
        ("[log]\nlevle = 'info'", "log.levle: unknown key; did you mean level?"),
        ("[http]\nwebhook_port = 80", "http.webhook_port: unknown key; did you mean webhook_path?"),
        ("[delivery]\nworker = 3", "delivery.worker: unknown key; did you mean workers?"),
        (
            "[outbox]\nmax_pendings = 3",
            "outbox.max_pendings: unknown key; did you mean max_pending?",
        ),
        (
            "[quickbooks]\nclientid = 'x'",
            "quickbooks.clientid: unknown key; did you mean client_id?",
        ),
        ("state_dir = 5", "state_dir: expected str, got int"),
        (
            "[log]\nlevel = 'loud'",
            'log.level: must be one of debug, info, warning, error (got "loud")',
        ),
        ("[log]\nformat = 'xml'", 'log.format: must be one of json, console, auto (got "xml")'),
        ("[http]\nmax_body_bytes = 5", "http.max_body_bytes: must be >= 1024"),
        ("[delivery]\nworkers = 'many'", "delivery.workers: expected int, got str"),
        ("[delivery]\nworkers = 0", "delivery.workers: must be >= 1"),
        ("[delivery]\ntimeout = 0", "delivery.timeout: must be > 0.0"),
        ("[delivery]\ntimeout = nan", "delivery.timeout: must be > 0.0"),
        ("[delivery]\nshutdown_timeout = -1", "delivery.shutdown_timeout: must be >= 0.0"),
        ("[delivery]\nretry_schedule = [5, 0]", "delivery.retry_schedule[1]: must be > 0.0"),
        ("[delivery]\nretry_schedule = []", "delivery.retry_schedule: must not be empty"),
        (
            "[delivery]\nformat = 'xml'",
            'delivery.format: must be one of open-connectors, cloudevents (got "xml")',
        ),
        (
            "[outbox]\ndurability = 'some'",
            'outbox.durability: must be one of full, normal (got "some")',
        ),
        ("[outbox]\nmax_pending = 0", "outbox.max_pending: must be >= 1"),
        ("[quickbooks]\nminor_version = 70", "quickbooks.minor_version: must be >= 75"),
        (
            "[quickbooks]\nenvironment = 'dev'",
            'quickbooks.environment: must be one of production, sandbox (got "dev")',
        ),
        (
            "[quickbooks]\napi_base_url = 'ftp://x'",
            "quickbooks.api_base_url: must be an http(s) URL",
        ),
        ("[quickbooks]\ntoken_url = 'x'", "quickbooks.token_url: must be an http(s) URL"),
        ("[http]\nwebhook_listen = 'nope'", "http.webhook_listen: expected host:port, got 'nope'"),
        (
            "[http]\nhealth_listen = '1.2.3.4:99999'",
            "http.health_listen: expected host:port, got '1.2.3.4:99999'",
        ),
        # Digits of other scripts pass str.isdigit(); int() reads "٣" as 3 and "²" not at all.
        (
            "[http]\nwebhook_listen = ':\u0663'",
            "http.webhook_listen: expected host:port, got ':\u0663'",
        ),
        (
            "[http]\nhealth_listen = ':\u00b2'",
            "http.health_listen: expected host:port, got ':\u00b2'",
        ),
        ("[http]\nwebhook_path = 'hooks'", "http.webhook_path: must start with /"),
        ("[instances]\nname = 'x'", "instances: expected an array of tables ([[instances]])"),
    ],
)
def test_each_error_names_its_key_path(text: str, expected: str) -> None:
    assert problems(text) == [expected]


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        ("colour = 'red'", "instances[0].colour: unknown key"),
        (
            "event.poller.interval = 5",
            ("instances[0].event.poller.interval: unknown key; did you mean refresh_interval?"),
        ),
        ("event.vendor.kind = 'x'", "instances[0].event.vendor.kind: unknown key"),
        (
            "event.notification.callback.uri = 'x'",
            "instances[0].event.notification.callback.uri: unknown key; did you mean url?",
        ),
        ("tags = ['a', 1]", "instances[0].tags[1]: expected str, got int"),
        ("event.poller.overlap = -1", "instances[0].event.poller.overlap: must be >= 0.0"),
        (
            "event.notification.enabled = 'yes'",
            "instances[0].event.notification.enabled: expected bool, got str",
        ),
        (
            "event.poller.since = '2026-01-01T00:00:00'",
            "instances[0].event.poller.since: "
            "must be RFC 3339 (needs an explicit offset (Z or +hh:mm))",
        ),
        (
            "event.poller.since = 2999-01-01T00:00:00Z",
            "instances[0].event.poller.since: must not be in the future",
        ),
    ],
)
def test_instance_errors_name_their_key_path(extra: str, expected: str) -> None:
    assert problems(WEBHOOKS + instance(extra=extra)) == [expected]


def test_a_missing_required_key_and_a_bad_vendor_type() -> None:
    assert problems('[[instances]]\nrealm_id = "1"\n') == [
        "instances[0].name: required",
        "instances[0].event.notification.callback.url: must be an http(s) URL (got '')",
    ]
    # realm_id may be left out: connecting the company teaches it.
    assert problems(WEBHOOKS + '[[instances]]\nname = "a"\nevent.vendor.type = "webhook"\n') == [
        "instances[0].event.notification.callback.url: must be an http(s) URL (got '')",
    ]
    assert problems(WEBHOOKS + instance(vendor="email")) == [
        (
            "instances[0].event.vendor.type: must be one of polling, webhook, webhooks, hybrid"
            ' (got "email")'
        )
    ]


def test_several_errors_from_different_sections_and_instances_at_once() -> None:
    found = problems(
        """
        bogus = 1
        [log]
        level = "loud"
        [http]
        max_body_bytes = 5
        [delivery]
        workers = "x"
        [[instances]]
        name = "a"
        realm_id = "1"
        event.vendor.type = "webhook"
        event.notification.callback.url = "https://example.com/a"
        event.poller.refresh_interval = 0
        [[instances]]
        name = "b"
        realm_id = "2"
        event.vendor.type = "webhook"
        event.notification.callback.url = "https://example.com/b"
        event.poller.bogus = 1
        [[instances]]
        name = "c"
        realm_id = "3"
        event.vendor.type = "webhook"
        event.notification.callback.url = "not a url"
        event.poller.urls = "invoices|widgets"
        """
    )
    assert set(found) >= {
        "bogus: unknown key",
        'log.level: must be one of debug, info, warning, error (got "loud")',
        "http.max_body_bytes: must be >= 1024",
        "delivery.workers: expected int, got str",
        "instances[0].event.poller.refresh_interval: must be > 0",
        "instances[1].event.poller.bogus: unknown key",
        "instances[2].event.notification.callback.url: must be an http(s) URL (got 'not a url')",
    }
    assert any(p.startswith("instances[2].event.poller.urls: ") and "'widgets'" in p for p in found)
    assert len(found) == len(set(found)) == 8


def test_every_error_of_one_section_and_of_one_instance_is_reported() -> None:
    found = problems(
        """
        [log]
        level = "loud"
        format = "xml"
        [delivery]
        workers = "x"
        timeout = -1
        bogus = true
        [[instances]]
        name = "a"
        realm_id = "1"
        event.vendor.type = "webhok"
        event.notification.callback.url = "https://example.com/a"
        event.poller.bogus = 2
        event.poller.refresh_interval = []
        """
    )
    assert sorted(found) == sorted(
        [
            'log.level: must be one of debug, info, warning, error (got "loud")',
            'log.format: must be one of json, console, auto (got "xml")',
            "delivery.workers: expected int, got str",
            "delivery.timeout: must be > 0.0",
            "delivery.bogus: unknown key",
            (
                "instances[0].event.vendor.type: must be one of polling, webhook, webhooks, hybrid"
                ' (got "webhok")'
            ),
            "instances[0].event.poller.bogus: unknown key",
            "instances[0].event.poller.refresh_interval: expected float | str, got array",
        ]
    )


def test_invalid_toml_is_one_error() -> None:
    found = problems("[log\nlevel = 'info'")
    assert len(found) == 1 and found[0].startswith("invalid TOML: ")


def test_a_missing_file_names_the_path(tmp_path: Path) -> None:
    path = tmp_path / "absent.toml"
    with pytest.raises(ConfigError) as info:
        config.load(path)
    assert info.value.problems == [f"{path}: cannot read: No such file or directory"]


# Cross-field rules


def test_duplicate_instance_names() -> None:
    found = problems(
        WEBHOOKS + instance("acme", "1") + instance("other", "2") + instance("acme", "3")
    )
    assert found == ["instances[2].name: 'acme' is used by an earlier instance"]


def test_instance_name_and_realm_form() -> None:
    assert problems(WEBHOOKS + instance("a b")) == [
        "instances[0].name: must be 1-64 of A-Z a-z 0-9 . _ - (got 'a b')"
    ]
    assert problems(WEBHOOKS + instance(realm=" ")) == [
        "instances[0].realm_id: must not be blank (leave it out to learn it)"
    ]


def test_callback_url_required_only_when_notification_is_enabled() -> None:
    bare = '[[instances]]\nname = "a"\nrealm_id = "1"\nevent.vendor.type = "webhook"\n'
    assert problems(WEBHOOKS + bare) == [
        "instances[0].event.notification.callback.url: must be an http(s) URL (got '')"
    ]
    cfg = load(WEBHOOKS + bare + "event.notification.enabled = false\n")
    assert cfg.instances[0].callback_url == ""


def test_client_credentials_required_when_an_instance_polls() -> None:
    for vendor in ("polling", "hybrid"):
        found = problems(WEBHOOKS + instance(vendor=vendor))
        assert found == [
            "quickbooks.client_id: required when an instance polls",
            "quickbooks.client_secret: required when an instance polls",
        ]
    found = problems('[quickbooks]\nclient_id = "c"\n' + instance(vendor="polling"))
    assert found == ["quickbooks.client_secret: required when an instance polls"]
    # A webhook-only instance makes no API call.
    assert load(WEBHOOKS + instance(vendor="webhook")).quickbooks.client_id == ""


def test_verifier_token_required_when_an_instance_takes_webhooks() -> None:
    for vendor in ("webhook", "webhooks", "hybrid"):
        found = problems(POLLING + instance(vendor=vendor))
        assert found == [
            "quickbooks.webhook_verifier_token: required when an instance takes webhooks"
        ]
    assert load(POLLING + instance(vendor="polling")).quickbooks.webhook_verifier_token == ""


# Secrets from files


def test_relative_secret_files_are_read_from_credentials_directory(tmp_path: Path) -> None:
    creds = tmp_path / "credentials"
    creds.mkdir()
    (creds / "client_secret").write_text("client-secret-from-file\n")
    (creds / "verifier").write_text("  verifier-from-file  \n")
    (creds / "sig").write_text("signature-key-from-file")
    cfg = load(
        """
        [quickbooks]
        client_id = "c"
        client_secret_file = "client_secret"
        webhook_verifier_token_file = "verifier"
        """
        + instance(vendor="hybrid", extra='event.notification.signature.key_file = "sig"'),
        CREDENTIALS_DIRECTORY=str(creds),
    )
    assert cfg.quickbooks.client_secret == "client-secret-from-file"
    assert cfg.quickbooks.webhook_verifier_token == "verifier-from-file"
    assert cfg.instances[0].signature_key == "signature-key-from-file"
    assert set(cfg.secrets()) == {
        "client-secret-from-file",
        "verifier-from-file",
        "signature-key-from-file",
    }


def test_absolute_secret_files_ignore_credentials_directory(tmp_path: Path) -> None:
    secret = tmp_path / "elsewhere" / "verifier"
    secret.parent.mkdir()
    secret.write_text("absolute-verifier")
    cfg = load(
        f'[quickbooks]\nwebhook_verifier_token_file = "{secret}"\n' + instance(),
        CREDENTIALS_DIRECTORY=str(tmp_path / "credentials-that-do-not-exist"),
    )
    assert cfg.quickbooks.webhook_verifier_token == "absolute-verifier"


def test_relative_secret_files_without_credentials_directory_are_beside_the_config(
    tmp_path: Path,
) -> None:
    (tmp_path / "verifier").write_text("beside-the-config")
    path = tmp_path / "config.toml"
    path.write_text('[quickbooks]\nwebhook_verifier_token_file = "verifier"\n' + instance())
    cfg = config.load(path, environ={})
    assert cfg.quickbooks.webhook_verifier_token == "beside-the-config"


def test_a_secret_and_its_file_both_given() -> None:
    found = problems(
        """
        [quickbooks]
        client_id = "c"
        client_secret = "inline"
        client_secret_file = "/x"
        webhook_verifier_token = "inline"
        webhook_verifier_token_file = "/y"
        """
        + instance(
            vendor="hybrid",
            extra='event.notification.signature.key = "k"\n'
            'event.notification.signature.key_file = "/z"',
        )
    )
    assert found == [
        "quickbooks.client_secret_file: give either client_secret or client_secret_file",
        "quickbooks.webhook_verifier_token_file: "
        "give either webhook_verifier_token or webhook_verifier_token_file",
        "instances[0].event.notification.signature.key_file: give either key or key_file",
    ]


def test_unreadable_secret_files_name_the_key_and_the_path(tmp_path: Path) -> None:
    creds = tmp_path / "credentials"
    (creds / "a-directory").mkdir(parents=True)
    found = problems(
        """
        [quickbooks]
        client_id = "c"
        client_secret_file = "missing"
        webhook_verifier_token_file = "a-directory"
        """
        + instance(vendor="hybrid", extra='event.notification.signature.key_file = "/no/such/key"'),
        CREDENTIALS_DIRECTORY=str(creds),
    )
    assert f"quickbooks.client_secret_file: cannot read {creds / 'missing'}: " in found[0]
    assert "No such file or directory" in found[0]
    assert found[1] == (
        f"quickbooks.webhook_verifier_token_file: cannot read {creds / 'a-directory'}: "
        "Is a directory"
    )
    assert found[2] == (
        "instances[0].event.notification.signature.key_file: cannot read /no/such/key: "
        "No such file or directory"
    )
    # An unreadable secret counts as absent, so the rules that need it say so too.
    assert found[3:] == [
        "quickbooks.client_secret: required when an instance polls",
        "quickbooks.webhook_verifier_token: required when an instance takes webhooks",
    ]


# Config.secrets()


def test_secrets_lists_every_secret_value_and_nothing_else() -> None:
    cfg = load(
        """
        [quickbooks]
        client_id = "the-client-id"
        client_secret = "client-secret-value"
        webhook_verifier_token = "verifier-token-value"
        """
        + instance(
            "a",
            "1",
            vendor="hybrid",
            extra='refresh_token = "refresh-a"\nevent.notification.signature.key = "key-a"',
        )
        + instance("b", "2", vendor="webhook")
        + instance("c", "3", vendor="polling", extra='refresh_token = "refresh-c"')
    )
    assert sorted(cfg.secrets()) == sorted(
        ["client-secret-value", "verifier-token-value", "refresh-a", "key-a", "refresh-c"]
    )
    assert "the-client-id" not in cfg.secrets()
    assert "" not in cfg.secrets()


def test_default_path() -> None:
    assert config.default_path({}) == Path("config.toml")
    assert config.default_path({"QBO_EVENTS_CONFIG": "/etc/q.toml"}) == Path("/etc/q.toml")
    assert config.default_path({"QBO_EVENTS_CONFIG": ""}) == Path("config.toml")


# Secret files that hold nothing


@pytest.mark.parametrize("content", ["", "\n", "  \t\n  \n"])
def test_an_empty_secret_file_is_an_error_naming_its_key(tmp_path: Path, content: str) -> None:
    for name in ("client_secret", "verifier", "sig"):
        (tmp_path / name).write_text(content)
    found = problems(
        """
        [quickbooks]
        client_id = "c"
        client_secret_file = "client_secret"
        webhook_verifier_token_file = "verifier"
        """
        + instance(vendor="hybrid", extra='event.notification.signature.key_file = "sig"'),
        CREDENTIALS_DIRECTORY=str(tmp_path),
    )
    assert found[:3] == [
        f"quickbooks.client_secret_file: {tmp_path / 'client_secret'} is empty",
        f"quickbooks.webhook_verifier_token_file: {tmp_path / 'verifier'} is empty",
        f"instances[0].event.notification.signature.key_file: {tmp_path / 'sig'} is empty",
    ]


def test_an_empty_signature_key_file_never_turns_signing_off(tmp_path: Path) -> None:
    (tmp_path / "sig").write_text("\n")
    path = tmp_path / "config.toml"
    path.write_text(WEBHOOKS + instance(extra='event.notification.signature.key_file = "sig"'))
    with pytest.raises(ConfigError) as info:
        config.load(path, environ={})
    assert info.value.problems == [
        f"instances[0].event.notification.signature.key_file: {tmp_path / 'sig'} is empty"
    ]


# state_dir follows the config file, as the *_file keys do


def test_a_relative_state_dir_is_beside_the_config_file(tmp_path: Path) -> None:
    (tmp_path / "etc").mkdir()
    path = tmp_path / "etc" / "config.toml"
    path.write_text('state_dir = "./state"\n')
    assert config.load(path, environ={}).state_dir == str(tmp_path / "etc" / "state")
    path.write_text('state_dir = "../var/qbo"\n')
    assert config.load(path, environ={}).state_dir == str(tmp_path / "var" / "qbo")
    path.write_text("")
    assert config.load(path, environ={}).state_dir == str(tmp_path / "etc" / "state")


def test_an_absolute_state_dir_is_kept(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_text(f'state_dir = "{tmp_path / "elsewhere"}"\n')
    assert config.load(path, environ={}).state_dir == str(tmp_path / "elsewhere")


def test_loads_resolves_state_dir_against_its_base_dir(tmp_path: Path) -> None:
    cfg = config.loads('state_dir = "s"\n', environ={}, base_dir=tmp_path)
    assert cfg.state_dir == str(tmp_path / "s")


# check's error messages: every error, the allowed values, the nearest known key


def test_a_bad_enum_value_does_not_hide_the_instances_other_errors() -> None:
    found = problems(
        WEBHOOKS
        + """
        [[instances]]
        name = "a b"
        realm_id = "1"
        event.vendor.type = "pollng"
        event.notification.callback.url = "not a url"
        event.poller.refresh_interval = 0
        event.poller.urls = "invoices|widgets"
        """
    )
    assert found[:4] == [
        "instances[0].event.vendor.type: must be one of polling, webhook, webhooks, hybrid"
        ' (got "pollng")',
        "instances[0].name: must be 1-64 of A-Z a-z 0-9 . _ - (got 'a b')",
        "instances[0].event.notification.callback.url: must be an http(s) URL (got 'not a url')",
        "instances[0].event.poller.refresh_interval: must be > 0",
    ]
    assert found[4].startswith("instances[0].event.poller.urls: ") and "'widgets'" in found[4]
    assert len(found) == 5


def test_a_missing_name_does_not_hide_the_instances_other_errors() -> None:
    found = problems(
        WEBHOOKS + '[[instances]]\nrealm_id = "1"\nevent.poller.refresh_interval = -2\n'
        'event.notification.callback.url = "https://example.com/a"\n'
    )
    assert found == [
        "instances[0].name: required",
        "instances[0].event.poller.refresh_interval: must be > 0",
    ]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "event.poller.refresh_intervall = 5",
            "instances[0].event.poller.refresh_intervall: unknown key;"
            " did you mean refresh_interval?",
        ),
        (
            "event.poller.url = 'bills'",
            "instances[0].event.poller.url: unknown key; did you mean urls?",
        ),
        ("realmid = '1'", "instances[0].realmid: unknown key; did you mean realm_id?"),
        (
            "event.notifcation.enabled = true",
            "instances[0].event.notifcation: unknown key; did you mean notification?",
        ),
    ],
)
def test_a_misspelt_instance_key_gets_the_nearest_known_key(text: str, expected: str) -> None:
    assert problems(WEBHOOKS + instance(extra=text)) == [expected]


@pytest.mark.parametrize(
    ("value", "shown"), [("nan", "nan"), ("-inf", "-inf"), ("3", "3"), ("[1, 'a']", '[1,"a"]')]
)
def test_a_bad_enum_value_of_another_type_is_shown_as_written(value: str, shown: str) -> None:
    assert problems(f"[log]\nlevel = {value}\n") == [
        f"log.level: must be one of debug, info, warning, error (got {shown})"
    ]


def test_a_misspelt_section_key_gets_the_nearest_known_key() -> None:
    assert problems("[delivery]\nretry_schedul = [1]\n") == [
        "delivery.retry_schedul: unknown key; did you mean retry_schedule?"
    ]
    assert problems("state_dri = 'x'\n") == ["state_dri: unknown key; did you mean state_dir?"]
    assert problems("[[instance]]\nname = 'a'\n") == [
        "instance: unknown key; did you mean instances?"
    ]
    # Nothing near: no guess.
    assert problems("[delivery]\nzzz = 1\n") == ["delivery.zzz: unknown key"]


# Warnings: polling faster than QuickBooks serves well (check prints them; the daemon logs them)


def test_the_default_polling_draws_no_warning() -> None:
    cfg = load(BOTH + instance(vendor="polling") + instance("b", "1", vendor="hybrid"))
    assert poll_budget.warnings(cfg) == []


def test_polling_more_often_than_once_a_minute_is_a_warning_not_an_error() -> None:
    cfg = load(
        BOTH
        + instance(
            vendor="polling",
            extra='event.poller.refresh_interval = 0.5\nevent.poller.urls = "bills"',
        )
        + instance("b", "2", vendor="hybrid", extra="event.poller.refresh_interval = 1")
        # A webhook-only instance never polls, whatever its interval says.
        + instance("c", "3", vendor="webhook", extra="event.poller.refresh_interval = 0.01")
    )
    assert poll_budget.warnings(cfg) == [
        "instances[0].event.poller.refresh_interval: 0.5 minutes is shorter than QuickBooks"
        " serves well (1 minute or more); most polls would find nothing, and webhooks"
        " (vendor type hybrid) bring changes sooner"
    ]


def test_instances_sharing_a_realm_share_its_request_budget() -> None:
    limits = POLLING + "requests_per_minute = 10\n"
    shared = load(
        limits
        + instance("a", "7", vendor="polling", extra="event.poller.refresh_interval = 1")
        + instance("b", "7", vendor="polling", extra="event.poller.refresh_interval = 1")
    )
    assert poll_budget.warnings(shared) == [
        "realm 7 (a, b): polling makes about 8 QuickBooks calls a minute, more than 5 (half of"
        " quickbooks.requests_per_minute = 10); polls would queue behind the limit and fall"
        " behind. Poll fewer resources (event.poller.urls) or less often"
        " (event.poller.refresh_interval)"
    ]
    apart = load(
        limits
        + instance("a", "7", vendor="polling", extra="event.poller.refresh_interval = 1")
        + instance("b", "8", vendor="polling", extra="event.poller.refresh_interval = 1")
    )
    assert poll_budget.warnings(apart) == []


def test_a_fast_poll_of_every_resource_warns_twice() -> None:
    cfg = load(POLLING + instance(vendor="polling", extra="event.poller.refresh_interval = 0.01"))
    found = poll_budget.warnings(cfg)
    assert len(found) == 2
    assert found[0].startswith("instances[0].event.poller.refresh_interval: 0.01 minutes")
    assert found[1].startswith("realm 1 (acme): polling makes about 400 QuickBooks calls a minute")


@pytest.mark.parametrize(
    ("webhook", "health", "clash"),
    [
        ("127.0.0.1:8080", "127.0.0.1:8080", True),
        ("0.0.0.0:8080", "127.0.0.1:8080", True),
        ("127.0.0.1:8080", "0.0.0.0:8080", True),
        ("[::]:8080", "[::1]:8080", True),
        ("0.0.0.0:8080", "[::1]:8080", False),  # the wildcard of the other family
        ("127.0.0.1:8080", "[::]:8080", False),
        ("127.0.0.1:8080", "127.0.0.2:8080", False),
        ("0.0.0.0:8080", "0.0.0.0:8081", False),
    ],
)
def test_listen_addresses_clash_only_where_the_kernel_would_refuse(
    webhook: str, health: str, clash: bool
) -> None:
    text = f"[http]\nwebhook_listen = '{webhook}'\nhealth_listen = '{health}'"
    try:
        found = load(text).http is None
    except ConfigError as exc:
        found = any("clashes with http.webhook_listen" in p for p in exc.problems)
    assert found == clash
