"""Fuzz the real webhook listener on a socket, with a real outbox: 200 (stored or quarantined),
413 or 401, never a 500, and the outbox holds exactly what the answer promised."""

from __future__ import annotations

import asyncio
import gzip
import socket
import sqlite3
import threading
import zlib
from collections.abc import Iterator
from contextlib import closing, contextmanager
from pathlib import Path
from typing import Any

import orjson
from aiohttp import web
from fuzzing import JSON, WEBHOOK_DOCUMENTS, fuzz_settings
from harness import free_port, intuit_sign, post_webhook
from hypothesis import example, given
from hypothesis import strategies as st
from qbo_events.config import (
    Callback,
    Config,
    EventSettings,
    Instance,
    Notification,
    Poller,
    Vendor,
)
from qbo_events.metrics import Metrics
from qbo_events.normalize import WebhookPayloadError, parse_webhook
from qbo_events.outbox import Outbox
from qbo_events.routing import Routes
from qbo_events.sources.webhooks import WebhookListener

PATH = "/webhooks/quickbooks"
MAX_BODY = 4096
TOKEN = "test-verifier-token-0123456789"  # the one harness.intuit_sign uses


def config() -> Config:
    def instance(name: str, realm: str, urls: str = "") -> Instance:
        return Instance(
            name=name,
            realm_id=realm,
            event=EventSettings(
                notification=Notification(callback=Callback(url="http://127.0.0.1:9/hook")),
                vendor=Vendor(type="webhooks"),
                poller=Poller(urls=urls),
            ),
        )

    # Two instances on one realm, one of them filtered to invoices: fan-out and filter both run.
    return Config(
        instances=[
            instance("acme", "310687"),
            instance("acme-invoices", "310687", "invoices"),
            instance("globex", "4620816365"),
        ]
    )


