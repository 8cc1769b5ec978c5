"""QuickBooks' error answers: the first error of a Fault, from its JSON, XML or gateway shape."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final
from xml.etree import ElementTree

import msgspec

THROTTLE_CODES: Final = frozenset({"3001", "003001"})


class Fault(msgspec.Struct, frozen=True):
    """The first error of a QuickBooks Fault, from whichever of its body shapes it came in."""

    code: str = ""
    type: str = ""
    message: str = ""
    detail: str = ""

    @property
    def throttled(self) -> bool:
        return self.code in THROTTLE_CODES or "ThrottleExceeded" in self.message


def parse_fault(body: bytes) -> Fault | None:
    """A Fault in a JSON or XML body: `Fault`, the lower-case `fault`, or the gateway's shape."""
    text = body.lstrip()
    if text.startswith(b"<"):
        return _xml_fault(text)
    try:
        data = msgspec.json.decode(text)
    except msgspec.DecodeError:
        return None
    return json_fault(data) if isinstance(data, dict) else None


def json_fault(data: Mapping[str, Any]) -> Fault | None:
    """A Fault in decoded JSON: the `Fault` envelope or the gateway's flat object."""
    envelope = data.get("Fault") or data.get("fault")
    if isinstance(envelope, dict):
        errors = envelope.get("Error") or envelope.get("error") or [{}]
        first = errors[0] if isinstance(errors, list) and errors else {}
        first = first if isinstance(first, dict) else {}
        return Fault(
            code=_text(first.get("code") or first.get("Code")),
            type=_text(envelope.get("type") or envelope.get("Type")),
            message=_text(first.get("Message") or first.get("message")),
            detail=_text(first.get("Detail") or first.get("detail")),
        )
    # Intuit's gateway answers with a flat object instead: {"code", "type", "detail", ...}.
    if "code" in data and "type" in data and ("detail" in data or "message" in data):
        return Fault(
            code=_text(data.get("code")),
            type=_text(data.get("type")),
            message=_text(data.get("message")),
            detail=_text(data.get("detail")),
        )
    return None


def _xml_fault(body: bytes) -> Fault | None:
    try:
        root = ElementTree.fromstring(body)
    except ElementTree.ParseError:
        return None
    # Tags carry the namespace `{http://schema.intuit.com/finance/v3}`; match on the local name.
    nodes = {node.tag.rpartition("}")[2]: node for node in root.iter() if isinstance(node.tag, str)}
    fault = nodes.get("Fault")
    if fault is None:
        return None
    error = nodes.get("Error")
    message = nodes.get("Message")
    detail = nodes.get("Detail")
    return Fault(
        code=error.get("code", "") if error is not None else "",
        type=fault.get("type", ""),
        message=(message.text or "").strip() if message is not None else "",
        detail=(detail.text or "").strip() if detail is not None else "",
    )


def _text(value: object) -> str:
    return "" if value is None else str(value)
