"""The admin HTTP API's handlers: instances, deliveries (list, show, replay, retry).

Reads are open on the private listener; every action needs `Authorization: Bearer <token>` with
`http.admin_token(_file)`: 401 without it or with another, 403 while no token is configured. The
handlers call the same functions as the CLI (deliveries.py), so the two cannot drift apart.
"""

from __future__ import annotations

import hmac
import time
from collections.abc import Awaitable, Callable
from typing import Any, Final, Protocol

import msgspec
from aiohttp import web

from qbo_events import activity, deliveries, quarantine, resync_requests
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
from qbo_events.config import Config, Instance
from qbo_events.connect.links import parse_duration
from qbo_events.errors import ConfigError, OutboxError
from qbo_events.logs import redact
from qbo_events.outbox import Outbox
from qbo_events.resync_store import ResyncError, ResyncStore
from qbo_events.sinks import endpoint_health

PREFIX: Final = "/api/v1"
MAX_LIMIT: Final = 10_000
MAX_BODY: Final = 64 * 1024


class AdminContext(Protocol):
    """What the API needs of the running daemon."""

    @property
    def config(self) -> Config: ...

    @property
    def open_outbox(self) -> Outbox | None: ...

    async def status(self) -> dict[str, Any]: ...

    def wake(self, instance: str) -> None: ...


Handler = Callable[[web.Request], Awaitable[web.Response]]


def _reply(value: msgspec.Struct, status: int = 200) -> web.Response:
    # Redacted like /status: no secret leaves the daemon whatever a struct carries.
    text = redact(msgspec.json.encode(value).decode())
    return web.Response(text=text, status=status, content_type="application/json")


def _error(status: int, message: str) -> web.Response:
    return _reply(Error(error=message), status)


