"""The TOML configuration: frozen msgspec Structs, `load(path) -> Config`, and `ConfigError`."""

from __future__ import annotations

import datetime as dt
import difflib
import math
import os
import re
import tomllib
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Annotated, Any, Final, Literal, get_args, get_origin
from urllib.parse import urlsplit

import msgspec
from msgspec import Meta, field

from qbo_events.errors import ConfigError
from qbo_events.quickbooks.resources import BY_NAME, parse_resource_list
from qbo_events.sinks.signing import key_bytes

Positive = Annotated[float, Meta(gt=0)]
PositiveInt = Annotated[int, Meta(gt=0)]
NonNegative = Annotated[float, Meta(ge=0)]


class LogConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    level: Literal["debug", "info", "warning", "error"] = "info"
    format: Literal["json", "console", "auto"] = "auto"


class HttpConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    webhook_listen: str = "0.0.0.0:8080"
    webhook_path: str = "/webhooks/quickbooks"
    health_listen: str = "127.0.0.1:8081"
    max_body_bytes: Annotated[int, Meta(ge=1024)] = 2_097_152
    max_connections: PositiveInt = 1024
    read_timeout: Positive = 10.0
    # How browsers reach the webhook listener (https://events.example.com); empty = unknown.
    public_base_url: str = ""
    # The bearer token the admin API's actions require; without one they answer 403.
    admin_token: str = ""
    admin_token_file: str = ""


class QuickBooksConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    environment: Literal["production", "sandbox"] = "production"
    client_id: str = ""
    client_secret: str = ""
    client_secret_file: str = ""
    webhook_verifier_token: str = ""
    webhook_verifier_token_file: str = ""
    api_base_url: str = ""
    token_url: str = ""
    minor_version: Annotated[int, Meta(ge=75)] = 75
    requests_per_minute: PositiveInt = 500
    max_concurrent_requests: PositiveInt = 10
    # The redirect URI registered at Intuit; empty = {http.public_base_url}{redirect_path}.
    redirect_uri: str = ""
    redirect_path: str = "/oauth/callback"
    reconnect_warning_days: PositiveInt = 30
    # Intuit meters reads per app and month; 0 sets no budget. See quickbooks/budget.py.
    monthly_call_budget: Annotated[int, Meta(ge=0)] = 0


class DeliveryConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    workers: PositiveInt = 64
    timeout: Positive = 15.0
    retry_schedule: tuple[Positive, ...] = (5, 300, 1800, 7200, 18000, 36000, 36000)
    max_in_flight_per_endpoint: PositiveInt = 16
    format: Literal["open-connectors", "cloudevents"] = "open-connectors"
    shutdown_timeout: NonNegative = 10.0
    # Seconds of continuous failure that pause an endpoint (only probes then); 0 never pauses.
    pause_after: NonNegative = 86400.0
    # Seconds between the probes of a paused endpoint.
    probe_interval: Positive = 300.0
    # Where endpoint health notices go (failing, paused, recovered); empty sends none.
    alert_url: str = ""
    alert_key: str = ""
    alert_key_file: str = ""


class OutboxConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    durability: Literal["full", "normal"] = "full"
    max_pending: PositiveInt = 1_000_000
    dedupe_window_days: Positive = 7.0
    # Delivered events and every attempt are kept this many days; 0 keeps none.
    history_days: Annotated[float, Meta(ge=0)] = 7.0


