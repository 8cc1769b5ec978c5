"""The QuickBooks API under /v3/company/{realmId}: query, CDC, read by id, companyinfo, batch.

Writes (create, update, delete, void) are in `writes`."""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Awaitable, Callable
from typing import Any, Final

import orjson
from aiohttp import web

from . import catalog, query
from .auth import Unauthorized
from .cdc import cdc_response
from .clock import pacific_ms, utc_now
from .company import Company
from .responses import (
    Fault,
    fault_response,
    forbidden,
    json_response,
    object_not_found,
    parser_error,
    server_error,
    throttled,
    unauthorized,
    validation_error,
)
from .state import STATE, State

BATCH_LIMIT: Final = 30  # Intuit: at most 30 payloads per batch request
BY_LOWER: Final = {e.lower(): e for e in catalog.ENTITIES}
_READABLE: Final = {e.lower(): e for e in catalog.API_ENTITIES}

Handler = Callable[[web.Request, State, Company], Awaitable[web.Response]]


def api_call(handler: Handler) -> Callable[[web.Request], Awaitable[web.Response]]:
    """What every API call goes through, in QuickBooks' order: gateway faults, the bearer token,
    the company it was issued for, then the per-realm rate limits."""

    @functools.wraps(handler)
    async def guarded(request: web.Request) -> web.Response:
        state = request.app[STATE]
        if state.faults.slow > 0:
            await asyncio.sleep(state.faults.slow)
        refusal = state.faults.take()
        if refusal == 429:
            return throttled(state.faults.retry_after)
        if refusal is not None:
            return server_error(refusal)
        try:
            token_realm = state.tokens.authenticate(request.headers.get("Authorization"))
        except Unauthorized as error:
            return unauthorized(str(error))
        realm_id = request.match_info["realm_id"]
        if token_realm != realm_id or realm_id not in state.companies:
            return forbidden()
        if not state.limiter.admit(realm_id):
            return throttled(state.faults.retry_after)
        try:
            return await handler(request, state, state.companies[realm_id])
        except Fault as fault:
            return fault_response(fault)

    return guarded


def run_query(company: Company, text: str) -> dict[str, Any]:
    """The answer to one query statement, as the query endpoint and batch items give it."""
    parsed = query.parse(text)
    if parsed.entity in catalog.API_ENTITIES:
        objects = company.objects(parsed.entity)
    else:
        raise parser_error(
            f"Invalid entity name: {parsed.entity} (entity names are case-sensitive)"
        )
    unknown = next(query.unknown_fields(parsed, objects), None)
    if unknown is not None:
        raise validation_error(f"property '{unknown}' is not queryable")
    # Every entity that carries Active hides inactive entries unless the WHERE names Active
    # (`Active IN (true, false)`). Intuit notes the default may vary by entity; one rule for all
    # is the strict reading: a client polling name lists by LastUpdatedTime must ask for Active
    # explicitly to see their deletes.
    if parsed.entity in catalog.NAME_LISTS and not parsed.mentions("Active"):
        objects = [o for o in objects if o.get("Active", True)]
    rows = query.select(parsed, objects)
    now = pacific_ms(utc_now())
    if parsed.count:
        return {"QueryResponse": {"totalCount": len(rows)}, "time": now}
    found = query.page(parsed, rows)
    if not found:
        return {"QueryResponse": {}, "time": now}
    body = {parsed.entity: found, "startPosition": parsed.start_position, "maxResults": len(found)}
    return {"QueryResponse": body, "time": now}


@api_call
async def query_endpoint(request: web.Request, state: State, company: Company) -> web.Response:
    if request.method == "GET":
        text = request.query.get("query", "")
    elif request.content_type == "application/x-www-form-urlencoded":
        text = str((await request.post()).get("query", ""))
    else:  # application/text, text/plain: the statement is the body
        text = await request.text()
    if not text.strip():
        raise parser_error('Encountered "<EOF>" at line 1, column 1. Was expecting: "select"')
    return json_response(run_query(company, text))


@api_call
async def cdc_endpoint(request: web.Request, state: State, company: Company) -> web.Response:
    body = cdc_response(
        company,
        request.query.get("entities", ""),
        request.query.get("changedSince"),
        now=utc_now(),
        cap=state.options.cdc_max_objects,
        rng=state.rng,
    )
    return json_response(body)


@api_call
async def read_endpoint(request: web.Request, state: State, company: Company) -> web.Response:
    name = request.match_info["entity"]
    object_id = request.match_info["object_id"]
    if name.lower() == "companyinfo":
        if object_id != company.realm_id:
            raise object_not_found("CompanyInfo", object_id)
        return json_response({"CompanyInfo": company.company_info, "time": pacific_ms(utc_now())})
    entity = _READABLE.get(name.lower())
    if entity is None:
        raise Fault(
            "Unsupported Operation", f"Operation Read is not supported for {name}", code="500"
        )
    obj = company.get(entity, object_id)
    if obj is None:
        raise object_not_found(entity, object_id)
    return json_response({entity: obj, "time": pacific_ms(utc_now())})


@api_call
async def batch_endpoint(request: web.Request, state: State, company: Company) -> web.Response:
    try:
        body = orjson.loads(await request.read())
        items = body["BatchItemRequest"]
        if not isinstance(items, list):
            raise TypeError(items)
    except (orjson.JSONDecodeError, KeyError, TypeError):
        raise Fault(
            "Request has invalid or unsupported property",
            "Expected a JSON object with a BatchItemRequest list",
            code="2010",
        ) from None
    if len(items) > BATCH_LIMIT:
        raise Fault(
            "Batch size limit exceeded",
            f"The batch holds {len(items)} items; at most {BATCH_LIMIT} are allowed",
            code="4000",
        )
    answers: list[dict[str, Any]] = []
    for item in items:
        bid = item.get("bId") if isinstance(item, dict) else None
        try:
            if not isinstance(item, dict) or not isinstance(item.get("Query"), str):
                raise Fault(
                    "Unsupported Operation",
                    "The sandbox's batch endpoint takes Query items only",
                    code="500",
                )
            answers.append(
                {"bId": bid, "QueryResponse": run_query(company, item["Query"])["QueryResponse"]}
            )
        except Fault as fault:
            answers.append({"bId": bid, "Fault": fault.item()})
    return json_response({"BatchItemResponse": answers, "time": pacific_ms(utc_now())})


def add_routes(app: web.Application) -> None:
    prefix = "/v3/company/{realm_id}"
    app.router.add_get(f"{prefix}/query", query_endpoint, name="query")
    app.router.add_post(f"{prefix}/query", query_endpoint, name="query-post")
    app.router.add_get(f"{prefix}/cdc", cdc_endpoint, name="cdc")
    app.router.add_post(f"{prefix}/batch", batch_endpoint, name="batch")
    app.router.add_get(f"{prefix}/{{entity}}/{{object_id}}", read_endpoint, name="read")
