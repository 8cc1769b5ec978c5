"""The admin API's OpenAPI 3.1 document, built from the bodies in models.py.

The repository keeps the built document (admin/openapi.json, served at /api/v1/openapi.json); a
test fails when it differs from what this module builds. Rebuild it with
`python -m qbo_events.admin.schema > daemon/qbo_events/admin/openapi.json`.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, Final

import msgspec
import orjson

from qbo_events import __version__, activity, deliveries
from qbo_events.admin.api import MAX_LIMIT, PREFIX
from qbo_events.admin.models import (
    Activity,
    ConnectLink,
    ConnectLinkRequest,
    DeliveryCopies,
    DeliveryList,
    Error,
    InstancesView,
    QuarantineList,
    QuarantineRetryRequest,
    ReplayRequest,
    ReplayResult,
    ResumeResult,
    ResyncRequest,
    ResyncView,
    RetryRequest,
    RetryResult,
)
from qbo_events.quarantine import Retried, Shown

DOCUMENT: Final = Path(__file__).with_name("openapi.json")
_REF = "#/components/schemas/{name}"


def _ref(kind: type) -> dict[str, str]:
    return {"$ref": _REF.format(name=kind.__name__)}


def _json(kind: type, description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": _ref(kind)}}}


def _errors(*codes: int) -> dict[str, Any]:
    meaning = {
        400: "The request is not valid; `error` says why",
        401: "The bearer token is missing or wrong",
        403: "No admin token is configured: actions are off",
        404: "Not found",
        409: "The instance has a resync under way, or none to cancel",
        503: "The outbox cannot answer now",
    }
    return {str(code): _json(Error, meaning[code]) for code in codes}


def _query(name: str, description: str, schema: dict[str, Any]) -> dict[str, Any]:
    return {"name": name, "in": "query", "required": False, "description": description,
            "schema": schema}  # fmt: skip


_NAME = {"name": "name", "in": "path", "required": True, "schema": {"type": "string"}}


def _action(
    summary: str,
    request: type | None,
    result: type,
    errors: tuple[int, ...],
    parameters: tuple[dict[str, Any], ...] = (),
) -> dict[str, Any]:
    operation: dict[str, Any] = {
        "summary": summary,
        "security": [{"bearer": []}],
        "responses": {"200": _json(result, "Done"), **_errors(*errors)},
    }
    if parameters:
        operation["parameters"] = list(parameters)
    if request is not None:
        operation["requestBody"] = {
            "required": True,
            "content": {"application/json": {"schema": _ref(request)}},
        }
    return {"post": operation}


def build() -> dict[str, Any]:
    kinds = [
        Error, InstancesView, DeliveryList, DeliveryCopies, ReplayRequest, ReplayResult,
        RetryRequest, RetryResult, QuarantineList, QuarantineRetryRequest, Shown, Retried,
        ConnectLinkRequest, ConnectLink, ResumeResult, ResyncRequest, ResyncView, Activity,
    ]  # fmt: skip
    _, components = msgspec.json.schema_components(kinds, ref_template=_REF)
    time_text = {"type": "string", "description": "RFC 3339, or a span back from now: 30m, 1h"}
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "qbo-events admin API",
            "version": __version__,
            "description": "Served on the private health listener. Reads are open; actions "
            "need `Authorization: Bearer <http.admin_token>`.",
        },
        "components": {
            "schemas": components,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
        "paths": {
            f"{PREFIX}/instances": {
                "get": {
                    "summary": "Every instance: state, connection, polling, calls, counts",
                    "responses": {"200": _json(InstancesView, "The instances")},
                }
            },
            f"{PREFIX}/activity": {
                "get": {
                    "summary": "Per instance and minute: accepted, delivered, failed, latency",
                    "parameters": [
                        _query(
                            "hours",
                            "This many hours back (default 6)",
                            {"type": "integer", "minimum": 1, "maximum": activity.MAX_HOURS},
                        )
                    ],
                    "responses": {"200": _json(Activity, "The activity"), **_errors(400, 503)},
                }
            },
            f"{PREFIX}/deliveries": {
                "get": {
                    "summary": "Deliveries by state, time, instance and object, oldest first",
                    "parameters": [
                        _query("state", "Which deliveries", {"enum": list(deliveries.STATES)}),
                        _query("since", "From this time", time_text),
                        _query("until", "Before this time", time_text),
                        _query("instance", "One instance's", {"type": "string"}),
                        _query("object", "One object, TYPE/ID", {"type": "string"}),
                        _query(
                            "limit",
                            "At most this many (default 100)",
                            {"type": "integer", "minimum": 1, "maximum": MAX_LIMIT},
                        ),
                    ],
                    "responses": {
                        "200": _json(DeliveryList, "The deliveries"),
                        **_errors(400, 503),
                    },
                }
            },
            f"{PREFIX}/deliveries/{{event_id}}": {
                "get": {
                    "summary": "Every stored copy of one event: its body and every attempt",
                    "parameters": [
                        {
                            "name": "event_id",
                            "in": "path",
                            "required": True,
                            "schema": {"type": "string", "minLength": 1},
                        }
                    ],
                    "responses": {
                        "200": _json(DeliveryCopies, "The copies"),
                        **_errors(404, 503),
                    },
                }
            },
            f"{PREFIX}/replays": _action(
                "Send delivered events again (or count them, dry)",
                ReplayRequest,
                ReplayResult,
                (400, 401, 403, 404, 503),
            ),
            f"{PREFIX}/instances/{{name}}/connect-links": _action(
                "A single-use link that connects a QuickBooks company to the instance",
                ConnectLinkRequest,
                ConnectLink,
                (400, 401, 403, 404, 503),
                (_NAME,),
            ),
            f"{PREFIX}/instances/{{name}}/resume": _action(
                "Resume the instance's paused or failing callback endpoint now",
                None,
                ResumeResult,
                (401, 403, 404, 503),
                (_NAME,),
            ),
            f"{PREFIX}/instances/{{name}}/resyncs": _action(
                "Start a resync: read QuickBooks again and deliver every object found",
                ResyncRequest,
                ResyncView,
                (400, 401, 403, 404, 409, 503),
                (_NAME,),
            ),
            f"{PREFIX}/instances/{{name}}/resync": {
                "get": {
                    "summary": "The instance's latest resync and its progress",
                    "parameters": [_NAME],
                    "responses": {"200": _json(ResyncView, "The resync"), **_errors(404, 503)},
                }
            },
            f"{PREFIX}/instances/{{name}}/resync-cancel": _action(
                "Cancel the instance's resync under way",
                None,
                ResyncView,
                (401, 403, 404, 409, 503),
                (_NAME,),
            ),
            f"{PREFIX}/quarantine": {
                "get": {
                    "summary": "The signed webhook bodies that could not be understood",
                    "parameters": [
                        _query(
                            "limit",
                            "At most this many (default 100)",
                            {"type": "integer", "minimum": 1, "maximum": MAX_LIMIT},
                        )
                    ],
                    "responses": {
                        "200": _json(QuarantineList, "The quarantine, oldest first"),
                        **_errors(400, 503),
                    },
                }
            },
            f"{PREFIX}/quarantine/{{id}}": {
                "get": {
                    "summary": "One quarantined body",
                    "parameters": [
                        {
                            "name": "id",
                            "in": "path",
                            "required": True,
                            "schema": {"type": "integer", "minimum": 1, "maximum": 2**63 - 1},
                        }
                    ],
                    "responses": {"200": _json(Shown, "The body"), **_errors(404, 503)},
                }
            },
            f"{PREFIX}/quarantine-retries": _action(
                "Parse quarantined bodies again and accept what now parses",
                QuarantineRetryRequest,
                Retried,
                (400, 401, 403, 404, 503),
            ),
            f"{PREFIX}/retries": _action(
                "Queue dead letters again", RetryRequest, RetryResult, (400, 401, 403, 404, 503)
            ),
        },
    }


def render() -> bytes:
    return orjson.dumps(build(), option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS) + b"\n"


if __name__ == "__main__":
    sys.stdout.buffer.write(render())
