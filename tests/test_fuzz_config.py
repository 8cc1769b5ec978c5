"""Fuzz the config loader: for any TOML (or any text), a valid Config or a ConfigError whose
every line names a key path; never another exception."""

from __future__ import annotations

import datetime as dt
import math
import re
from pathlib import Path
from typing import Any, Literal, Union, get_args, get_origin
from urllib.parse import urlsplit

import msgspec
import pytest
from fuzzing import fuzz_settings
from hypothesis import example, given
from hypothesis import strategies as st
from qbo_events.config import Config, Instance, loads, parse_listen
from qbo_events.errors import ConfigError
from qbo_events.routing import Routes

# `http.webhook_listen:`, `instances[0].event.vendor.type:`, `instances[2]."odd key":`
_SEGMENT = r'(?:[A-Za-z0-9_-]+|"(?:[^"\\\n]|\\.)*")'
KEY_PATH = re.compile(rf"(?:invalid TOML|{_SEGMENT}(?:\.{_SEGMENT}|\[\d+\])*): \S")

# --- a small TOML writer: everything inline, every key quoted ---------------------------------


def toml_string(text: str) -> str:
    out = []
    for char in text:
        if char in '"\\':
            out.append("\\" + char)
        elif ord(char) < 0x20 or ord(char) == 0x7F:
            out.append(f"\\u{ord(char):04x}")
        else:
            out.append(char)
    return '"' + "".join(out) + '"'


def toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return repr(value)
    if isinstance(value, str):
        return toml_string(value)
    if isinstance(value, dt.datetime | dt.date | dt.time):
        return value.isoformat()
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return (
            "{" + ", ".join(f"{toml_string(k)} = {toml_value(v)}" for k, v in value.items()) + "}"
        )
    raise TypeError(type(value))


def toml_document(table: dict[str, Any]) -> str:
    return "".join(f"{toml_string(k)} = {toml_value(v)}\n" for k, v in table.items())


# --- documents biased towards the real keys ---------------------------------------------------

TOML_SCALARS = st.one_of(
    st.text(max_size=30),
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.floats(),
    st.booleans(),
    st.datetimes(timezones=st.none() | st.just(dt.UTC)),
    st.dates(),
    st.times(),
)
ANY_TOML = st.recursive(
    TOML_SCALARS,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4)
    ),
    max_leaves=12,
)
REALISTIC_TEXT = st.sampled_from(
    [
        "",
        " ",
        "127.0.0.1:8080",
        ":0",
        "[::1]:8081",
        "0.0.0.0:99999",
        "host:\u0663",  # an Arabic-Indic digit
        "http://127.0.0.1:9/hook",
        "https://example.com/cb",
        "http://[::1",
        "http://[x]:80/",
        "http://h:99999999/",
        "ftp://example.com/",
        "/webhooks/quickbooks",
        "invoices|customers",
        "invoicescustomers",
        "nosuchthing",
        "2026-01-01T00:00:00Z",
        "2026-01-01T00:00:00",
        "0001-01-01T00:00:00+23:59",
        "2999-01-01T00:00:00Z",
        "15",
        "1e400",
        "nan",
        "-1",
        "secret.txt",
        "empty.txt",
        "missing.txt",
        "nul\x00byte.txt",
        "/",
        "whsec_",
        "whsec_!!",
        "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
        "acme",
        "310687",
    ]
)


def _for_type(kind: Any, depth: int) -> st.SearchStrategy[Any]:
    """Values for a field of type `kind`: mostly of its type (so decoding goes deep), else any."""
    origin = get_origin(kind)
    if origin is not None and getattr(origin, "__name__", "") == "Annotated":
        kind = get_args(kind)[0]
        origin = get_origin(kind)
    if origin is Literal:
        fitting: st.SearchStrategy[Any] = st.sampled_from(get_args(kind))
    elif isinstance(kind, type) and issubclass(kind, msgspec.Struct):
        fitting = struct_tables(kind, depth + 1)
    elif origin in (list, tuple):
        fitting = st.lists(_for_type(get_args(kind)[0], depth + 1), max_size=4)
    elif origin is Union or str(origin) == "<class 'types.UnionType'>":
        fitting = st.one_of(*(_for_type(a, depth + 1) for a in get_args(kind)))
    elif kind is str or kind == "str":
        fitting = st.one_of(REALISTIC_TEXT, st.text(max_size=20))
    elif kind is bool:
        fitting = st.booleans()
    elif kind is int:
        fitting = st.one_of(st.integers(-5, 10**7), st.integers(-(2**63), 2**63 - 1))
    elif kind is float:
        fitting = st.one_of(st.floats(), st.integers(-5, 10**6))
    else:
        fitting = TOML_SCALARS
    if depth > 4:
        return fitting
    return st.one_of(fitting, fitting, fitting, ANY_TOML)


def _typo(name: str) -> st.SearchStrategy[str]:
    return st.sampled_from(
        [name + "l", name[:-1], name.upper(), name.replace("_", "-"), name + " "]
    )


