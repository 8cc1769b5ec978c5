"""Creates, updates, deletes and voids through the REST API: `POST /{entity}[?operation=...]`.

Each goes through the same change log and webhook emitter as the generator's changes, so a
client that writes through the sandbox sees its own changes come back by CDC, Query and webhook.
"""

from __future__ import annotations

from typing import Any, Final

import orjson
from aiohttp import web

from . import catalog
from .api import BY_LOWER, api_call
from .clock import pacific_ms, utc_now
from .company import Company
from .responses import Fault, json_response, object_not_found
from .state import State

_OPERATIONS: Final = ("create", "update", "delete", "void")


@api_call
async def write_endpoint(request: web.Request, state: State, company: Company) -> web.Response:
    name = request.match_info["entity"]
    entity = BY_LOWER.get(name.lower())
    operation = request.query.get("operation", "").lower()
    if entity is None or operation not in ("", *_OPERATIONS):
        raise _unsupported(operation or "Create", name)
    body = _entity_body(await request.read(), entity)
    object_id = str(body.get("Id") or "")
    if operation in ("", "create", "update") and not object_id:
        if operation == "update":
            raise _missing("Id")
        obj = company.create(entity, body)
        return json_response({entity: obj, "time": pacific_ms(utc_now())})
    if operation == "delete" and (
        entity not in catalog.TRANSACTIONS or "Delete" not in catalog.operations(entity)
    ):
        raise _unsupported("Delete", entity, hint="; set Active to false to delete it")
    if operation == "void" and "Void" not in catalog.operations(entity):
        raise _unsupported("Void", entity)
    if not object_id:
        raise _missing("Id")
    current = company.get(entity, object_id)
    if current is None:
        raise object_not_found(entity, object_id)
    if str(body.get("SyncToken", "")) != current["SyncToken"]:
        raise _stale(entity, object_id)
    if operation == "delete":
        company.apply(entity, "Delete", object_id)
        gone = {"domain": "QBO", "status": "Deleted", "Id": object_id}
        return json_response({entity: gone, "time": pacific_ms(utc_now())})
    if operation == "void":
        company.apply(entity, "Void", object_id)
    else:
        company.update(entity, object_id, body, sparse=body.get("sparse") is True)
    return json_response({entity: company.get(entity, object_id), "time": pacific_ms(utc_now())})


def _entity_body(raw: bytes, entity: str) -> dict[str, Any]:
    """The entity's fields: the body itself, or wrapped in the entity's name as some clients
    send it."""
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise Fault(
            "Request has invalid or unsupported property",
            "The request body is not JSON",
            code="2010",
        ) from None
    if isinstance(body, dict) and isinstance(body.get(entity), dict) and len(body) == 1:
        body = body[entity]
    if not isinstance(body, dict):
        raise Fault(
            "Request has invalid or unsupported property",
            f"Expected a JSON object with the {entity}'s fields",
            code="2010",
        )
    return body


def _unsupported(operation: str, entity: str, *, hint: str = "") -> Fault:
    return Fault(
        "Unsupported Operation",
        f"Operation {operation.capitalize()} is not supported for {entity}{hint}",
        code="500",
    )


def _missing(field: str) -> Fault:
    return Fault(
        "Required param missing, need to supply the required value for the API", field, code="2020"
    )


def _stale(entity: str, object_id: str) -> Fault:
    return Fault(
        "Stale Object Error",
        f"Stale Object Error : You and another user were working on the same thing. {entity}"
        f" {object_id} has a newer SyncToken; read it again and resubmit.",
        code="5010",
    )


def add_routes(app: web.Application) -> None:
    app.router.add_post("/v3/company/{realm_id}/{entity}", write_endpoint, name="write")
