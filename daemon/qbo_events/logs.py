"""structlog set up once (JSON for journald, console on a TTY), with the redaction of secrets."""

from __future__ import annotations

import datetime
import io
import logging
import os
import re
import sys
import threading
import urllib.parse
from collections.abc import Iterable, Mapping
from typing import IO, Any, Final, cast

import orjson
import structlog
from structlog.typing import EventDict, FilteringBoundLogger, Processor, WrappedLogger

__all__ = [
    "REDACTED",
    "configure",
    "get_logger",
    "redact",
    "register_secrets",
    "set_secrets",
]

REDACTED: Final = "[REDACTED]"

# Shorter values would be replaced inside ordinary words and numbers, mangling every line.
_MIN_SECRET_LENGTH: Final = 6

_LEVELS: Final[Mapping[str, int]] = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
}
# structlog passes the name of the method called (`log.warn`, `log.exception`, ...).
_METHOD_LEVELS: Final[Mapping[str, int]] = {
    **_LEVELS,
    "warn": logging.WARNING,
    "exception": logging.ERROR,
    "critical": logging.CRITICAL,
    "fatal": logging.CRITICAL,
}
_FORMATS: Final = ("json", "console", "auto")

# Keys whose values are secret whatever they contain, registered or not.
_SECRET_KEYS: Final = frozenset(
    {
        "access_token",
        "refresh_token",
        "id_token",
        "client_secret",
        "webhook_verifier_token",
        "verifier_token",
        "signature_key",
        "authorization",
        "password",
        "secret",
        "token",
    }
)

# Shapes in which credentials travel, caught even when nobody registered the value: OAuth form
# bodies and JSON answers, HTTP headers (also a repr'd header mapping) and Standard Webhooks keys.
_TOKEN_NAMES: Final = (
    r"access_token|refresh_token|id_token|client_secret|webhook_verifier_token|verifier_token"
)
# So that redacting a redacted text changes nothing; the prefixes below are atomic groups for the
# same reason (backtracking would let the value start at the space after the colon).
_NOT_DONE: Final = r"(?!\[REDACTED\])"
_PATTERNS: Final[tuple[tuple[re.Pattern[str], str], ...]] = (
    (
        re.compile(
            rf"(?i)((?>(?<![-\w])authorization[\"']?\s*[:=]\s*[\"']?)){_NOT_DONE}[^\"'\r\n]+"
        ),
        rf"\g<1>{REDACTED}",
    ),
    (
        re.compile(
            rf"(?i)((?>\b(?:{_TOKEN_NAMES})\b[\"']?\s*[:=]\s*[\"']?)){_NOT_DONE}[^\"'&\s,;}}\]]+"
        ),
        rf"\g<1>{REDACTED}",
    ),
    # Real credentials are long; the length keeps prose such as "basic settings" intact.
    (re.compile(r"(?i)\b(bearer|basic)\s+[A-Za-z0-9\-._~+/]{16,}=*"), rf"\g<1> {REDACTED}"),
    (re.compile(r"\bwhsec_[A-Za-z0-9+/=]+"), REDACTED),
    # A bare JWT or JWE (Intuit's access and id tokens, `eyJ...`: base64url of `{"`), wherever
    # it turns up without a name or header in front of it.
    # Possessive, so that a long run of near-misses costs linear time, not quadratic.
    (re.compile(r"(?<![\w-])eyJ[A-Za-z0-9_-]{8,}+(?:\.[A-Za-z0-9_-]*+){2,4}+"), REDACTED),
)


