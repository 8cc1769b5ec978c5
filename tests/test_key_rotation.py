"""Signing-key rotation: `previous_key` also signs `webhook-signature`; unit and end to end."""

from __future__ import annotations

import base64
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import pytest
from harness import DaemonProcess, Receiver, instance_toml, legacy_body, wait_for
from qbo_events.config import ConfigError, loads
from qbo_events.sinks.sender import targets_from
from qbo_events.sinks.signing import elements_signature, key_bytes, standard_signatures
from standardwebhooks import Webhook
from standardwebhooks.webhooks import WebhookVerificationError

Factory = Callable[..., DaemonProcess]
AT = "2026-11-27T13:04:47.657Z"
OLD, NEW = "old-signature-key-0123", "new-signature-key-4567"
MSG_ID, TIMESTAMP, BODY = "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, b'{"test": 2432232314}'
# SPEC 6.3's Standard Webhooks vector: its key, id, timestamp and body give this signature.
VECTOR_KEY = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
VECTOR_SIGNATURE = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="


def secret(key: str) -> str:
    """The Standard Webhooks secret a receiver holds for one of our keys (SPEC 6.3)."""
    return "whsec_" + base64.b64encode(key_bytes(key)).decode()


def verifies(key: str, body: bytes, headers: dict[str, str]) -> bool:
    try:
        Webhook(secret(key)).verify(body, headers)
    except WebhookVerificationError:
        return False
    return True


# -- the header ----------------------------------------------------------------------------------


def test_one_key_gives_the_spec_vector_alone() -> None:
    assert standard_signatures((key_bytes(VECTOR_KEY), None), MSG_ID, TIMESTAMP, BODY) == (
        VECTOR_SIGNATURE
    )


def test_two_keys_give_the_new_signature_first_then_the_previous_one() -> None:
    header = standard_signatures((key_bytes(VECTOR_KEY), key_bytes(OLD)), MSG_ID, TIMESTAMP, BODY)
    first, second = header.split(" ")
    assert first == VECTOR_SIGNATURE
    assert second.startswith("v1,") and second != first
    assert standard_signatures((key_bytes(OLD),), MSG_ID, TIMESTAMP, BODY) == second


@pytest.mark.parametrize("holder", [VECTOR_KEY, OLD])
def test_standardwebhooks_verifies_a_two_key_header_with_either_key(holder: str) -> None:
    # The library refuses timestamps more than five minutes away, so this one is now.
    now = int(time.time())
    header = standard_signatures((key_bytes(VECTOR_KEY), key_bytes(OLD)), MSG_ID, now, BODY)
    headers = {"webhook-id": MSG_ID, "webhook-timestamp": str(now), "webhook-signature": header}
    assert verifies(holder, BODY, headers)
    assert not verifies("some-third-key", BODY, headers)


# -- the config ----------------------------------------------------------------------------------

BASE = """
[quickbooks]
webhook_verifier_token = "verifier"
[[instances]]
name = "acme"
realm_id = "1"
event.vendor.type = "webhook"
event.notification.callback.url = "http://127.0.0.1:9/hook"
"""


def problems(text: str, base_dir: Path | None = None) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        loads(text, environ={}, base_dir=base_dir)
    return caught.value.problems


def test_previous_key_goes_into_the_target_and_the_secrets() -> None:
    config = loads(
        BASE + f'event.notification.signature.key = "{NEW}"\n'
        f'event.notification.signature.previous_key = "{OLD}"\n',
        environ={},
    )
    target = targets_from(config)["acme"]
    assert target.key == NEW.encode() and target.previous_key == OLD.encode()
    assert OLD in config.secrets() and NEW in config.secrets()


def test_no_previous_key_means_one_signature() -> None:
    config = loads(BASE + f'event.notification.signature.key = "{NEW}"\n', environ={})
    assert targets_from(config)["acme"].previous_key is None


def test_previous_key_file_is_read_relative_to_the_config(tmp_path: Path) -> None:
    (tmp_path / "old.key").write_text(OLD + "\n")
    config = loads(
        BASE + f'event.notification.signature.key = "{NEW}"\n'
        'event.notification.signature.previous_key_file = "old.key"\n',
        environ={},
        base_dir=tmp_path,
    )
    assert config.instances[0].previous_signature_key == OLD
    assert OLD in config.secrets()


def test_previous_key_file_follows_the_credentials_directory(tmp_path: Path) -> None:
    (tmp_path / "old.key").write_text(OLD)
    config = loads(
        BASE + f'event.notification.signature.key = "{NEW}"\n'
        'event.notification.signature.previous_key_file = "old.key"\n',
        environ={"CREDENTIALS_DIRECTORY": str(tmp_path)},
        base_dir=tmp_path / "elsewhere",
    )
    assert targets_from(config)["acme"].previous_key == OLD.encode()


def test_previous_key_without_a_key_is_refused() -> None:
    assert problems(BASE + f'event.notification.signature.previous_key = "{OLD}"\n') == [
        "instances[0].event.notification.signature.previous_key: only with a key (the new one)"
    ]


