"""The bodies QuickBooks answers with: Faults, the 401 and 429 shapes, and JSON encoding."""

from __future__ import annotations

import secrets
import time
from datetime import datetime
from typing import Any

import orjson
from aiohttp import web

from .clock import pacific_ms, utc_now


class Fault(Exception):
    """An answer in QuickBooks' `Fault` envelope; raised by handlers, rendered at one place."""

    def __init__(
        self,
        message: str,
        detail: str = "",
        *,
        code: str,
        fault_type: str = "ValidationFault",
        status: int = 400,
    ) -> None:
        super().__init__(f"{code} {message}: {detail}")
        self.message = message
        self.detail = detail
        self.code = code
        self.fault_type = fault_type
        self.status = status

    def body(self, now: datetime | None = None) -> dict[str, Any]:
        return {"Fault": self.item(), "time": pacific_ms(now or utc_now())}

    def item(self) -> dict[str, Any]:
        """The `Fault` object alone, as a batch item carries it."""
        error = {"Message": self.message, "Detail": self.detail, "code": self.code, "element": ""}
        return {"Error": [error], "type": self.fault_type}


def object_not_found(entity: str, object_id: str) -> Fault:
    return Fault(
        "Object Not Found",
        f"Object Not Found : Something you're trying to use has been made inactive. "
        f"Check the fields with accounts, customers, items, vendors or employees. "
        f"({entity} {object_id})",
        code="610",
    )


def parser_error(detail: str) -> Fault:
    return Fault("Error parsing query", f"QueryParserError: {detail}", code="4000")


def validation_error(detail: str) -> Fault:
    return Fault("Invalid query", f"QueryValidationError: {detail}", code="4001")


def json_response(data: Any, status: int = 200) -> web.Response:
    return web.Response(
        body=orjson.dumps(data), status=status, content_type="application/json", charset="UTF-8"
    )


def fault_response(fault: Fault) -> web.Response:
    return json_response(fault.body(), status=fault.status)


def unauthorized(detail: str) -> web.Response:
    """The JSON 401 QuickBooks sends for a missing, malformed, expired or revoked token."""
    body: dict[str, Any] = {
        "warnings": None,
        "intuitObject": None,
        "fault": {
            "error": [
                {
                    "message": "message=AuthenticationFailed; errorCode=003200; statusCode=401",
                    "detail": detail,
                    "code": "3200",
                    "element": None,
                }
            ],
            "type": "AUTHENTICATION",
        },
        "report": None,
        "queryResponse": None,
        "batchItemResponse": [],
        "attachableResponse": [],
        "syncErrorResponse": None,
        "requestId": None,
        "time": int(time.time() * 1000),
        "status": None,
        "cdcresponse": [],
    }
    response = json_response(body, status=401)
    response.headers["WWW-Authenticate"] = 'Bearer realm="Intuit", error="invalid_token"'
    return response


def forbidden() -> web.Response:
    """A valid token used on a company it was not issued for."""
    fault = Fault(
        "message=AuthorizationFailed; errorCode=003100; statusCode=403",
        "",
        code="3100",
        fault_type="SERVICE",
        status=403,
    )
    return fault_response(fault)


def throttled(retry_after: float | None = None) -> web.Response:
    """429 is XML even when JSON was asked for, as QuickBooks does it; no Retry-After unless
    a test asks for one."""
    xml = (
        f'<?xml version="1.0" encoding="UTF-8" standalone="yes"?>\n'
        f'<IntuitResponse time="{pacific_ms(utc_now())}" '
        f'xmlns="http://schema.intuit.com/finance/v3">'
        f'<Fault type="SERVICE"><Error code="3001">'
        f"<Message>message=ThrottleExceeded; errorCode=003001; statusCode=429</Message>"
        f"<Detail>The request limit was reached.  Try again later</Detail>"
        f"</Error></Fault></IntuitResponse>"
    )
    response = web.Response(text=xml, status=429, content_type="application/xml", charset="UTF-8")
    if retry_after is not None:
        response.headers["Retry-After"] = f"{retry_after:g}"
    return response


def server_error(status: int) -> web.Response:
    if status == 500:
        fault = Fault(
            "An application error has occurred while processing your request",
            "System Failure Error: An unexpected error occurred while accessing or saving "
            "your data. Please wait a few minutes and try again.",
            code="10000",
            fault_type="SystemFault",
            status=500,
        )
        return fault_response(fault)
    return web.Response(
        text="<html><body><h1>503 Service Unavailable</h1></body></html>",
        status=status,
        content_type="text/html",
    )


def new_intuit_tid() -> str:
    return f"1-{int(time.time()):x}-{secrets.token_hex(12)}"
