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
    operation = request.query.get("operation", "").lower()
    # python-quickbooks voids payments and sales receipts as a sparse update that includes void.
    if operation == "update" and request.query.get("include", "").lower() == "void":
        operation = "void"
    if name.lower() == "companyinfo" and operation in ("", "update"):
        body = _entity_body(await request.read(), "CompanyInfo")
        info = company.company_info
        _check_sync_token(body, info, "CompanyInfo", info["Id"])
        return json_response({"CompanyInfo": company.update_company_info(body), **_now()})
    entity = BY_LOWER.get(name.lower())
    if entity is None or operation not in ("", *_OPERATIONS):
        raise _unsupported(operation or "Create", name)
    body = _entity_body(await request.read(), entity)
    if entity in catalog.TRANSACTIONS:
        body.pop("Active", None)  # transactions have no Active; deletes are deletes
    object_id = str(body.get("Id") or "")
    if operation in ("", "create", "update") and not object_id:
        if operation == "update":
            raise _missing("Id")
        if entity in catalog.NAME_LISTS:
            body["Active"] = True  # an entry is created active
        return json_response({entity: company.create(entity, body), **_now()})
    if operation == "delete" and (
        entity not in catalog.TRANSACTIONS or "Delete" not in catalog.operations(entity)
    ):
        raise _unsupported("Delete", entity, hint="; set Active to false to delete it")
    if operation == "void" and "Void" not in catalog.operations(entity):
        raise _unsupported("Void", entity)
    current = _current(company, entity, object_id, body)
    if operation == "delete":
        _apply(company, entity, "Delete", object_id)
        gone = {"domain": "QBO", "status": "Deleted", "Id": object_id}
        return json_response({entity: gone, **_now()})
    if operation == "void":
        _apply(company, entity, "Void", object_id)
    else:
        sparse = str(body.get("sparse")).lower() == "true"
        _check_update(entity, current, body, sparse=sparse)
        company.update(entity, object_id, body, sparse=sparse)
    return json_response({entity: company.get(entity, object_id), **_now()})


def _current(company: Company, entity: str, object_id: str, body: dict[str, Any]) -> dict[str, Any]:
    """The object a write names, checked as QuickBooks checks it: Id and SyncToken given, the
    object there (and active, unless the write reactivates it), the SyncToken the latest."""
    if not object_id:
        raise _missing("Id")
    current = company.get(entity, object_id)
    # An inactive entry takes one change: being made active again.
    if current is None or (current.get("Active") is False and body.get("Active") is not True):
        _check_sync_token(body, None, entity, object_id)
        raise object_not_found(entity, object_id)
    _check_sync_token(body, current, entity, object_id)
    return current


def _check_sync_token(
    body: dict[str, Any], current: dict[str, Any] | None, entity: str, object_id: str
) -> None:
    """Given (2020 otherwise) and, for an object that is there, its latest (5010 otherwise)."""
    if body.get("SyncToken") in (None, ""):
        raise _missing("SyncToken")
    if current is not None and str(body["SyncToken"]) != current["SyncToken"]:
        raise _stale(entity, object_id)


def _check_update(
    entity: str, current: dict[str, Any], body: dict[str, Any], *, sparse: bool
) -> None:
    """What QuickBooks refuses in an update, and what would make a webhook and a poll of the
    change disagree: a deactivation of an entry whose operation matrix has no Delete."""
    key = catalog.display_name_key(entity)
    if key is not None and not sparse and not body.get(key):
        raise _missing(key)
    if body.get("Active") is False and "Delete" not in catalog.operations(entity):
        raise _business_rule(f"{entity} entries cannot be made inactive in the sandbox")


def _apply(company: Company, entity: str, operation: str, object_id: str) -> None:
    try:
        company.apply(entity, operation, object_id)
    except ValueError as exc:  # e.g. voiding what is already void
        raise _business_rule(str(exc)) from None


def _now() -> dict[str, str]:
    return {"time": pacific_ms(utc_now())}


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


def _business_rule(detail: str) -> Fault:
    return Fault(
        "A business validation error has occurred while processing your request",
        f"Business Validation Error: {detail}",
        code="6000",
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
