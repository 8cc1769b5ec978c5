"""A pure parser and evaluator for the subset of QuickBooks' query language that clients use."""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from .clock import looks_like_timestamp, parse_timestamp
from .responses import Fault, parser_error, validation_error

DEFAULT_MAX_RESULTS = 100
MAX_RESULTS_LIMIT = 1000

_TOKEN = re.compile(
    r"""\s*(?:
      (?P<string>'(?:\\.|''|[^'\\])*')
     |(?P<op><=|>=|!=|<>|=|<|>)
     |(?P<punct>[(),*;])
     |(?P<word>[^\s'(),*;<>=!]+)
    )""",
    re.VERBOSE,
)

Value = str | bool


@dataclass(frozen=True)
class Token:
    kind: str  # string | op | punct | word
    text: str
    column: int  # 1-based, as QuickBooks' parser reports it

    def is_word(self, *words: str) -> bool:
        return self.kind == "word" and self.text.upper() in words


@dataclass(frozen=True)
class Condition:
    path: tuple[str, ...]
    op: str  # = < > <= >= != IN LIKE
    values: tuple[Value, ...]


@dataclass(frozen=True)
class Query:
    entity: str
    count: bool
    where: tuple[Condition, ...]
    order: tuple[tuple[tuple[str, ...], bool], ...]  # (path, descending)
    start_position: int
    max_results: int

    def mentions(self, field: str) -> bool:
        return any(len(c.path) == 1 and c.path[0].lower() == field.lower() for c in self.where)


def tokenize(text: str) -> list[Token]:
    tokens: list[Token] = []
    position = 0
    while position < len(text):
        if text[position:].strip() == "":
            break
        match = _TOKEN.match(text, position)
        if match is None or match.lastgroup is None:
            rest = text[position:]
            column = position + 1 + len(rest) - len(rest.lstrip())
            raise parser_error(
                f'Lexical error at line 1, column {column}.  Encountered: "{rest.strip()[:1]}"'
            )
        kind = match.lastgroup
        tokens.append(Token(kind, match.group(kind), match.start(kind) + 1))
        position = match.end()
    return tokens


class _Parser:
    def __init__(self, text: str) -> None:
        self.tokens = [t for t in tokenize(text) if t.text != ";"]
        self.index = 0

    def peek(self) -> Token | None:
        return self.tokens[self.index] if self.index < len(self.tokens) else None

    def take(self) -> Token:
        token = self.peek()
        if token is None:
            raise parser_error('Encountered "<EOF>" at line 1. Was expecting more input.')
        self.index += 1
        return token

    def unexpected(self, token: Token) -> Fault:
        label = "<OR>" if token.is_word("OR") else f"<{token.kind.upper()}>"
        return parser_error(
            f'Encountered " {label} "{token.text} "" at line 1, column {token.column}.'
        )

    def expect_word(self, *words: str) -> Token:
        token = self.take()
        if not token.is_word(*words):
            raise self.unexpected(token)
        return token

    def accept(self, text: str) -> bool:
        token = self.peek()
        if token is not None and (token.text == text or token.is_word(text.upper())):
            self.index += 1
            return True
        return False

    def number(self) -> int:
        token = self.take()
        if token.kind != "word" or not token.text.isdigit():
            raise self.unexpected(token)
        return int(token.text)

    def path(self) -> tuple[str, ...]:
        token = self.take()
        if token.kind != "word" or token.text[:1].isdigit():
            raise self.unexpected(token)
        return tuple(token.text.split("."))

    def value(self) -> Value:
        token = self.take()
        if token.kind == "string":
            return token.text[1:-1].replace("\\'", "'").replace("''", "'")
        if token.kind != "word":
            raise self.unexpected(token)
        lowered = token.text.lower()
        if lowered in ("true", "false"):
            return lowered == "true"
        return token.text

    def parse(self) -> Query:
        self.expect_word("SELECT")
        count = False
        if self.peek() is not None and self.tokens[self.index].is_word("COUNT"):
            self.take()
            for text in "(*)":
                if self.take().text != text:
                    raise self.unexpected(self.tokens[self.index - 1])
            count = True
        # Projections (`SELECT *, Sku`, `SELECT Id, Name`) are accepted; whole objects come back.
        while not (self.peek() is None or self.tokens[self.index].is_word("FROM")):
            self.take()
        self.expect_word("FROM")
        entity = self.take()
        if entity.kind != "word":
            raise self.unexpected(entity)
        where: list[Condition] = []
        if self.accept("WHERE"):
            where.append(self.condition())
            while self.accept("AND"):
                where.append(self.condition())
        order: list[tuple[tuple[str, ...], bool]] = []
        if self.accept("ORDERBY") or (self.accept("ORDER") and self.expect_word("BY")):
            while True:
                path = self.path()
                descending = False
                if self.accept("DESC"):
                    descending = True
                else:
                    self.accept("ASC")
                order.append((path, descending))
                if not self.accept(","):
                    break
        start, limit = 1, DEFAULT_MAX_RESULTS
        while (token := self.peek()) is not None:
            if self.accept("STARTPOSITION"):
                start = self.number()
            elif self.accept("MAXRESULTS"):
                limit = self.number()
            else:
                raise self.unexpected(token)
        if limit > MAX_RESULTS_LIMIT:
            raise validation_error(
                f"value {limit} is too large. Max allowed value is {MAX_RESULTS_LIMIT}"
            )
        if start < 1:
            raise validation_error(f"value {start} is too small. Min allowed value is 1")
        return Query(entity.text, count, tuple(where), tuple(order), start, limit)

    def condition(self) -> Condition:
        path = self.path()
        token = self.take()
        if token.kind == "op":
            op = "!=" if token.text == "<>" else token.text
            return Condition(path, op, (self.value(),))
        if token.is_word("LIKE"):
            return Condition(path, "LIKE", (self.value(),))
        if token.is_word("IN"):
            if self.take().text != "(":
                raise self.unexpected(self.tokens[self.index - 1])
            values = [self.value()]
            while self.accept(","):
                values.append(self.value())
            if self.take().text != ")":
                raise self.unexpected(self.tokens[self.index - 1])
            return Condition(path, "IN", tuple(values))
        raise self.unexpected(token)