class AdminApi:
    def __init__(self, context: AdminContext) -> None:
        self._ctx = context
        self._activity = activity.ActivityReader()

    def add_routes(self, app: web.Application, openapi: Handler) -> None:
        app.router.add_get(f"{PREFIX}/openapi.json", openapi)
        app.router.add_get(f"{PREFIX}/instances", self.instances)
        app.router.add_get(f"{PREFIX}/activity", self.activity)
        app.router.add_get(f"{PREFIX}/deliveries", self.list_deliveries)
        app.router.add_get(f"{PREFIX}/deliveries/{{event_id}}", self.show_delivery)
        app.router.add_post(f"{PREFIX}/replays", self._action(self.replay))
        app.router.add_post(f"{PREFIX}/retries", self._action(self.retry))
        instance = f"{PREFIX}/instances/{{name}}"
        app.router.add_post(f"{instance}/connect-links", self._action(self.connect_link))
        app.router.add_post(f"{instance}/resume", self._action(self.resume))
        app.router.add_post(f"{instance}/resyncs", self._action(self.start_resync))
        app.router.add_get(f"{instance}/resync", self.show_resync)
        app.router.add_post(f"{instance}/resync-cancel", self._action(self.cancel_resync))
        app.router.add_get(f"{PREFIX}/quarantine", self.list_quarantine)
        app.router.add_get(f"{PREFIX}/quarantine/{{id}}", self.show_quarantined)
        app.router.add_post(f"{PREFIX}/quarantine-retries", self._action(self.retry_quarantined))

    # -- guards --------------------------------------------------------------------------------

    def _action(self, handler: Handler) -> Handler:
        async def guarded(request: web.Request) -> web.Response:
            token = self._ctx.config.http.admin_token
            if not token:
                return _error(403, "admin actions are off: set http.admin_token_file")
            given = request.headers.get("Authorization", "")
            scheme, _, value = given.partition(" ")
            if scheme.lower() != "bearer" or not hmac.compare_digest(
                value.strip().encode(), token.encode()
            ):
                answer = _error(401, "this action needs the admin token as a bearer token")
                answer.headers["WWW-Authenticate"] = 'Bearer realm="qbo-events"'
                return answer
            return await handler(request)

        return guarded

    def _outbox(self) -> Outbox:
        outbox = self._ctx.open_outbox
        if outbox is None:
            raise web.HTTPServiceUnavailable(
                text=msgspec.json.encode(Error(error="the outbox is not open")).decode(),
                content_type="application/json",
            )
        return outbox

    # -- reads ---------------------------------------------------------------------------------

    async def instances(self, _: web.Request) -> web.Response:
        status = await self._ctx.status()
        return _reply(InstancesView(instances=status.get("instances", {})))

    async def activity(self, request: web.Request) -> web.Response:
        try:
            hours = int(request.query.get("hours", "6"))
            if not 1 <= hours <= activity.MAX_HOURS:
                raise ValueError
        except ValueError:
            return _error(400, f"hours must be 1 to {activity.MAX_HOURS}")
        config = self._ctx.config
        names = [inst.name for inst in config.instances]
        try:
            since, until, found = await self._activity.read(
                # An attempt is written once its answer came: by the timeout, and a commit later.
                self._outbox(),
                names,
                hours,
                settle=config.delivery.timeout + 60,
            )
        except OutboxError as exc:
            return _error(503, f"the outbox cannot answer: {exc}")
        return _reply(
            Activity(hours=hours, since=since, until=until, minute=activity.MINUTE, instances=found)
        )

    async def list_deliveries(self, request: web.Request) -> web.Response:
        query = request.query
        try:
            state = query.get("state", "pending")
            if state not in deliveries.STATES:
                raise ValueError(f"state must be one of {', '.join(deliveries.STATES)}")
            limit = int(query.get("limit", "100"))
            if not 1 <= limit <= MAX_LIMIT:
                raise ValueError(f"limit must be 1 to {MAX_LIMIT}")
            since, until = query.get("since"), query.get("until")
            flt = deliveries.Filter(
                state=state,  # type: ignore[arg-type]  # checked against STATES above
                since=deliveries.parse_time(since) if since else None,
                until=deliveries.parse_time(until) if until else None,
                instance=query.get("instance") or None,
                object=query.get("object") or None,
                limit=limit,
            )
            found = deliveries.list_deliveries(self._outbox(), flt)
        except ValueError as exc:
            return _error(400, str(exc))
        except OutboxError as exc:
            return _error(503, f"the outbox cannot answer: {exc}")
        return _reply(DeliveryList(deliveries=found))

    async def show_delivery(self, request: web.Request) -> web.Response:
        event_id = request.match_info["event_id"]
        try:
            copies = deliveries.show(self._outbox(), self._ctx.config, event_id)
        except OutboxError as exc:
            return _error(503, f"the outbox cannot answer: {exc}")
        if not copies:
            return _error(404, f"no delivery with event id {event_id} is kept")
        return _reply(DeliveryCopies(copies=copies))

    # -- actions -------------------------------------------------------------------------------

    async def _body(self, request: web.Request, kind: type[msgspec.Struct]) -> Any:
        raw = await request.content.read(MAX_BODY + 1)
        if len(raw) > MAX_BODY:
            raise ValueError(f"the body is larger than {MAX_BODY} bytes")
        if not raw.strip():
            raise ValueError("a JSON body is required ({} for none of its fields)")
        try:
            return msgspec.json.decode(raw, type=kind)
        except msgspec.ValidationError as exc:
            raise ValueError(f"invalid body: {exc}") from None
        except msgspec.DecodeError:
            raise ValueError("the body is not JSON") from None

    async def replay(self, request: web.Request) -> web.Response:
        try:
            body: ReplayRequest = await self._body(request, ReplayRequest)
            if self._ctx.config.instance(body.instance) is None:
                return _error(404, f"no instance named {body.instance!r}")
            replay = deliveries.Replay(
                instance=body.instance,
                since=deliveries.parse_time(body.since) if body.since else None,
                until=deliveries.parse_time(body.until) if body.until else None,
                event_ids=tuple(body.event_ids),
                object=body.object,
            )
            count = await deliveries.replay(self._outbox(), replay, dry_run=body.dry_run)
        except ValueError as exc:
            return _error(400, str(exc))
        except OutboxError as exc:
            return _error(503, f"the outbox cannot take it: {exc}")
        if count and not body.dry_run:
            self._ctx.wake(body.instance)
        return _reply(ReplayResult(queued=count, dry_run=body.dry_run))

    async def retry(self, request: web.Request) -> web.Response:
        try:
            body: RetryRequest = await self._body(request, RetryRequest)
        except ValueError as exc:
            return _error(400, str(exc))
        if body.instance is not None and self._ctx.config.instance(body.instance) is None:
            return _error(404, f"no instance named {body.instance!r}")
        try:
            count = await self._outbox().requeue_dead(
                instance=body.instance, event_id=body.event_id
            )
        except OutboxError as exc:
            return _error(503, f"the outbox cannot take it: {exc}")
        for inst in self._ctx.config.instances:
            if body.instance in (None, inst.name):
                self._ctx.wake(inst.name)
        return _reply(RetryResult(requeued=count))

    # -- quarantine ----------------------------------------------------------------------------

    async def list_quarantine(self, request: web.Request) -> web.Response:
        try:
            limit = int(request.query.get("limit", "100"))
            if not 1 <= limit <= MAX_LIMIT:
                raise ValueError(f"limit must be 1 to {MAX_LIMIT}")
        except ValueError as exc:
            return _error(400, str(exc))
        outbox = self._outbox()
        try:
            found = await quarantine.list_quarantined(outbox, limit=limit)
            total = await quarantine.count(outbox)
        except OutboxError as exc:
            return _error(503, f"the outbox cannot answer: {exc}")
        return _reply(QuarantineList(quarantined=found, total=total))

    async def show_quarantined(self, request: web.Request) -> web.Response:
        try:
            quarantine_id = int(request.match_info["id"])
        except ValueError:
            return _error(404, "quarantine ids are numbers")
        if not 1 <= quarantine_id < 2**63:  # beyond SQLite's integers: no such row
            return _error(404, f"no quarantined body with id {quarantine_id}")
        try:
            shown = await quarantine.show(self._outbox(), quarantine_id)
        except OutboxError as exc:
            return _error(503, f"the outbox cannot answer: {exc}")
        if shown is None:
            return _error(404, f"no quarantined body with id {quarantine_id}")
        return _reply(shown)

    async def retry_quarantined(self, request: web.Request) -> web.Response:
        try:
            body: QuarantineRetryRequest = await self._body(request, QuarantineRetryRequest)
        except ValueError as exc:
            return _error(400, str(exc))
        try:
            done = await quarantine.retry(self._outbox(), self._ctx.config, body.id)
        except OutboxError as exc:
            return _error(503, f"the outbox cannot take it: {exc}")
        if body.id is not None and not done.tried:
            return _error(404, f"no quarantined body with id {body.id}")
        for name in done.instances:
            self._ctx.wake(name)
        return _reply(done)

    # -- one instance --------------------------------------------------------------------------

    def _instance(self, request: web.Request) -> Instance:
        name = request.match_info["name"]
        inst = self._ctx.config.instance(name)
        if inst is None:
            raise web.HTTPNotFound(
                text=msgspec.json.encode(Error(error=f"no instance named {name!r}")).decode(),
                content_type="application/json",
            )
        return inst

    async def connect_link(self, request: web.Request) -> web.Response:
        # Imported here: the connect commands import the app module, which imports this one.
        from qbo_events.connect.command import add_link, needs_client

        inst = self._instance(request)
        try:
            body: ConnectLinkRequest = await self._body(request, ConnectLinkRequest)
            valid = parse_duration(body.valid)
            config = self._ctx.config
            if not config.http.public_base_url:
                raise ValueError("http.public_base_url is not set: no link can reach the listener")
            needs_client(config)
            url = await add_link(self._outbox(), config, inst, valid)
        except ConfigError as exc:
            return _error(400, "; ".join(exc.problems))
        except ValueError as exc:
            return _error(400, str(exc))
        except OutboxError as exc:
            return _error(503, f"the outbox cannot take it: {exc}")
        return _reply(ConnectLink(url=url, expires_at=time.time() + valid))

    async def resume(self, request: web.Request) -> web.Response:
        inst = self._instance(request)
        try:
            resumed = await endpoint_health.resume(self._outbox(), inst.name)
        except OutboxError as exc:
            return _error(503, f"the outbox cannot take it: {exc}")
        if resumed:
            self._ctx.wake(inst.name)
        return _reply(ResumeResult(resumed=resumed))

    async def start_resync(self, request: web.Request) -> web.Response:
        inst = self._instance(request)
        try:
            body: ResyncRequest = await self._body(request, ResyncRequest)
            job = await resync_requests.request(
                ResyncStore(self._outbox()),
                inst,
                resources=body.resources,
                since=body.since,
                full=body.full,
            )
        except ValueError as exc:
            return _error(400, str(exc))
        except ResyncError as exc:
            return _error(409, str(exc))
        except OutboxError as exc:
            return _error(503, f"the outbox cannot take it: {exc}")
        return _reply(ResyncView(resync=job.summary()))

    async def show_resync(self, request: web.Request) -> web.Response:
        inst = self._instance(request)
        try:
            job = ResyncStore(self._outbox()).latest(inst.name)
        except OutboxError as exc:
            return _error(503, f"the outbox cannot answer: {exc}")
        if job is None:
            return _error(404, f"instance {inst.name} has had no resync")
        return _reply(ResyncView(resync=job.summary()))

    async def cancel_resync(self, request: web.Request) -> web.Response:
        inst = self._instance(request)
        try:
            job = await ResyncStore(self._outbox()).cancel(inst.name)
        except ResyncError as exc:
            return _error(409, str(exc))
        except OutboxError as exc:
            return _error(503, f"the outbox cannot take it: {exc}")
        return _reply(ResyncView(resync=job.summary()))