class Listener:
    """The real WebhookListener and Outbox, served on 127.0.0.1 from a loop in a thread."""

    def __init__(self, state: Path) -> None:
        self.db = state / "outbox.sqlite3"
        self.routes = Routes(config())
        self.url = f"http://127.0.0.1:{free_port()}{PATH}"
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._runner: web.ServerRunner | None = None
        self._outbox = Outbox(self.db, durability="normal")

    def _call(self, coro: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(30)

    async def _start(self) -> None:
        await self._outbox.open()
        listener = WebhookListener(
            self._outbox,
            routes=self.routes,
            verifier_token=TOKEN,
            metrics=Metrics(),
            on_accepted=lambda instances: None,
            path=PATH,
            max_body_bytes=MAX_BODY,
        )
        self._runner = web.ServerRunner(listener.app(), handle_signals=False)
        await self._runner.setup()
        port = int(self.url.split(":")[2].split("/")[0])
        await web.TCPSite(self._runner, "127.0.0.1", port).start()

    async def _stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
        await self._outbox.close()

    @contextmanager
    def running(self) -> Iterator[Listener]:
        self._thread.start()
        try:
            self._call(self._start())
            yield self
        finally:
            try:
                self._call(self._stop())
            finally:
                self._loop.call_soon_threadsafe(self._loop.stop)
                self._thread.join(30)
                self._loop.close()

    def stored(self) -> tuple[set[str], list[bytes]]:
        """Every event id the outbox has seen, and every quarantined body, read from the file."""
        with closing(sqlite3.connect(f"file:{self.db}?mode=ro", uri=True)) as db:
            seen = {row[0] for row in db.execute("SELECT event_id FROM dedupe")}
            quarantined = [bytes(row[0]) for row in db.execute("SELECT body FROM quarantine")]
        return seen, quarantined


@contextmanager
def listening(tmp_path: Path) -> Iterator[Listener]:
    with Listener(tmp_path).running() as server:
        yield server


REALM_BIASED = WEBHOOK_DOCUMENTS.map(orjson.dumps)
PADDED = st.tuples(WEBHOOK_DOCUMENTS, st.integers(0, 2 * MAX_BODY)).map(
    lambda pair: orjson.dumps(pair[0]) + b" " * pair[1]  # still the same JSON, maybe too big
)
BODIES = st.one_of(REALM_BIASED, PADDED, JSON.map(orjson.dumps), st.binary(max_size=600))


def check_signed(server: Listener, body: bytes) -> str:
    """POST `body` signed; check the answer against what the outbox now holds; say which."""
    before_seen, before_quarantined = server.stored()
    status = post_webhook(server.url, body)
    assert status in (200, 413), status
    seen, quarantined = server.stored()
    if status == 413:
        assert len(body) > MAX_BODY
        assert len(quarantined) == len(before_quarantined)
        assert seen == before_seen
        return "too large"
    assert len(body) <= MAX_BODY
    try:
        changes = parse_webhook(body)
    except WebhookPayloadError:
        # Quarantined: the body itself is kept, byte for byte, and nothing was delivered.
        assert quarantined[len(before_quarantined) :] == [body]
        assert seen == before_seen
        return "quarantined"
    assert len(quarantined) == len(before_quarantined)
    events, _ = server.routes.events(changes)
    assert {e.event_id for e in events} <= seen
    assert seen - before_seen <= {e.event_id for e in events}
    return "stored" if events else "no instance's"


def test_signed_bodies_are_stored_quarantined_or_too_large(tmp_path: Path) -> None:
    outcomes: set[str] = set()
    with listening(tmp_path) as server:

        @fuzz_settings(200)
        @given(BODIES)
        @example(b"")
        @example(b"\xff" * 10)
        @example(b"[" * 3000)
        @example(b" " * (MAX_BODY + 1))
        def signed(body: bytes) -> None:
            outcomes.add(check_signed(server, body))

        signed()
    # The examples reached every outcome, or the property proved little.
    assert outcomes == {"stored", "no instance's", "quarantined", "too large"}


def test_unsigned_or_wrongly_signed_bodies_get_401_and_nothing_is_stored(tmp_path: Path) -> None:
    with listening(tmp_path) as server:

        @fuzz_settings(100)
        @given(
            st.one_of(REALM_BIASED, st.binary(max_size=300)),
            st.one_of(
                st.just(""),
                st.text(max_size=60).filter(lambda s: s.isprintable() and s.isascii()),
                st.just("wrong token"),
            ),
        )
        def unsigned(body: bytes, signature: str) -> None:
            if signature == "wrong token":
                signature = intuit_sign(body, token="another-token")
            if signature == intuit_sign(body):
                return
            assert post_webhook(server.url, body, signature=signature) == 401
            assert server.stored() == (set(), [])

        unsigned()


def raw_status(url: str, request: bytes) -> int:
    """Send one raw request (with `Connection: close`) and read its final status, past any
    `100 Continue`."""
    port = int(url.split(":")[2].split("/")[0])
    answer = b""
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(request)
        while chunk := sock.recv(65536):
            answer += chunk
    for line in answer.split(b"\r\n"):
        if line.startswith(b"HTTP/1.") and int(line.split(b" ", 2)[1]) >= 200:
            return int(line.split(b" ", 2)[1])
    raise AssertionError(f"no final answer: {answer[:200]!r}")


@st.composite
def framed_requests(draw: st.DrawFn) -> bytes:
    """A POST whose body is framed in one of the ways HTTP allows (Content-Length or chunked,
    a Content-Encoding that may not match the bytes), signed over the bytes as decoded."""
    document = orjson.dumps(draw(WEBHOOK_DOCUMENTS))
    encoding = draw(st.sampled_from(["", "gzip", "deflate", "identity", "br", "x-unknown"]))
    if draw(st.booleans()):  # the bytes are really encoded so
        sent = {"gzip": gzip.compress, "deflate": zlib.compress}.get(encoding, bytes)(document)
    else:  # or they are not
        sent = draw(st.one_of(st.just(document), st.binary(min_size=1, max_size=64)))
    headers = [b"POST " + PATH.encode() + b" HTTP/1.1", b"Host: 127.0.0.1", b"Connection: close"]
    headers.append(b"intuit-signature: " + intuit_sign(document).encode())
    if encoding:
        headers.append(b"Content-Encoding: " + encoding.encode())
    if draw(st.booleans()):
        headers.append(b"Expect: 100-continue")
    if draw(st.booleans()):
        headers.append(b"Transfer-Encoding: chunked")
        cut = draw(st.integers(0, len(sent)))
        pieces = [p for p in (sent[:cut], sent[cut:]) if p]
        body = b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in pieces) + b"0\r\n\r\n"
    else:
        headers.append(b"Content-Length: %d" % len(sent))
        body = sent
    return b"\r\n".join(headers) + b"\r\n\r\n" + body


def test_any_framing_or_content_encoding_gets_an_answer_other_than_500(tmp_path: Path) -> None:
    statuses: set[int] = set()
    with listening(tmp_path) as server:

        @fuzz_settings(80)
        @given(framed_requests())
        @example(  # JSON declared as gzip: aiohttp cannot decode it (was a 500)
            b"POST /webhooks/quickbooks HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n"
            b"intuit-signature: x\r\nContent-Encoding: gzip\r\nContent-Length: 2\r\n\r\n{}"
        )
        def framed(request: bytes) -> None:
            before = server.stored()
            status = raw_status(server.url, request)
            statuses.add(status)
            assert status in (200, 400, 401, 413), status
            if status != 200:
                assert server.stored() == before

        framed()
    assert 200 in statuses and 400 in statuses
