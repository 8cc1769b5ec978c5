"""The connect flow's pure parts: links and states, URLs, the effective config, the status
lines, and the connection event's id, ordering key and body; and the store on a real outbox."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import msgspec
import orjson
import pytest
from qbo_events import config as config_module
from qbo_events.connect import links, status
from qbo_events.connect.links import Grant, Verdict, check_grant
from qbo_events.connect.store import (
    CONNECTED,
    DISCONNECTED,
    NEEDS_REAUTHORIZATION,
    ConnectionRow,
    ConnectionStore,
    StateGrant,
)
from qbo_events.events import (
    Change,
    Connection,
    ConnectionStatus,
    EventType,
    Source,
    connection_event,
    make_event,
)
from qbo_events.outbox import Outbox
from qbo_events.quickbooks.oauth import Tokens
from qbo_events.sinks.payload import render

BASE = """
[quickbooks]
client_id = "the-client"
client_secret = "client-secret-value"
{qb}
[http]
{http}
[[instances]]
name = "acme"
{realm}
event.notification.callback.url = "https://example.com/hook"
"""


def load(*, qb: str = "", http: str = "", realm: str = "") -> config_module.Config:
    return config_module.loads(BASE.format(qb=qb, http=http, realm=realm))


def test_a_grant_is_good_once_until_it_expires() -> None:
    assert check_grant(None, 10.0) is Verdict.UNKNOWN
    assert check_grant(Grant("acme", 20.0, None), 10.0) is Verdict.OK
    assert check_grant(Grant("acme", 20.0, 5.0), 10.0) is Verdict.USED
    assert check_grant(Grant("acme", 20.0, None), 20.0) is Verdict.EXPIRED


def test_tokens_are_random_and_stored_as_hashes() -> None:
    a, b = links.new_token(), links.new_token()
    assert a != b and len(a) >= 43
    assert links.token_hash(a) == links.token_hash(a) != links.token_hash(b)
    assert a not in links.token_hash(a)


def test_durations() -> None:
    assert links.parse_duration("1h") == 3600
    assert links.parse_duration("15m") == 900
    assert links.parse_duration("90") == links.parse_duration("90s") == 90
    assert links.parse_duration("2d") == 172800
    for bad in ("0", "-1h", "h", "soon", "nan"):
        with pytest.raises(ValueError):
            links.parse_duration(bad)


def test_intuit_endpoints_unless_the_api_base_points_at_a_sandbox() -> None:
    plain = load()
    assert links.authorize_endpoint(plain) == "https://appcenter.intuit.com/connect/oauth2"
    assert (
        links.revoke_endpoint(plain) == "https://developer.api.intuit.com/v2/oauth2/tokens/revoke"
    )
    sandbox = load(qb='api_base_url = "http://127.0.0.1:9/"')
    assert links.authorize_endpoint(sandbox) == "http://127.0.0.1:9/connect/oauth2"
    assert links.revoke_endpoint(sandbox) == "http://127.0.0.1:9/v2/oauth2/tokens/revoke"


def test_the_redirect_uri_is_the_registered_one_else_under_the_public_base() -> None:
    assert links.redirect_uri(load()) == ""
    public = load(http='public_base_url = "https://events.example.com/"')
    assert links.redirect_uri(public) == "https://events.example.com/oauth/callback"
    assert links.connect_link(public, "T") == "https://events.example.com/connect/T"
    both = load(
        qb='redirect_uri = "https://id.example.com/cb"\nredirect_path = "/cb"',
        http='public_base_url = "https://events.example.com"',
    )
    assert links.redirect_uri(both) == "https://id.example.com/cb"


def test_the_authorization_url_carries_what_intuit_needs() -> None:
    url = links.authorization_url(load(), redirect_uri="https://e.example/cb?x=1", state="S&T")
    parts = urlsplit(url)
    assert f"{parts.scheme}://{parts.netloc}{parts.path}" == links.AUTHORIZE_URL
    assert parse_qs(parts.query) == {
        "client_id": ["the-client"],
        "scope": ["com.intuit.quickbooks.accounting"],
        "response_type": ["code"],
        "redirect_uri": ["https://e.example/cb?x=1"],
        "state": ["S&T"],
    }


def test_the_local_redirect_uri() -> None:
    assert links.registered_local(load()) is None
    assert links.local_redirect_uri(load(), 8123) == "http://localhost:8123/oauth/callback"
    registered = load(qb='redirect_uri = "http://localhost:9000/done"')
    assert links.registered_local(registered) == ("/done", 9000)
    assert links.local_redirect_uri(registered, 9000) == "http://localhost:9000/done"
    public = load(qb='redirect_uri = "https://events.example.com/cb"')
    assert links.registered_local(public) is None


@pytest.mark.parametrize(
    ("qb", "http", "problem"),
    [
        ('redirect_path = "cb"', "", "quickbooks.redirect_path: must start with /"),
        (
            'redirect_path = "/webhooks/quickbooks"',
            "",
            "quickbooks.redirect_path: must differ from http.webhook_path",
        ),
        ('redirect_path = "/reconnect"', "", "quickbooks.redirect_path: /reconnect and"),
        ("", 'public_base_url = "https://e.example/x"', "http.public_base_url: must be"),
        ("", 'public_base_url = "events.example.com"', "http.public_base_url: must be"),
        ('redirect_uri = "nowhere"', "", "quickbooks.redirect_uri: must be an http(s) URL"),
        ("reconnect_warning_days = 0", "", "quickbooks.reconnect_warning_days: must be >= 1"),
    ],
)
def test_connect_settings_are_checked(qb: str, http: str, problem: str) -> None:
    with pytest.raises(config_module.ConfigError) as caught:
        load(qb=qb, http=http)
    assert any(p.startswith(problem) for p in caught.value.problems), caught.value.problems


def test_an_instance_may_leave_its_realm_to_be_learned() -> None:
    config = load()
    assert config.instances[0].realm_id == ""
    assert config.instances[0].event.notification.connection_events is True
    assert config.quickbooks.reconnect_warning_days == 30
    assert config.quickbooks.redirect_path == "/oauth/callback"


def row(state: str, realm: str = "42", at: float = 1_800_000_000.0) -> ConnectionRow:
    return ConnectionRow("acme", realm, "Acme Ltd", state, at, at + 5)


def test_the_effective_config_takes_learned_realms_and_drops_disconnected_ones() -> None:
    learned = load()
    assert status.effective(learned, {}).instances[0].realm_id == ""
    assert status.effective(learned, {"acme": row(CONNECTED)}).instances[0].realm_id == "42"
    assert status.effective(learned, {"acme": row(NEEDS_REAUTHORIZATION)}).instances[0].realm_id
    assert status.effective(learned, {"acme": row(DISCONNECTED)}).instances[0].realm_id == ""
    configured = load(realm='realm_id = "7"')
    assert status.effective(configured, {}).instances[0].realm_id == "7"
    assert status.effective(configured, {"acme": row(CONNECTED, "7")}).instances[0].realm_id == "7"
    gone = status.effective(configured, {"acme": row(DISCONNECTED, "7")})
    assert gone.instances[0].realm_id == ""
    # A disconnected instance may connect another company; a connected one may not.
    assert status.serving_realm(learned.instances[0], row(DISCONNECTED)) == ""
    assert status.serving_realm(learned.instances[0], row(NEEDS_REAUTHORIZATION)) == "42"


def test_how_a_connection_reads() -> None:
    inst = load().instances[0]
    connected = status.describe(inst, row(CONNECTED), refused=False)
    assert connected == {
        "state": "connected",
        "realm_id": "42",
        "company_name": "Acme Ltd",
        "connected_at": "2027-01-15T08:00:00Z",
        "changed_at": "2027-01-15T08:00:05Z",
    }
    assert status.line(connected) == ("connected to Acme Ltd (realm 42) since 2027-01-15T08:00:00Z")
    lost = status.describe(inst, row(CONNECTED), refused=True)
    assert status.line(lost) == "needs re-authorization (Acme Ltd (realm 42))"
    assert status.describe(inst, None, refused=False)["state"] == "waiting for connect"
    waiting = status.describe(inst, row(DISCONNECTED), refused=False)
    assert status.line(waiting) == "waiting for connect since 2027-01-15T08:00:05Z"
    configured = load(realm='realm_id = "7"').instances[0]
    assert status.line(status.describe(configured, None, refused=False)) == "configured for realm 7"
    assert status.describe(configured, None, refused=True)["state"] == "waiting for connect"


def connection(kind: ConnectionStatus, occasion: str = "1.000") -> Connection:
    return Connection(
        status=kind,
        realm_id="42",
        date="2027-01-15T08:00:00Z",
        company_name="Acme Ltd",
        connect_url="https://e.example/connect/T" if kind != ConnectionStatus.CONNECTED else None,
        occasion=occasion,
    )


def test_connection_event_ids_are_deterministic_per_status_and_occasion() -> None:
    one = connection_event("acme", connection(ConnectionStatus.NEEDS_REAUTHORIZATION))
    again = connection_event("acme", connection(ConnectionStatus.NEEDS_REAUTHORIZATION))
    assert one.event_id == again.event_id and one.event_id.startswith("evt_")
    later = connection_event("acme", connection(ConnectionStatus.NEEDS_REAUTHORIZATION, "2.000"))
    restored = connection_event("acme", connection(ConnectionStatus.RESTORED))
    other = connection_event("beta", connection(ConnectionStatus.NEEDS_REAUTHORIZATION))
    assert len({one.event_id, later.event_id, restored.event_id, other.event_id}) == 4


def test_the_ordering_key_of_connection_events_is_no_objects() -> None:
    event = connection_event("acme", connection(ConnectionStatus.CONNECTED))
    change = Change(
        realm_id="42",
        entity="Connection",
        object_id="acme",
        event_type=EventType.CREATED,
        date="2027-01-15T08:00:00Z",
        source=Source.POLLING,
        raw={},
    )
    keys = {make_event("acme", kind, change).object_key for kind in ("connection", "connections")}
    assert event.object_key not in keys
    assert (
        event.object_key
        == connection_event("acme", connection(ConnectionStatus.RESTORED)).object_key
    )
    # Stored and read back as the outbox does.
    encoded = msgspec.msgpack.encode(event)
    assert msgspec.msgpack.decode(encoded, type=type(event)) == event


def test_the_connection_event_body() -> None:
    event = connection_event("acme", connection(ConnectionStatus.NEEDS_REAUTHORIZATION))
    body, content_type = render(event, instance_name="acme", tags=["Docs"], fmt="open-connectors")
    assert content_type == "application/json"
    assert orjson.loads(body) == {
        "message": {
            "eventId": event.event_id,
            "instanceId": "acme",
            "instanceName": "acme",
            "instanceTags": ["Docs"],
            "elementKey": "quickbooks",
            "companyId": "42",
            "realmId": "42",
            "source": "connection",
            "events": [
                {
                    "eventType": "CONNECTION",
                    "status": "needs_reauthorization",
                    "objectType": "connection",
                    "objectId": "acme",
                    "elementKey": "quickbooks",
                    "date": "2027-01-15T08:00:00Z",
                    "realmId": "42",
                    "companyName": "Acme Ltd",
                    "connectUrl": "https://e.example/connect/T",
                }
            ],
            "raw": {},
        }
    }
    body, content_type = render(event, instance_name="acme", tags=[], fmt="cloudevents")
    cloudevent = orjson.loads(body)
    assert content_type == "application/cloudevents+json"
    assert cloudevent["type"] == "com.quickbooks.connection.needs_reauthorization"
    assert cloudevent["subject"] == "acme"
    assert cloudevent["time"] == "2027-01-15T08:00:00Z"


@pytest.mark.anyio
async def test_the_store_spends_links_and_states_once(tmp_path: Path) -> None:
    async with Outbox(tmp_path / "outbox.sqlite3") as outbox:
        store = ConnectionStore(outbox)
        await store.add_link("h1", "acme", 100.0, 60.0)
        assert await store.use_link("nope", 110.0) == (Verdict.UNKNOWN, "")
        assert await store.use_link("h1", 200.0) == (Verdict.EXPIRED, "acme")
        await store.add_link("h2", "acme", 100.0, 60.0)
        assert await store.use_link("h2", 110.0) == (Verdict.OK, "acme")
        assert await store.use_link("h2", 111.0) == (Verdict.USED, "acme")
        grant = StateGrant("acme", "", "https://e.example/cb")
        await store.add_state("s1", grant, 100.0, 60.0)
        assert await store.use_state("s1", 110.0) == (Verdict.OK, grant)
        assert await store.use_state("s1", 111.0) == (Verdict.USED, None)
        assert await store.use_state("s2", 111.0) == (Verdict.UNKNOWN, None)

        kind, first = await store.connect("acme", "42", "Acme Ltd", Tokens("r1"), 120.0)
        assert kind is ConnectionStatus.CONNECTED and first.status == CONNECTED
        assert (await outbox.load_tokens("acme")) == Tokens("r1")
        assert await store.lost("acme", "42", 130.0) == first
        assert await store.lost("acme", "42", 131.0) is None  # once per loss
        kind, _ = await store.connect("acme", "42", "Acme Ltd", Tokens("r2"), 140.0)
        assert kind is ConnectionStatus.RESTORED
        await store.disconnect("acme", "42", 150.0, forget_tokens=True)
        assert await outbox.load_tokens("acme") is None
        assert store.connections()["acme"].status == DISCONNECTED
        assert await store.lost("acme", "42", 160.0) is None  # a disconnect is no loss
        kind, _ = await store.connect("acme", "42", "Acme Ltd", Tokens("r3"), 170.0)
        assert kind is ConnectionStatus.RESTORED
        kind, _ = await store.connect("acme", "43", "Other", Tokens("r4"), 180.0)
        assert kind is ConnectionStatus.CONNECTED  # another company is a first connection
        assert store.changed_marker() == (180.0, 1)


def test_pages_escape_what_they_echo() -> None:
    from qbo_events.connect.pages import page

    response = page(400, "Not <connected>", 'realm "<script>alert(1)</script>"')
    assert response.status == 400 and response.content_type == "text/html"
    assert response.text is not None
    assert "<script>" not in response.text and "&lt;script&gt;" in response.text
    assert "Not &lt;connected&gt;" in response.text
    assert response.headers["Cache-Control"] == "no-store"
