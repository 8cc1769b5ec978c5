"""`qbo-events deliveries list|show|replay|retry|resume`: the arguments and the printing.

The work is deliveries.py's (and the outbox's, endpoint_health's), which the admin API calls too.
These commands open the outbox beside a running daemon (SQLite, another process) and never
create one.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from collections.abc import Callable
from typing import Any

import msgspec
import orjson

from qbo_events import config as config_module
from qbo_events import deliveries
from qbo_events.config import Config

EXIT_OK, EXIT_FAILURE, EXIT_USAGE = 0, 1, 2


def add_arguments(
    parser: argparse.ArgumentParser, with_config: Callable[[argparse.ArgumentParser], None]
) -> None:
    actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    listing = actions.add_parser(
        "list",
        help="list deliveries by state, time, instance and object",
        description="List deliveries, oldest first. Exits 1 when there is no outbox in"
        " state_dir (it is never created here).",
    )
    listing.set_defaults(handler=_deliveries_list)
    with_config(listing)
    listing.add_argument("--instance", help="only this instance's deliveries")
    listing.add_argument(
        "--state",
        choices=deliveries.STATES,
        default="pending",
        help="pending (not yet tried), retrying, dead, delivered (kept history_days) or all"
        " (default %(default)s)",
    )
    listing.add_argument("--dead", action="store_true", help="the same as --state dead")
    listing.add_argument(
        "--since", help="from this time: RFC 3339, or back from now like 30m, 1h, 2d"
    )
    listing.add_argument("--until", help="before this time (same forms)")
    listing.add_argument("--object", help="one object, TYPE/ID like invoices/123")
    listing.add_argument(
        "--limit", type=int, default=100, help="list at most this many (default %(default)s)"
    )
    listing.add_argument("--json", action="store_true", help="one JSON object a line")
    showing = actions.add_parser(
        "show",
        help="one event's body and every delivery attempt",
        description="Show every stored copy of an event: its body (as delivered, or as it would"
        " be sent now) and each attempt. Exits 1 when none is kept.",
    )
    showing.set_defaults(handler=_deliveries_show)
    with_config(showing)
    showing.add_argument("event_id", metavar="EVENT_ID")
    replaying = actions.add_parser(
        "replay",
        help="send delivered events again to the instance's current callback",
        description="Queue delivered events again (same eventId and body, per-object order"
        " kept, signed afresh) through the running daemon's senders. Prints how many.",
    )
    replaying.set_defaults(handler=_deliveries_replay)
    with_config(replaying)
    replaying.add_argument("--instance", required=True, help="the instance whose events to send")
    replaying.add_argument("--since", help="delivered from this time (RFC 3339 or 1h, 2d...)")
    replaying.add_argument("--until", help="delivered before this time")
    replaying.add_argument("--event", action="append", default=[], help="one event id (repeatable)")
    replaying.add_argument("--object", help="only this object, TYPE/ID like invoices/123")
    replaying.add_argument("--dry-run", action="store_true", help="only count them")
    again = actions.add_parser(
        "retry",
        help="re-queue dead-lettered deliveries",
        description="Re-queue dead-lettered deliveries. Exits 1 when there is no outbox in"
        " state_dir (it is never created here), or when --instance or --event matches none.",
    )
    again.set_defaults(handler=_deliveries_retry)
    with_config(again)
    again.add_argument("--instance", help="only this instance's dead-lettered deliveries")
    again.add_argument("--event", help="one event id")
    resuming = actions.add_parser(
        "resume",
        help="resume a paused (or failing) callback endpoint now",
        description="Resume an instance's paused or failing callback endpoint: its undelivered"
        " events fall due at once, and a running daemon takes it up within a few seconds."
        " Exits 1 when the endpoint is healthy already.",
    )
    resuming.set_defaults(handler=_deliveries_resume)
    with_config(resuming)
    resuming.add_argument("--instance", required=True, help="the instance whose endpoint to resume")


def _load(args: argparse.Namespace) -> tuple[Config, Any]:
    path = args.config or config_module.default_path()
    return config_module.load(path), path


def _deliveries_list(args: argparse.Namespace) -> int:
    config, _ = _load(args)
    try:
        flt = deliveries.Filter(
            state="dead" if args.dead else args.state,
            since=deliveries.parse_time(args.since) if args.since else None,
            until=deliveries.parse_time(args.until) if args.until else None,
            instance=args.instance,
            object=args.object,
            limit=args.limit,
        )
        rows = _with_outbox(config, lambda outbox: deliveries.list_deliveries(outbox, flt))
    except ValueError as exc:
        print(f"qbo-events: {exc}", file=sys.stderr)
        return EXIT_USAGE
    if args.json:
        for row in rows:
            sys.stdout.write(msgspec.json.encode(row).decode() + "\n")
        return EXIT_OK
    print(f"{'EVENT':<37} {'INSTANCE':<16} {'OBJECT':<28} {'TYPE':<8} {'TRIES':>5}  STATE")
    for row in rows:
        obj = f"{row.object_type}/{row.object_id}"
        if row.state == "delivered" and row.delivered_at is not None:
            when = f"delivered {_iso(row.delivered_at)}"
        elif row.state == "dead":
            when = "dead"
        else:
            when = f"{row.state}, next {_ago(row.next_at or 0.0)}"
        print(
            f"{row.event_id:<37} {row.instance:<16} {obj:<28} {row.event_type:<8} "
            f"{row.attempts:>5}  {when}{' ' + row.last_error if row.last_error else ''}"
        )
    state = "dead-lettered" if flt.state == "dead" else flt.state
    print(f"{len(rows)} {state} deliveries")
    return EXIT_OK


def _with_outbox(config: Config, read: Callable[[Any], Any]) -> Any:
    """Run `read` on the state_dir's outbox, opened without creating one."""
    from qbo_events.app import outbox_path
    from qbo_events.outbox import Outbox

    async def run() -> Any:
        # create=False: a state_dir that is not there is an error (exit 1), never a new one.
        async with Outbox(outbox_path(config), create=False) as outbox:
            result = read(outbox)
            return await result if asyncio.iscoroutine(result) else result

    return asyncio.run(run())