def parse(text: str) -> Query:
    """Raise a Fault with QuickBooks' own wording for what it refuses (OR, MAXRESULTS > 1000)."""
    return _Parser(text).parse()


def lookup(obj: dict[str, Any], path: Sequence[str]) -> Any:
    """Field names match case-insensitively (`Metadata.` and `MetaData.` both work)."""
    current: Any = obj
    for part in path:
        if not isinstance(current, dict):
            return None
        if part in current:
            current = current[part]
            continue
        lowered = part.lower()
        current = next((v for k, v in current.items() if k.lower() == lowered), None)
    return current


def has_field(obj: dict[str, Any], path: Sequence[str]) -> bool:
    return lookup(obj, path) is not None


def _key(value: Any) -> tuple[int, Any]:
    """A sort key that orders numbers, timestamps and text each the way QuickBooks does."""
    if value is None:
        return (0, 0)
    if isinstance(value, bool):
        return (1, value)
    if isinstance(value, int | float):
        return (2, value)
    if isinstance(value, str) and value.isdigit():
        return (2, int(value))
    if looks_like_timestamp(value):
        try:
            return (3, parse_timestamp(value).timestamp())
        except ValueError:
            pass
    if isinstance(value, dict):
        return _key(value.get("value"))
    return (4, str(value).casefold())


def _compare(actual: Any, op: str, wanted: Value) -> bool:
    if isinstance(actual, dict):  # a Ref: `CustomerRef = '5'` compares its value
        actual = actual.get("value")
    if not isinstance(actual, str | bool | int | float):
        return False
    left: Any
    right: Any
    if isinstance(actual, bool) or isinstance(wanted, bool):
        left, right = str(actual).lower(), str(wanted).lower()
    elif isinstance(actual, int | float) or (actual.isdigit() and str(wanted).isdigit()):
        try:
            left, right = float(actual), float(wanted)
        except ValueError:
            return False
    elif looks_like_timestamp(actual):
        try:
            left, right = parse_timestamp(actual), parse_timestamp(str(wanted))
        except ValueError:
            return False
    else:
        left, right = str(actual).casefold(), str(wanted).casefold()
    if op == "LIKE":
        pattern = ".*".join(re.escape(part) for part in str(right).split("%"))
        return re.fullmatch(pattern, str(left), re.DOTALL) is not None
    if op in ("=", "IN"):
        return bool(left == right)
    if op == "!=":
        return bool(left != right)
    if op == "<":
        return bool(left < right)
    if op == ">":
        return bool(left > right)
    if op == "<=":
        return bool(left <= right)
    return bool(left >= right)


def matches(obj: dict[str, Any], condition: Condition) -> bool:
    actual = lookup(obj, condition.path)
    return any(_compare(actual, condition.op, wanted) for wanted in condition.values)


def select(query: Query, objects: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """Every object the WHERE keeps, in ORDERBY order (by Id when none is asked for)."""
    rows = [o for o in objects if all(matches(o, c) for c in query.where)]
    rows.sort(key=lambda o: _key(o.get("Id")))
    for path, descending in reversed(query.order):
        rows.sort(key=lambda o, p=path: _key(lookup(o, p)), reverse=descending)  # type: ignore[misc]
    return rows


def page(query: Query, rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    first = query.start_position - 1
    return list(rows[first : first + query.max_results])


def unknown_fields(query: Query, objects: Sequence[dict[str, Any]]) -> Iterator[str]:
    """Fields no object of the entity carries; QuickBooks refuses them as not queryable."""
    if not objects:
        return
    for path in [c.path for c in query.where] + [p for p, _ in query.order]:
        if not any(has_field(o, path) for o in objects):
            yield ".".join(path)