class _Secrets:
    """The registered values as one alternation, swapped whole so readers never see half a set."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._values: frozenset[str] = frozenset()
        self.pattern: re.Pattern[str] | None = None

    def replace(self, values: Iterable[str]) -> None:
        with self._lock:
            self._set(frozenset(values))

    def add(self, values: Iterable[str]) -> None:
        with self._lock:
            self._set(self._values | frozenset(values))

    def _set(self, values: frozenset[str]) -> None:
        kept = frozenset(v for v in values if isinstance(v, str) and len(v) >= _MIN_SECRET_LENGTH)
        variants: set[str] = set()
        for value in kept:
            # The same secret as it appears URL-encoded in a form body or escaped inside JSON.
            variants |= {
                value,
                urllib.parse.quote(value, safe=""),
                urllib.parse.quote_plus(value),
                orjson.dumps(value).decode()[1:-1],
            }
        self._values = kept
        # Longest first, so that a secret containing another is replaced whole.
        ordered = sorted(variants, key=len, reverse=True)
        self.pattern = re.compile("|".join(map(re.escape, ordered))) if ordered else None


_secrets = _Secrets()


def set_secrets(values: Iterable[str]) -> None:
    """Replace the registered secrets (on reload, so that removed instances' keys are forgotten)."""
    _secrets.replace(values)


def register_secrets(values: Iterable[str]) -> None:
    """Add secrets to the registry (a value learnt at run time, such as a new access token).

    The registry only grows this way; for values that replace others (rotated tokens), prefer
    `set_secrets` with the whole current set, so that redaction stays fast.
    """
    _secrets.add(values)


def redact(text: str) -> str:
    """`text` with every registered secret and every token-shaped credential replaced."""
    pattern = _secrets.pattern
    if pattern is not None:
        text = pattern.sub(REDACTED, text)
    for regex, replacement in _PATTERNS:
        text = regex.sub(replacement, text)
    return text


def _is_secret_key(key: str) -> bool:
    return key.lower().replace("-", "_") in _SECRET_KEYS


def _scrub(value: Any) -> Any:
    """A JSON-ready copy of `value` with secrets redacted in every string, however deep."""
    if isinstance(value, str):
        return redact(value)
    if value is None or isinstance(value, bool | int | float):
        return value
    if isinstance(value, Mapping):
        return {
            redact(str(k)): REDACTED if _is_secret_key(str(k)) and v is not None else _scrub(v)
            for k, v in value.items()
        }
    if isinstance(value, list | tuple | set | frozenset):
        return [_scrub(v) for v in value]
    if isinstance(value, datetime.date | datetime.time):
        return value.isoformat()
    # Anything else is rendered here, not by the renderer, so that its text is redacted too.
    return redact(repr(value))


def _redact_event(_logger: WrappedLogger, _name: str, event_dict: EventDict) -> EventDict:
    return cast(EventDict, _scrub(event_dict))


def _filter_level(_logger: WrappedLogger, name: str, event_dict: EventDict) -> EventDict:
    if _METHOD_LEVELS.get(name, logging.INFO) < _state.level:
        raise structlog.DropEvent
    return event_dict


def _order_keys(_logger: WrappedLogger, _name: str, event_dict: EventDict) -> EventDict:
    # Bound keys come first in structlog's dict; a reader scanning the journal wants these first.
    head = {k: event_dict.pop(k) for k in ("timestamp", "level", "event") if k in event_dict}
    return {**head, **event_dict}


def _dumps(obj: Any, **_kw: Any) -> str:
    return orjson.dumps(obj, default=lambda o: redact(repr(o))).decode()


class _State:
    """What `configure` last chose; loggers bound before a reload read it at each call."""

    def __init__(self) -> None:
        self.level = logging.INFO
        self.stream: IO[str] = sys.stderr
        self.lock = threading.Lock()
        self.handler: logging.Handler | None = None


_state = _State()
# One list, changed in place by `configure`: every bound logger holds a reference to it, so a
# reload that switches level or format reaches loggers bound before it.
_processors: list[Processor] = []


class _Sink:
    """structlog's output: one line, written whole, to the stream `configure` last chose."""

    def msg(self, message: str) -> None:
        with _state.lock:
            _state.stream.write(message + "\n")
            _state.stream.flush()

    debug = info = warning = warn = error = err = critical = exception = fatal = log = msg


def _sink_factory(*_args: Any) -> _Sink:
    return _Sink()


def configure(level: str = "info", fmt: str = "auto", *, stream: IO[str] | None = None) -> None:
    """Set up structlog and route the standard library's `logging` through the same chain.

    `fmt` is json, console or auto (console if `stream` is a TTY, else JSON for journald).
    `stream` defaults to the `sys.stderr` of the moment. Safe to call again on reload.
    """
    if level not in _LEVELS:
        raise ValueError(f"log level must be one of {', '.join(_LEVELS)}, not {level!r}")
    if fmt not in _FORMATS:
        raise ValueError(f"log format must be one of {', '.join(_FORMATS)}, not {fmt!r}")
    out = sys.stderr if stream is None else stream
    if fmt == "auto":
        fmt = "console" if _isatty(out) else "json"

    renderer: Processor
    if fmt == "json":
        renderer = structlog.processors.JSONRenderer(serializer=_dumps)
    else:
        # Exceptions arrive already formatted (and redacted) as text, so the formatter is never
        # asked to print a traceback's local variables, which could hold secrets.
        renderer = structlog.dev.ConsoleRenderer(
            colors=_isatty(out), exception_formatter=structlog.dev.plain_traceback
        )
    if _is_journal(out):
        renderer = _with_priority(renderer)
    timestamper = structlog.processors.TimeStamper(fmt="iso", utc=True)
    # Redaction runs after format_exc_info so the rendered traceback text is covered too.
    finish: list[Processor] = [_redact_event, _order_keys, renderer]

    with _state.lock:
        _state.level = _LEVELS[level]
        _state.stream = out
    _processors[:] = [
        structlog.contextvars.merge_contextvars,
        _filter_level,
        structlog.processors.add_log_level,
        timestamper,
        structlog.processors.StackInfoRenderer(),
        structlog.processors.format_exc_info,
        *finish,
    ]
    structlog.configure(
        processors=_processors,
        wrapper_class=structlog.make_filtering_bound_logger(logging.NOTSET),
        logger_factory=_sink_factory,
        # Not cached: a logger fetched before a reload must see the new configuration.
        cache_logger_on_first_use=False,
    )

    # aiohttp, asyncio and other libraries log through `logging`: same format, same redaction.
    handler = logging.StreamHandler(out)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=[
                structlog.contextvars.merge_contextvars,
                structlog.stdlib.add_logger_name,
                structlog.processors.add_log_level,
                timestamper,
                structlog.processors.format_exc_info,
            ],
            processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, *finish],
        )
    )
    root = logging.getLogger()
    if _state.handler is not None:
        root.removeHandler(_state.handler)
    root.addHandler(handler)
    root.setLevel(_LEVELS[level])
    _state.handler = handler


