"""signing: the fixed vectors of SPEC 6.3 and Intuit, and agreement with `standardwebhooks`."""

from __future__ import annotations

import base64
import time

import pytest
from qbo_events.sinks.signing import (
    elements_signature,
    intuit_signature,
    key_bytes,
    standard_signature,
    verify_intuit,
)
from standardwebhooks import Webhook
from standardwebhooks.webhooks import WebhookVerificationError

DOTNET_TOKEN = "00faeec4-08d0-4996-bb37-698ae19f0149"
DOTNET_PAYLOAD = (
    b'{"eventNotifications":[{"realmId":"1269959970","dataChangeEvent":{"entities":['
    b'{"name":"Vendor","id":"40","operation":"Update","lastUpdated":"2016-10-05T03:09:04.000Z"},'
    b'{"name":"Customer","id":"43","operation":"Create","lastUpdated":"2016-10-05T03:07:04.000Z"}'
    b"]}}]}"
)
DOTNET_SIGNATURE = "6q+xGyMirJupwKTh2/WBl2NcdxzxqdIbk3sneKTxLWM="


def test_key_bytes() -> None:
    assert key_bytes("MySecretEventSignatureKey") == b"MySecretEventSignatureKey"
    assert key_bytes("clé") == "clé".encode()
    assert key_bytes("whsec_" + base64.b64encode(b"\x00\xffraw").decode()) == b"\x00\xffraw"
    assert len(key_bytes("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")) == 24
    # unpadded base64 is read as the standardwebhooks library reads it
    assert key_bytes("whsec_AAECAw") == key_bytes("whsec_AAECAw==") == b"\x00\x01\x02\x03"


@pytest.mark.parametrize(
    "key", ["whsec_s3cr3t v@lue!", "whsec_abcd efgh", "whsec_abcde", "whsec_é", "whsec_"]
)
def test_key_bytes_bad_whsec_key_is_value_error_without_the_key(key: str) -> None:
    with pytest.raises(ValueError) as caught:
        key_bytes(key)
    assert key[len("whsec_") :] not in str(caught.value) or key == "whsec_"


def test_elements_vector() -> None:
    signature = elements_signature(
        key_bytes("MySecretEventSignatureKey"), b"<INSERT_EVENT_NOTIFICATION_RESPONSE_BODY>"
    )
    assert signature == "sha256=jHdbRx5EZAsOfTwAPJOGkNUzQMVVdu5VJlxcsk+G6jQ="


def test_elements_signature_covers_every_byte() -> None:
    key = b"k"
    assert elements_signature(key, b'{"a":1}') != elements_signature(key, b'{"a": 1}')
    assert elements_signature(key, b"x") != elements_signature(b"K", b"x")


def test_standard_vector() -> None:
    signature = standard_signature(
        key_bytes("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"),
        "msg_p5jXN8AQM9LWM0D4loKWxJek",
        1614265330,
        b'{"test": 2432232314}',
    )
    assert signature == "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="


def test_standard_vector_matches_the_library_signer() -> None:
    from datetime import UTC, datetime

    library = Webhook("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").sign(
        "msg_p5jXN8AQM9LWM0D4loKWxJek",
        datetime.fromtimestamp(1614265330, tz=UTC),
        '{"test": 2432232314}',
    )
    assert library == "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="


@pytest.mark.parametrize("key", ["a secret", "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"])
def test_standardwebhooks_library_verifies_our_signature(key: str) -> None:
    body = '{"message": {"eventId": "evt_1", "raw": {"name": "Café"}}}'.encode()
    timestamp = int(time.time())
    headers = {
        "webhook-id": "evt_1",
        "webhook-timestamp": str(timestamp),
        "webhook-signature": standard_signature(key_bytes(key), "evt_1", timestamp, body),
    }
    # What SPEC 6.3 tells receivers: the Standard Webhooks secret is whsec_ + base64(key bytes).
    secret = "whsec_" + base64.b64encode(key_bytes(key)).decode()
    assert Webhook(secret).verify(body, headers) == {
        "message": {"eventId": "evt_1", "raw": {"name": "Café"}}
    }
    tampered = body.replace(b"evt_1", b"evt_2")
    with pytest.raises(WebhookVerificationError):
        Webhook(secret).verify(tampered, headers)
    with pytest.raises(WebhookVerificationError):
        Webhook(secret).verify(body, {**headers, "webhook-id": "evt_2"})


def test_intuit_dotnet_vector() -> None:
    assert intuit_signature(DOTNET_TOKEN, DOTNET_PAYLOAD) == DOTNET_SIGNATURE
    assert verify_intuit(DOTNET_TOKEN, DOTNET_PAYLOAD, DOTNET_SIGNATURE)
    assert verify_intuit(DOTNET_TOKEN, DOTNET_PAYLOAD, f" {DOTNET_SIGNATURE}\r\n")


@pytest.mark.parametrize(
    "header",
    [
        None,
        "",
        "   ",
        "not base64 at all!",
        "6q+xGyMirJupwKTh2/WBl2NcdxzxqdIbk3sneKTxLWM",  # padding lost
        "6q-xGyMirJupwKTh2_WBl2NcdxzxqdIbk3sneKTxLWM=",  # url-safe alphabet is not Intuit's
        "7q+xGyMirJupwKTh2/WBl2NcdxzxqdIbk3sneKTxLWM=",
        "sha256=" + DOTNET_SIGNATURE,
        DOTNET_SIGNATURE[:20],
        "ünïcode",
    ],
)
def test_verify_intuit_refuses(header: str | None) -> None:
    assert not verify_intuit(DOTNET_TOKEN, DOTNET_PAYLOAD, header)


def test_verify_intuit_is_over_the_exact_bytes_and_token() -> None:
    reformatted = DOTNET_PAYLOAD.replace(b'","', b'", "')
    assert not verify_intuit(DOTNET_TOKEN, reformatted, DOTNET_SIGNATURE)
    assert not verify_intuit(DOTNET_TOKEN.upper(), DOTNET_PAYLOAD, DOTNET_SIGNATURE)
    assert verify_intuit("t", b"", intuit_signature("t", b""))
