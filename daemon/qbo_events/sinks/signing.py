"""Pure: the HMAC signatures of deliveries and of the webhooks QuickBooks sends."""

from __future__ import annotations

import base64
import binascii
import functools
import hashlib
import hmac
from collections.abc import Iterable
from typing import Final

_WHSEC: Final = "whsec_"


def key_bytes(key: str) -> bytes:
    """A `whsec_` key is base64 after its prefix (Standard Webhooks); any other key is its UTF-8.

    Raises ValueError for a `whsec_` key that is empty or not base64; the message never holds it.
    """
    if not key.startswith(_WHSEC):
        return key.encode()
    encoded = key[len(_WHSEC) :]
    # Padding is optional, as in the standardwebhooks library, so that both read a key alike.
    try:
        decoded = base64.b64decode(encoded + "=" * (-len(encoded) % 4), validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("signature key starts with 'whsec_' but is not base64 after it") from None
    if not decoded:
        raise ValueError("signature key 'whsec_' is empty after its prefix")
    return decoded


@functools.lru_cache(maxsize=1024)
def _keyed(key: bytes) -> hmac.HMAC:
    return hmac.new(key, digestmod=hashlib.sha256)


def _hmac(key: bytes, message: bytes) -> bytes:
    # A copy of a keyed HMAC skips the digest lookup and key set-up that a one-shot call pays
    # each time; with the process busy elsewhere between calls, those cost tens of microseconds.
    mac = _keyed(key).copy()
    mac.update(message)
    return mac.digest()


def _hmac_b64(key: bytes, message: bytes) -> str:
    return base64.b64encode(_hmac(key, message)).decode("ascii")


def elements_signature(key: bytes, body: bytes) -> str:
    """`Elements-Webhook-Signature`: `sha256=` + base64(HMAC-SHA256(key, body))."""
    return "sha256=" + _hmac_b64(key, body)


def standard_signature(key: bytes, msg_id: str, timestamp: int, body: bytes) -> str:
    """`webhook-signature`: `v1,` + base64(HMAC-SHA256(key, "<id>.<timestamp>.<body>"))."""
    return "v1," + _hmac_b64(key, f"{msg_id}.{timestamp}.".encode() + body)


def standard_signatures(
    keys: Iterable[bytes | None], msg_id: str, timestamp: int, body: bytes
) -> str:
    """`webhook-signature` with one `v1,` signature per key (None skipped), space-separated.

    Standard Webhooks receivers accept a message when any one of them verifies, so during a key
    rotation a receiver holding either the new key or the previous one keeps verifying."""
    return " ".join(standard_signature(k, msg_id, timestamp, body) for k in keys if k is not None)


def intuit_signature(verifier_token: str, body: bytes) -> str:
    """What QuickBooks puts in `intuit-signature`: base64(HMAC-SHA256(verifier token, body))."""
    return _hmac_b64(verifier_token.encode(), body)


def verify_intuit(verifier_token: str, body: bytes, header: str | None) -> bool:
    """True only when `header` is the signature of exactly these body bytes; constant time."""
    if not header:
        return False
    try:
        received = base64.b64decode(header.strip(), validate=True)
    except (binascii.Error, ValueError):
        return False
    expected = _hmac(verifier_token.encode(), body)
    return hmac.compare_digest(expected, received)