def struct_tables(kind: type[msgspec.Struct], depth: int = 0) -> st.SearchStrategy[dict[str, Any]]:
    """Tables of `kind`'s keys (a few of them, with values mostly of their types), plus now and
    then a misspelt or unknown key."""
    fields = msgspec.structs.fields(kind)
    names = [f.encode_name for f in fields]
    hints = {f.encode_name: f.type for f in fields}

    @st.composite
    def table(draw: st.DrawFn) -> dict[str, Any]:
        chosen = draw(st.lists(st.sampled_from(names), unique=True, max_size=len(names)))
        result = {name: draw(_for_type(hints[name], depth)) for name in chosen}
        if names and draw(st.integers(0, 6)) == 0:
            odd = draw(st.one_of(_typo(draw(st.sampled_from(names))), st.text(max_size=10)))
            result[odd] = draw(TOML_SCALARS)
        return result

    return table()


@st.composite
def documents(draw: st.DrawFn) -> dict[str, Any]:
    document = draw(struct_tables(Config))
    # Instances are where most keys live: give most documents some.
    if "instances" not in document or draw(st.booleans()):
        document["instances"] = draw(st.lists(struct_tables(Instance), max_size=3))
    return document


@pytest.fixture
def base_dir(tmp_path: Path) -> Path:
    (tmp_path / "secret.txt").write_text("s3cret\n")
    (tmp_path / "empty.txt").write_text("  \n")
    return tmp_path


def check(text: str, base_dir: Path) -> Config | None:
    try:
        config = loads(text, environ={}, base_dir=base_dir)
    except ConfigError as exc:
        assert exc.problems, "a ConfigError with no problem in it"
        for problem in exc.problems:
            assert isinstance(problem, str)
            assert KEY_PATH.match(problem), problem
            if not problem.startswith("invalid TOML: "):
                assert "\n" not in problem, problem
        return None
    assert isinstance(config, Config)
    # What validation let through, the daemon can use.
    for key in (config.http.webhook_listen, config.http.health_listen):
        parse_listen(key)
    Routes(config)
    for instance in config.instances:
        if instance.event.notification.enabled:
            urlsplit(instance.callback_url).port  # noqa: B018 -- a port past 65535 raises
        assert math.isfinite(instance.event.poller.interval_seconds)
        assert instance.event.poller.interval_seconds > 0
        assert instance.event.poller.resources
        instance.event.poller.since_time  # noqa: B018 -- must not raise
    return config


@fuzz_settings(150)
@given(document=documents())
@example(
    document={"instances": [{"event": {"notification": {"callback": {"url": "http://[::1"}}}}]}
)
@example(document={"quickbooks": {"api_base_url": "http://[x"}})
@example(
    document={
        "instances": [{"event": {"notification": {"signature": {"key_file": "nul\x00byte.txt"}}}}]
    }
)
@example(document={"quickbooks": {"client_secret_file": "nul\x00byte.txt"}})
@example(document={"instances": [{"name": "a", "realm_id": "1", "event": {"we:ird\nkey": 1}}]})
@example(document={"we ird": 1})
@example(document={"log": {"level": [[[[[[[[[[[[[[[[[[[[1]]]]]]]]]]]]]]]]]]]]}})
@example(
    document={
        "instances": [
            {
                "name": "a",
                "realm_id": "1",
                "event": {
                    "vendor": {"type": "webhooks"},
                    "notification": {"callback": {"url": "http://h:99999999/"}},
                },
            }
        ],
        "quickbooks": {"webhook_verifier_token": "v"},
    }
)
@example(
    document={
        "quickbooks": {"client_id": "a", "client_secret": "b"},
        "instances": [
            {
                "name": "a",
                "realm_id": "1",
                "event": {
                    "notification": {"callback": {"url": "http://127.0.0.1:9/hook"}},
                    "poller": {"refresh_interval": 1e308},
                },
            }
        ],
    }
)
def test_documents_of_the_real_keys(document: dict[str, Any], base_dir: Path) -> None:
    check(toml_document(document), base_dir)


@fuzz_settings(300)
@given(text=st.text(max_size=200))
@example(text="a = " + "[" * 2000 + "]" * 2000)
@example(text="a = " + "{b = " * 2000 + "1" + "}" * 2000)
@example(text="[[instances]]\n" * 3)
def test_any_text(text: str, base_dir: Path) -> None:
    check(text, base_dir)


@fuzz_settings(100)
@given(table=ANY_TOML.filter(lambda v: isinstance(v, dict)))
def test_any_toml_table(table: dict[str, Any], base_dir: Path) -> None:
    check(toml_document(table), base_dir)


def test_a_valid_document_loads() -> None:
    # The writer itself is right: a document it writes can load cleanly.
    text = toml_document(
        {
            "quickbooks": {"client_id": "a", "client_secret": "b"},
            "instances": [
                {
                    "name": "acme",
                    "realm_id": "310687",
                    "event": {"notification": {"callback": {"url": "http://127.0.0.1:9/h"}}},
                }
            ],
        }
    )
    config = loads(text, environ={})
    assert config.instances[0].callback_url == "http://127.0.0.1:9/h"