def _deliveries_show(args: argparse.Namespace) -> int:
    config, _ = _load(args)
    found = _with_outbox(config, lambda outbox: deliveries.show(outbox, config, args.event_id))
    if not found:
        print(f"qbo-events: no delivery with event id {args.event_id} is kept", file=sys.stderr)
        return EXIT_FAILURE
    for detail in found:
        item = detail.item
        print(
            f"{item.event_id} seq {item.seq}: {item.instance} {item.object_type}/"
            f"{item.object_id} {item.event_type}, {item.state}, accepted {_iso(item.accepted_at)}"
            + (f", delivered {_iso(item.delivered_at)}" if item.delivered_at else "")
        )
        print(orjson.dumps(detail.body, option=orjson.OPT_INDENT_2).decode())
        print(f"{len(detail.attempts)} attempts:")
        for a in detail.attempts:
            answer = f"HTTP {a.status}" if a.status is not None else "no answer"
            print(
                f"  {_iso(a.at)} {a.endpoint} {answer} in {a.latency_ms:.0f} ms"
                + (f": {a.error}" if a.error else "")
                + (f" -> {a.response[:200]!r}" if a.response else "")
            )
    return EXIT_OK


def _deliveries_replay(args: argparse.Namespace) -> int:
    config, _ = _load(args)
    if config.instance(args.instance) is None:
        print(f"qbo-events: no instance named {args.instance!r} in the config", file=sys.stderr)
        return EXIT_USAGE
    try:
        request = deliveries.Replay(
            instance=args.instance,
            since=deliveries.parse_time(args.since) if args.since else None,
            until=deliveries.parse_time(args.until) if args.until else None,
            event_ids=tuple(args.event),
            object=args.object,
        )
        count = _with_outbox(
            config, lambda outbox: deliveries.replay(outbox, request, dry_run=args.dry_run)
        )
    except ValueError as exc:
        print(f"qbo-events: {exc}", file=sys.stderr)
        return EXIT_USAGE
    if args.dry_run:
        print(f"would replay {count} deliveries to {args.instance}")
    else:
        print(f"queued {count} deliveries to {args.instance} again")
    return EXIT_OK


def _iso(at: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(at))


def _deliveries_retry(args: argparse.Namespace) -> int:
    from qbo_events.app import outbox_path
    from qbo_events.outbox import Outbox

    config, _ = _load(args)

    async def requeue() -> int:
        async with Outbox(outbox_path(config), create=False) as outbox:
            return await outbox.requeue_dead(instance=args.instance, event_id=args.event)

    count = asyncio.run(requeue())
    if not count and (args.instance or args.event):
        if args.event:
            what = f"no dead-lettered delivery with event id {args.event}"
            what += f" for instance {args.instance}" if args.instance else ""
        else:
            what = f"no dead-lettered deliveries for instance {args.instance}"
        print(f"qbo-events: {what}", file=sys.stderr)
        return EXIT_FAILURE
    print(f"re-queued {count} dead-lettered deliveries")
    return EXIT_OK


def _deliveries_resume(args: argparse.Namespace) -> int:
    from qbo_events.sinks.endpoint_health import resume

    config, _ = _load(args)
    if config.instance(args.instance) is None:
        print(f"qbo-events: no instance named {args.instance!r} in the config", file=sys.stderr)
        return EXIT_USAGE
    if not _with_outbox(config, lambda outbox: resume(outbox, args.instance)):
        print(f"qbo-events: {args.instance}'s endpoint is not paused or failing", file=sys.stderr)
        return EXIT_FAILURE
    print(f"resumed {args.instance}'s endpoint; its undelivered events are due now")
    return EXIT_OK


def _ago(at: float) -> str:
    delta = at - time.time()
    return "now" if delta <= 0 else f"in {delta:.0f} s"