class Callback(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    url: str = ""


class Signature(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    key: str = ""
    key_file: str = ""
    # The key being rotated out: while set, `webhook-signature` carries its signature too.
    previous_key: str = ""
    previous_key_file: str = ""


class Notification(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    enabled: bool = True
    connection_events: bool = True
    callback: Callback = field(default_factory=Callback)
    signature: Signature = field(default_factory=Signature)


class Vendor(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    type: Literal["polling", "webhook", "webhooks", "hybrid"] = "polling"


# Lists that change seldom, so event.poller.slow_interval may poll them less often.
SLOW_RESOURCES: Final = frozenset(
    {"classes", "credit-terms", "currencies", "payment-methods", "tax-codes", "tax-rates"}
)


class Poller(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    # The string forms are Open Connectors' own ("15", "invoices|customers"); the properties
    # below give the parsed values, which validation has already proven parseable.
    refresh_interval: float | str = 15.0
    # Minutes for the SLOW_RESOURCES; 0 (the default) polls them every refresh_interval too.
    slow_interval: float | str = 0.0
    urls: list[str] | str = field(default_factory=list)
    overlap: NonNegative = 60.0
    since: str = ""

    @property
    def interval_seconds(self) -> float:
        return float(self.refresh_interval) * 60.0

    @property
    def slow_interval_seconds(self) -> float | None:
        """The slow resources' interval, or None when they poll at the refresh interval."""
        minutes = float(self.slow_interval)
        return minutes * 60.0 if minutes else None

    def interval_for(self, resource: str) -> float:
        """Seconds between polls of `resource` (an Open Connectors name)."""
        slow = self.slow_interval_seconds
        return slow if slow is not None and resource in SLOW_RESOURCES else self.interval_seconds

    @property
    def resources(self) -> tuple[str, ...]:
        """The resources named, or all 22 when none are."""
        return parse_resource_list(self.urls) or tuple(BY_NAME)

    @property
    def since_time(self) -> dt.datetime | None:
        return _parse_rfc3339(self.since) if self.since else None


class EventSettings(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    notification: Notification = field(default_factory=Notification)
    vendor: Vendor = field(default_factory=Vendor)
    poller: Poller = field(default_factory=Poller)


class Instance(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    name: str
    # Empty: learned by connecting the company (`qbo-events connect`).
    realm_id: str = ""
    refresh_token: str = ""
    tags: list[str] = field(default_factory=list)
    event: EventSettings = field(default_factory=EventSettings)

    @property
    def polls(self) -> bool:
        return self.event.vendor.type in ("polling", "hybrid")

    @property
    def takes_webhooks(self) -> bool:
        return self.event.vendor.type in ("webhook", "webhooks", "hybrid")

    @property
    def signature_key(self) -> str:
        return self.event.notification.signature.key

    @property
    def previous_signature_key(self) -> str:
        return self.event.notification.signature.previous_key

    @property
    def callback_url(self) -> str:
        return self.event.notification.callback.url


class Config(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    state_dir: str = "./state"
    log: LogConfig = field(default_factory=LogConfig)
    http: HttpConfig = field(default_factory=HttpConfig)
    quickbooks: QuickBooksConfig = field(default_factory=QuickBooksConfig)
    delivery: DeliveryConfig = field(default_factory=DeliveryConfig)
    outbox: OutboxConfig = field(default_factory=OutboxConfig)
    instances: list[Instance] = field(default_factory=list)

    def secrets(self) -> list[str]:
        """Every secret value in this config, for the log redaction step."""
        values = [
            self.quickbooks.client_secret,
            self.quickbooks.webhook_verifier_token,
            self.http.admin_token,
        ]
        for instance in self.instances:
            values += [
                instance.refresh_token,
                instance.signature_key,
                instance.previous_signature_key,
            ]
        values.append(self.delivery.alert_key)
        return [v for v in values if v]

    def instance(self, name: str) -> Instance | None:
        return next((i for i in self.instances if i.name == name), None)


_SECTIONS: Final[dict[str, Any]] = {
    "state_dir": str,
    "log": LogConfig,
    "http": HttpConfig,
    "quickbooks": QuickBooksConfig,
    "delivery": DeliveryConfig,
    "outbox": OutboxConfig,
}
_NAME: Final = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
_BARE_KEY: Final = re.compile(r"[A-Za-z0-9_-]+")
# The deepest real key (instances[0].event.notification.signature.key_file) is 6 levels down.
_MAX_DEPTH: Final = 16


def default_path(environ: Mapping[str, str] = os.environ) -> Path:
    return Path(environ.get("QBO_EVENTS_CONFIG") or "config.toml")


def load(path: str | Path, environ: Mapping[str, str] = os.environ) -> Config:
    """Read, decode and validate a config file; raise ConfigError listing every problem."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError([f"{path}: cannot read: {exc.strerror or exc}"]) from None
    return loads(text, environ=environ, base_dir=Path(path).resolve().parent)


def loads(
    text: str, *, environ: Mapping[str, str] = os.environ, base_dir: Path | None = None
) -> Config:
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError([f"invalid TOML: {exc}"]) from None
    except RecursionError:
        raise ConfigError(["invalid TOML: arrays or tables nested too deeply"]) from None
    deep = _too_deep(data)
    if deep is not None:
        raise ConfigError([f"{deep}: nested more than {_MAX_DEPTH} deep"])
    problems: list[str] = []
    config = _decode(_datetimes_as_text(data), problems)
    if config is not None:
        config = _resolve_secrets(config, environ, base_dir or Path.cwd(), problems)
        problems += validate(config)
    if problems or config is None:
        raise ConfigError(problems)
    if base_dir is not None:
        # Like the `*_file` keys, a relative state_dir follows the config file, not the shell's
        # working directory: `deliveries list` run from elsewhere must read the daemon's outbox.
        config = msgspec.structs.replace(
            config, state_dir=os.path.normpath(base_dir / config.state_dir)
        )
    return config


def _too_deep(data: dict[str, Any]) -> str | None:
    """The path of the first value nested past _MAX_DEPTH, or None. Without recursion, so that
    no file can overflow the stack here, nor in the recursive checks it guards."""
    stack: list[tuple[str, Any, int]] = [(_quoted(k), v, 1) for k, v in data.items()]
    while stack:
        path, value, depth = stack.pop()
        if depth > _MAX_DEPTH:
            return path
        if isinstance(value, dict):
            stack += [(f"{path}.{_quoted(k)}", v, depth + 1) for k, v in value.items()]
        elif isinstance(value, list):
            stack += [(f"{path}[{i}]", v, depth + 1) for i, v in enumerate(value)]
    return None


def _quoted(key: str) -> str:
    """A key as a path shows it: bare when TOML allows, else quoted, so that every problem is
    one line starting with its key path."""
    return key if _BARE_KEY.fullmatch(key) else msgspec.json.encode(key).decode()


def _datetimes_as_text(value: Any) -> Any:
    """TOML's bare datetimes become RFC 3339 text, the one form the Structs declare."""
    if isinstance(value, dict):
        return {k: _datetimes_as_text(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_datetimes_as_text(v) for v in value]
    if isinstance(value, dt.datetime | dt.date | dt.time):
        return value.isoformat()
    return value


def _decode(data: dict[str, Any], problems: list[str]) -> Config | None:
    """Decode section by section, and a section that fails key by key, so that `check` can
    report every error rather than msgspec's first."""
    for key in data:
        if key not in _SECTIONS and key != "instances":
            problems.append(_unknown_key(_quoted(key), key, [*_SECTIONS, "instances"]))
    parts: dict[str, Any] = {}
    for key, kind in _SECTIONS.items():
        if key in data:
            try:
                parts[key] = msgspec.convert(data[key], kind)
            except msgspec.ValidationError as exc:
                problems += _every_error(data[key], kind, key, exc)
    raw_instances = data.get("instances", [])
    if not isinstance(raw_instances, list):
        problems.append("instances: expected an array of tables ([[instances]])")
        raw_instances = []
    instances: dict[int, Instance] = {}
    for index, raw in enumerate(raw_instances):
        try:
            instances[index] = msgspec.convert(raw, Instance)
        except msgspec.ValidationError as exc:
            problems += _every_error(raw, Instance, f"instances[{index}]", exc)
            salvaged = _salvage_instance(raw)
            if salvaged is not None:
                instances[index] = salvaged
    if problems:
        # Still report what is wrong inside the instances, once for each key.
        reported = {problem.partition(": ")[0] for problem in problems}
        problems += [p for p in _validate_instances(instances) if not _under(p, reported)]
        return None
    return Config(**parts, instances=list(instances.values()))


def _every_error(value: Any, kind: Any, prefix: str, first: msgspec.ValidationError) -> list[str]:
    """The errors of a table that failed to decode as the Struct `kind`, each of its keys tried
    on its own (recursively into tables); `first`, msgspec's own error, when none of them fails
    alone (a check of the whole table)."""
    if get_origin(kind) is Literal:
        allowed = ", ".join(str(choice) for choice in get_args(kind))
        return [f"{prefix}: must be one of {allowed} (got {_shown(value)})"]
    if not (
        isinstance(value, dict) and isinstance(kind, type) and issubclass(kind, msgspec.Struct)
    ):
        return [_describe(first, prefix)]
    fields = {field.encode_name: field for field in msgspec.structs.fields(kind)}
    errors: list[str] = []
    for key, item in value.items():
        field = fields.get(key)
        if field is None:
            errors.append(_unknown_key(f"{prefix}.{_quoted(key)}", key, fields))
            continue
        try:
            msgspec.convert(item, field.type)
        except msgspec.ValidationError as exc:
            errors += _every_error(item, field.type, f"{prefix}.{key}", exc)
    errors += [
        f"{prefix}.{name}: required"
        for name, f in fields.items()
        if f.required and name not in value
    ]
    return errors or [_describe(first, prefix)]


def _under(problem: str, paths: set[str]) -> bool:
    """Whether `problem` is about one of `paths` or a key inside one."""
    path = problem.partition(": ")[0]
    return any(path == p or path.startswith((f"{p}.", f"{p}[")) for p in paths)


def _unknown_key(path: str, key: str, known: Iterable[str]) -> str:
    # A key that contains what was typed wins, the first declared: `interval` is nearer to
    # slow_interval by spelling, but the one meant is almost always refresh_interval.
    names = list(known)
    near = [name for name in names if len(key) > 2 and key in name][:1]
    near = near or difflib.get_close_matches(key, names, n=1)
    return f"{path}: unknown key" + (f"; did you mean {near[0]}?" if near else "")


def _shown(value: Any) -> str:
    """A value as TOML spells it, near enough: JSON, except the floats JSON lacks (nan, inf)."""
    if isinstance(value, float):
        return repr(value)
    try:
        return msgspec.json.encode(value).decode()
    except (TypeError, ValueError):
        return repr(value)


def _salvage(value: Any, kind: Any) -> Any:
    """`value` without the keys that fail to decode as `kind`'s fields, so that the checks of
    the keys that are fine can still run."""
    if not (
        isinstance(value, dict) and isinstance(kind, type) and issubclass(kind, msgspec.Struct)
    ):
        return value
    fields = {field.encode_name: field for field in msgspec.structs.fields(kind)}
    kept: dict[str, Any] = {}
    for key, item in value.items():
        field = fields.get(key)
        if field is None:
            continue
        item = _salvage(item, field.type)
        try:
            msgspec.convert(item, field.type)
        except msgspec.ValidationError:
            continue
        kept[key] = item
    return kept


def _salvage_instance(raw: Any) -> Instance | None:
    """An instance that failed to decode, its bad keys left out and its missing required keys
    blank (their errors are already reported), or None when even that does not decode."""
    salvaged = _salvage(raw, Instance)
    if not isinstance(salvaged, dict):
        return None
    try:
        return msgspec.convert({"name": "", "realm_id": "", **salvaged}, Instance)
    except msgspec.ValidationError:
        return None


def _describe(exc: msgspec.ValidationError, prefix: str) -> str:
    """Turn msgspec's `Expected ... - at `$.a.b`` into `prefix.a.b: expected ...`."""
    message, _, where = str(exc).partition(" - at `$")
    path = prefix + where.rstrip("`")
    unknown = re.match(r"Object contains unknown field `(.+)`", message)
    if unknown:
        return f"{path}.{unknown.group(1)}: unknown key"
    missing = re.match(r"Object missing required field `(.+)`", message)
    if missing:
        return f"{path}.{missing.group(1)}: required"
    bound = re.match(r"Expected `\w+` (.+)$", message)
    if bound and not bound.group(1).startswith(","):
        return f"{path}: must be {bound.group(1)}"
    return f"{path}: {message.replace('`', '')[:1].lower()}{message.replace('`', '')[1:]}"


def _read_secret(
    file: str, key: str, environ: Mapping[str, str], base_dir: Path, problems: list[str]
) -> str:
    path = Path(file)
    if not path.is_absolute():
        credentials = environ.get("CREDENTIALS_DIRECTORY")
        path = Path(credentials) / path if credentials else base_dir / path
    try:
        secret = path.read_text(encoding="utf-8").strip()
    except OSError as exc:
        problems.append(f"{key}: cannot read {path}: {exc.strerror or exc}")
        return ""
    except ValueError:  # a NUL in the name, which no file system allows
        problems.append(f"{key}: not a usable file name: {file!r}")
        return ""
    if not secret:
        # An empty key file would otherwise mean "no secret": signing silently off, for one.
        problems.append(f"{key}: {path} is empty")
    return secret


def _resolve_secrets(
    config: Config, environ: Mapping[str, str], base_dir: Path, problems: list[str]
) -> Config:
    """Replace each `*_file` key by the secret it points at, so the rest sees only values."""
    qb = config.quickbooks
    replaced: dict[str, str] = {}
    for name in ("client_secret", "webhook_verifier_token"):
        file = getattr(qb, f"{name}_file")
        if file and getattr(qb, name):
            problems.append(f"quickbooks.{name}_file: give either {name} or {name}_file")
        elif file:
            replaced[name] = _read_secret(
                file, f"quickbooks.{name}_file", environ, base_dir, problems
            )
    http = config.http
    admin: dict[str, str] = {}
    if http.admin_token_file and http.admin_token:
        problems.append("http.admin_token_file: give either admin_token or admin_token_file")
    elif http.admin_token_file:
        token = _read_secret(
            http.admin_token_file, "http.admin_token_file", environ, base_dir, problems
        )
        admin = {"admin_token": token}
    delivery = config.delivery
    if delivery.alert_key_file and delivery.alert_key:
        problems.append("delivery.alert_key_file: give either alert_key or alert_key_file")
    elif delivery.alert_key_file:
        secret = _read_secret(
            delivery.alert_key_file, "delivery.alert_key_file", environ, base_dir, problems
        )
        delivery = msgspec.structs.replace(delivery, alert_key=secret, alert_key_file="")
    instances = []
    for index, inst in enumerate(config.instances):
        sig = inst.event.notification.signature
        where = f"instances[{index}].event.notification.signature"
        read: dict[str, str] = {}
        for name in ("key", "previous_key"):
            file = getattr(sig, f"{name}_file")
            if file and getattr(sig, name):
                problems.append(f"{where}.{name}_file: give either {name} or {name}_file")
            elif file:
                secret = _read_secret(file, f"{where}.{name}_file", environ, base_dir, problems)
                # A file that cannot be read stays named, so that validation knows a key was
                # meant and does not add a second, misleading problem.
                read.update({name: secret, f"{name}_file": "" if secret else file})
        if read:
            notification = msgspec.structs.replace(
                inst.event.notification, signature=msgspec.structs.replace(sig, **read)
            )
            inst = msgspec.structs.replace(
                inst, event=msgspec.structs.replace(inst.event, notification=notification)
            )
        instances.append(inst)
    return msgspec.structs.replace(
        config,
        quickbooks=msgspec.structs.replace(qb, **replaced),
        http=msgspec.structs.replace(http, **admin),
        delivery=delivery,
        instances=instances,
    )


def parse_listen(value: str) -> tuple[str, int]:
    """`host:port`, `[v6]:port` or `:port` (all addresses) -> (host, port)."""
    host, sep, port = value.rpartition(":")
    if not sep or not (port.isascii() and port.isdigit()) or not 0 <= int(port) <= 65535:
        raise ValueError(f"expected host:port, got {value!r}")
    host = host.strip("[]") or "0.0.0.0"
    return host, int(port)


def _parse_rfc3339(value: str) -> dt.datetime:
    parsed = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    if parsed.tzinfo is None:
        raise ValueError("needs an explicit offset (Z or +hh:mm)")
    return parsed


def listens_clash(a: tuple[str, int], b: tuple[str, int]) -> bool:
    """Whether two listeners would fight over one port: the same address, or a wildcard and any
    address of its family (asyncio binds `::` to IPv6 only)."""
    (a_host, a_port), (b_host, b_port) = a, b
    if a_port != b_port or a_port == 0:
        return False
    if a_host == b_host:
        return True
    wild = {"0.0.0.0", "::"} & {a_host, b_host}
    return bool(wild) and (":" in a_host) == (":" in b_host)


def validate(config: Config) -> list[str]:
    """The checks that span keys; each problem names its key path."""
    problems: list[str] = []
    for key in ("webhook_listen", "health_listen"):
        try:
            parse_listen(getattr(config.http, key))
        except ValueError as exc:
            problems.append(f"http.{key}: {exc}")
    if not problems:
        webhook, health = config.http.webhook_listen, config.http.health_listen
        if listens_clash(parse_listen(webhook), parse_listen(health)):
            problems.append(
                f"http.health_listen: {health} clashes with http.webhook_listen {webhook}"
                " (one port, overlapping addresses)"
            )
    for key, value in (
        ("delivery.timeout", config.delivery.timeout),
        ("delivery.shutdown_timeout", config.delivery.shutdown_timeout),
        ("delivery.pause_after", config.delivery.pause_after),
        ("delivery.probe_interval", config.delivery.probe_interval),
        ("outbox.dedupe_window_days", config.outbox.dedupe_window_days),
        *(
            (f"delivery.retry_schedule[{i}]", v)
            for i, v in enumerate(config.delivery.retry_schedule)
        ),
    ):
        if not math.isfinite(value):
            problems.append(f"{key}: must be a finite number")
    if not config.http.webhook_path.startswith("/"):
        problems.append("http.webhook_path: must start with /")
    problems += _validate_connect(config)
    problems += _validate_alerts(config)
    if not config.delivery.retry_schedule:
        problems.append("delivery.retry_schedule: must not be empty")
    qb = config.quickbooks
    for key in ("api_base_url", "token_url"):
        url = getattr(qb, key)
        if url and not _http_url(url, need_host=False):
            problems.append(f"quickbooks.{key}: must be an http(s) URL")

    problems += _validate_instances(dict(enumerate(config.instances)))
    if any(i.polls for i in config.instances):
        for key in ("client_id", "client_secret"):
            if not getattr(qb, key):
                problems.append(f"quickbooks.{key}: required when an instance polls")
    if any(i.takes_webhooks for i in config.instances) and not qb.webhook_verifier_token:
        problems.append(
            "quickbooks.webhook_verifier_token: required when an instance takes webhooks"
        )
    return problems


def _validate_instances(instances: dict[int, Instance]) -> list[str]:
    """Checks within and between instances, keyed by their index in the file."""
    problems: list[str] = []
    names: set[str] = set()
    for index, inst in instances.items():
        where = f"instances[{index}]"
        if not _NAME.match(inst.name):
            problems.append(f"{where}.name: must be 1-64 of A-Z a-z 0-9 . _ - (got {inst.name!r})")
        elif inst.name in names:
            problems.append(f"{where}.name: {inst.name!r} is used by an earlier instance")
        names.add(inst.name)
        if inst.realm_id and not inst.realm_id.strip():
            problems.append(f"{where}.realm_id: must not be blank (leave it out to learn it)")
        problems += _validate_event(inst.event, f"{where}.event")
    return problems


def _validate_alerts(config: Config) -> list[str]:
    delivery = config.delivery
    problems: list[str] = []
    if delivery.alert_key:
        try:
            key_bytes(delivery.alert_key)
        except ValueError as exc:
            problems.append(f"delivery.alert_key: {exc}")
    url = delivery.alert_url
    if not url:
        return problems
    if not _http_url(url, need_host=True):
        return [*problems, f"delivery.alert_url: must be an http(s) URL (got {url!r})"]
    # A notice about a failing endpoint must not depend on that endpoint.
    for index, inst in enumerate(config.instances):
        if inst.callback_url and _same_url(inst.callback_url, url):
            problems.append(
                f"delivery.alert_url: must differ from instances[{index}]'s callback URL"
            )
    return problems


def _same_url(a: str, b: str) -> bool:
    """Whether two URLs name one resource, up to the case of scheme and host, a default port
    and a trailing slash."""
    try:
        x, y = urlsplit(a), urlsplit(b)
        ports = (
            x.port or {"http": 80, "https": 443}.get(x.scheme.lower()),
            y.port or {"http": 80, "https": 443}.get(y.scheme.lower()),
        )
    except ValueError:
        return a == b
    return (
        x.scheme.lower() == y.scheme.lower()
        and (x.hostname or "") == (y.hostname or "")
        and ports[0] == ports[1]
        and x.path.rstrip("/") == y.path.rstrip("/")
        and x.query == y.query
    )


def _validate_connect(config: Config) -> list[str]:
    problems: list[str] = []
    path = config.quickbooks.redirect_path
    if not path.startswith("/"):
        problems.append("quickbooks.redirect_path: must start with /")
    elif path == config.http.webhook_path:
        problems.append("quickbooks.redirect_path: must differ from http.webhook_path")
    elif path == "/reconnect" or path.startswith("/connect/"):
        problems.append("quickbooks.redirect_path: /reconnect and /connect/... are taken")
    base = config.http.public_base_url
    if base and not (_http_url(base, need_host=True) and urlsplit(base).path in ("", "/")):
        problems.append(
            "http.public_base_url: must be an http(s) URL without a path"
            f" (like https://events.example.com; got {base!r})"
        )
    uri = config.quickbooks.redirect_uri
    if uri and not _http_url(uri, need_host=True):
        problems.append(f"quickbooks.redirect_uri: must be an http(s) URL (got {uri!r})")
    return problems


def _http_url(url: str, *, need_host: bool) -> bool:
    """An http(s) URL that aiohttp can open: urlsplit raises ValueError for a broken `[v6]`
    host, and so does `.port` for a port past 65535, which would otherwise fail every send."""
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 -- read for the ValueError
    except ValueError:
        return False
    return parts.scheme in ("http", "https") and (bool(parts.hostname) or not need_host)


def _validate_slow_interval(poller: Poller, refresh: float, where: str) -> list[str]:
    key = f"{where}.poller.slow_interval"
    try:
        minutes = float(poller.slow_interval)
    except ValueError:
        return [f"{key}: must be a number of minutes (got {poller.slow_interval!r})"]
    if not math.isfinite(minutes * 60.0):
        return [f"{key}: must be a finite number of minutes"]
    # Off is 0; a slow interval shorter than the refresh interval would poll the slow lists faster.
    if minutes and minutes < refresh:
        return [f"{key}: must be 0 (off) or >= refresh_interval ({refresh:g} minutes)"]
    return []


def _validate_event(event: EventSettings, where: str) -> list[str]:
    problems: list[str] = []
    url = event.notification.callback.url
    if event.notification.enabled and not _http_url(url, need_host=True):
        problems.append(f"{where}.notification.callback.url: must be an http(s) URL (got {url!r})")
    poller = event.poller
    try:
        minutes = float(poller.refresh_interval)
    except ValueError:
        problems.append(
            f"{where}.poller.refresh_interval: must be a number of minutes "
            f"(got {poller.refresh_interval!r})"
        )
    else:
        # nan and inf pass `<= 0` (TOML has both, and so does float("nan")); neither is a period,
        # nor is 1e308 minutes, which is inf once the poller turns it into seconds.
        if not math.isfinite(minutes * 60.0):
            problems.append(f"{where}.poller.refresh_interval: must be a finite number of minutes")
        elif minutes <= 0:
            problems.append(f"{where}.poller.refresh_interval: must be > 0")
        else:
            problems += _validate_slow_interval(poller, minutes, where)
    try:
        parse_resource_list(poller.urls)
    except ValueError as exc:
        problems.append(f"{where}.poller.urls: {exc}")
    try:
        since = poller.since_time
    except ValueError as exc:
        problems.append(f"{where}.poller.since: must be RFC 3339 ({exc})")
    else:
        if since is not None and since > dt.datetime.now(dt.UTC):
            problems.append(f"{where}.poller.since: must not be in the future")
    if not math.isfinite(poller.overlap):
        problems.append(f"{where}.poller.overlap: must be a finite number of seconds")
    return problems + _validate_signature(event.notification.signature, where)


def _validate_signature(sig: Signature, where: str) -> list[str]:
    problems: list[str] = []
    keys: dict[str, bytes] = {}
    for name in ("key", "previous_key"):
        value = getattr(sig, name)
        if value:
            try:
                keys[name] = key_bytes(value)
            except ValueError as exc:
                problems.append(f"{where}.notification.signature.{name}: {exc}")
    key_meant = sig.key or sig.key_file
    if (sig.previous_key or sig.previous_key_file) and not key_meant:
        problems.append(
            f"{where}.notification.signature.previous_key: only with a key (the new one)"
        )
    elif "key" in keys and keys.get("previous_key") == keys["key"]:
        problems.append(f"{where}.notification.signature.previous_key: must differ from key")
    return problems