def test_previous_key_equal_to_the_key_is_refused_in_either_spelling() -> None:
    same = "whsec_" + base64.b64encode(NEW.encode()).decode()
    assert problems(
        BASE + f'event.notification.signature.key = "{NEW}"\n'
        f'event.notification.signature.previous_key = "{same}"\n'
    ) == ["instances[0].event.notification.signature.previous_key: must differ from key"]


def test_previous_key_and_its_file_together_and_a_bad_whsec_are_refused() -> None:
    assert problems(
        BASE + f'event.notification.signature.key = "{NEW}"\n'
        'event.notification.signature.previous_key = "whsec_"\n'
        'event.notification.signature.previous_key_file = "/x"\n'
    ) == [
        "instances[0].event.notification.signature.previous_key_file:"
        " give either previous_key or previous_key_file",
        "instances[0].event.notification.signature.previous_key:"
        " signature key 'whsec_' is empty after its prefix",
    ]


def test_an_unreadable_key_file_is_one_problem_not_two(tmp_path: Path) -> None:
    found = problems(
        BASE + 'event.notification.signature.key_file = "missing.key"\n'
        f'event.notification.signature.previous_key = "{OLD}"\n',
        base_dir=tmp_path,
    )
    assert len(found) == 1 and "key_file: cannot read" in found[0]


# -- end to end ----------------------------------------------------------------------------------


class KeyHolder(Receiver):
    """A receiver holding one Standard Webhooks secret at a time, as a customer's would; it
    answers 401 to what it cannot verify, so an unverified delivery is retried, never lost."""

    def __init__(self, key: str) -> None:
        super().__init__(key=key)
        self.plan = lambda _id, _n: (200, {})

    async def _handle(self, request: Any) -> Any:
        from aiohttp import web

        body = await request.read()
        if self.key is None or not verifies(self.key, body, dict(request.headers)):
            with self._lock:
                self.bad_signatures += 1
            return web.Response(status=401)
        with self._lock:
            self.deliveries.append(
                {
                    "id": request.headers["webhook-id"],
                    "headers": dict(request.headers),
                    "raw": body,
                    "body": orjson.loads(body),
                    "key": self.key,
                }
            )
        return web.Response(status=200)


def _reloads(d: DaemonProcess) -> int:
    count = 0
    for line in d.stderr().splitlines():
        try:
            count += orjson.loads(line).get("event") == "reloaded"
        except orjson.JSONDecodeError:
            continue
    return count


def _reload(d: DaemonProcess, instances: str) -> None:
    before = _reloads(d)
    d.write_config(instances)
    d.signal(signal.SIGHUP)
    wait_for(lambda: _reloads(d) > before, what="the reload")
    assert d.health("/status")[1]["last_reload"]["ok"] is True


def _send(d: DaemonProcess, receiver: KeyHolder, ids: range) -> list[dict[str, Any]]:
    for i in ids:
        assert d.post(legacy_body("777", ("Invoice", str(i), "Create", AT))) == 200
    wanted = {str(i) for i in ids}

    def arrived() -> list[dict[str, Any]]:
        with receiver._lock:
            got = [
                x
                for x in receiver.deliveries
                if x["body"]["message"]["events"][0]["objectId"] in wanted
            ]
        return got if len(got) == len(wanted) else []

    return list(wait_for(arrived, what=f"deliveries {ids}"))


def test_a_receiver_switches_keys_during_the_overlap_without_a_rejected_delivery(
    daemon_factory: Factory, tmp_path: Path
) -> None:
    receiver = KeyHolder(OLD).start()
    try:
        before = instance_toml("acme", "777", receiver.url, key=OLD)
        d = daemon_factory(before).start()
        assert {x["key"] for x in _send(d, receiver, range(0, 3))} == {OLD}

        # The rotation: the new key signs, the old one still does too.
        (tmp_path / "old.key").write_text(OLD)
        overlap = instance_toml(
            "acme",
            "777",
            receiver.url,
            key=NEW,
            extra='event.notification.signature.previous_key_file = "old.key"',
        )
        _reload(d, overlap)
        during = _send(d, receiver, range(3, 10))  # the receiver still holds only the old key
        receiver.key = NEW
        during += _send(d, receiver, range(10, 17))  # and now only the new one
        for delivery in during:
            headers, raw = delivery["headers"], delivery["raw"]
            assert len(headers["webhook-signature"].split(" ")) == 2
            assert verifies(OLD, raw, headers) and verifies(NEW, raw, headers)
            # Open Connectors' header has room for one signature: the new key's.
            assert headers["Elements-Webhook-Signature"] == elements_signature(NEW.encode(), raw)
        assert [x["key"] for x in during] == [OLD] * 7 + [NEW] * 7
        assert receiver.bad_signatures == 0

        # The rotation is over: the old key no longer verifies anything.
        _reload(d, instance_toml("acme", "777", receiver.url, key=NEW))
        after = _send(d, receiver, range(17, 20))
        for delivery in after:
            headers, raw = delivery["headers"], delivery["raw"]
            assert len(headers["webhook-signature"].split(" ")) == 1
            assert verifies(NEW, raw, headers) and not verifies(OLD, raw, headers)
        assert receiver.bad_signatures == 0
        assert OLD not in d.stderr() and NEW not in d.stderr()
        assert d.stop() == 0
    finally:
        receiver.stop()