# syslog priorities, which journald reads from a `<N>` prefix and strips from the message.
_PRIORITIES: Final[Mapping[int, int]] = {
    logging.DEBUG: 7,
    logging.INFO: 6,
    logging.WARNING: 4,
    logging.ERROR: 3,
    logging.CRITICAL: 2,
}


def _is_journal(stream: IO[str]) -> bool:
    """Whether `stream` is the journal stream systemd gave us ($JOURNAL_STREAM = device:inode)."""
    device, _, inode = os.environ.get("JOURNAL_STREAM", "").partition(":")
    try:
        stat = os.fstat(stream.fileno())
        return (stat.st_dev, stat.st_ino) == (int(device), int(inode))
    except (OSError, ValueError, AttributeError, io.UnsupportedOperation):
        return False


def _with_priority(renderer: Processor) -> Processor:
    """Prefix each rendered line with its syslog priority, so `journalctl -p` filters by level."""

    def render(logger: WrappedLogger, name: str, event_dict: EventDict) -> str:
        level = str(event_dict.get("level", name))
        text = renderer(logger, name, event_dict)
        if isinstance(text, bytes):
            text = text.decode()
        return f"<{_PRIORITIES[_METHOD_LEVELS.get(level, logging.INFO)]}>{text}"

    return render


def _isatty(stream: IO[str]) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):  # no isatty, or already closed
        return False


def get_logger(**bound: Any) -> FilteringBoundLogger:
    """A logger with `bound` on every line, e.g. `get_logger(instance="acme", resource="bills")`.

    Keys bound with `structlog.contextvars.bind_contextvars` inside a task also reach every line
    that task logs, so a loop can bind its instance and resource once at its start.
    """
    return cast(FilteringBoundLogger, structlog.get_logger(**bound))
