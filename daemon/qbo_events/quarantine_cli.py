"""`qbo-events quarantine list|show ID|retry [ID]`: the arguments and the printing.

The work is quarantine.py's, which the admin API calls too. These commands open the outbox
beside a running daemon (SQLite, another process) and never create one.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

import msgspec

from qbo_events import config as config_module
from qbo_events import quarantine
from qbo_events.config import Config
from qbo_events.outbox import Outbox

T = TypeVar("T")
EXIT_OK, EXIT_FAILURE = 0, 1


def add_arguments(
    parser: argparse.ArgumentParser, with_config: Callable[[argparse.ArgumentParser], None]
) -> None:
    actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    listing = actions.add_parser(
        "list",
        help="list the quarantined webhook bodies",
        description="List the signed webhook bodies the daemon could not understand, oldest"
        " first. Exits 1 when there is no outbox in state_dir (it is never created here).",
    )
    listing.set_defaults(handler=_list)
    with_config(listing)
    listing.add_argument(
        "--limit", type=int, default=100, help="list at most this many (default %(default)s)"
    )
    listing.add_argument("--json", action="store_true", help="one JSON object a line")
    showing = actions.add_parser(
        "show",
        help="print one quarantined body",
        description="Print one quarantined body (indented when it is JSON) and why it was kept."
        " Exits 1 when there is none with that id.",
    )
    showing.set_defaults(handler=_show)
    with_config(showing)
    showing.add_argument("id", type=int, metavar="ID")
    again = actions.add_parser(
        "retry",
        help="parse quarantined bodies again and accept what now parses",
        description="Parse the quarantined bodies (all, or the one with ID) again, as the"
        " webhook listener would now; accept the events of those that parse and remove them"
        " from the quarantine; the others stay, with the reason they fail for now. A running"
        " daemon delivers the accepted events at its next rescan. Exits 1 when ID matches none.",
    )
    again.set_defaults(handler=_retry)
    with_config(again)
    again.add_argument("id", type=int, nargs="?", metavar="ID", help="only this body")


def _with_outbox(args: argparse.Namespace, work: Callable[[Outbox, Config], Awaitable[T]]) -> T:
    from qbo_events.app import outbox_path

    config = config_module.load(args.config or config_module.default_path())

    async def run() -> T:
        # create=False: a state_dir that is not there is an error (exit 1), never a new one.
        # The dedupe window as the daemon has it: an accept prunes the dedupe table by it.
        async with Outbox(
            outbox_path(config),
            create=False,
            durability=config.outbox.durability,
            max_pending=config.outbox.max_pending,
            dedupe_window=config.outbox.dedupe_window_days * 86400,
        ) as outbox:
            return await work(outbox, config)

    return asyncio.run(run())


def _list(args: argparse.Namespace) -> int:
    async def work(outbox: Outbox, _: Config) -> tuple[list[quarantine.Quarantined], int]:
        rows = await quarantine.list_quarantined(outbox, limit=args.limit)
        return rows, await quarantine.count(outbox)

    rows, total = _with_outbox(args, work)
    if args.json:
        for row in rows:
            sys.stdout.write(msgspec.json.encode(row).decode() + "\n")
        return EXIT_OK
    print(f"{'ID':>6}  {'RECEIVED (UTC)':<20} {'BYTES':>8}  REASON")
    for row in rows:
        print(f"{row.id:>6}  {_when(row.received_at):<20} {row.size:>8}  {row.reason}")
    shown = f"{len(rows)} of {total}" if len(rows) < total else f"{total}"
    print(f"{shown} quarantined webhook bodies")
    return EXIT_OK


def _show(args: argparse.Namespace) -> int:
    async def work(outbox: Outbox, _: Config) -> quarantine.Shown | None:
        return await quarantine.show(outbox, args.id)

    shown = _with_outbox(args, work)
    if shown is None:
        print(f"qbo-events: no quarantined body with id {args.id}", file=sys.stderr)
        return EXIT_FAILURE
    entry = shown.entry
    print(f"id {entry.id}, received {_when(entry.received_at)} UTC, {entry.size} bytes")
    print(f"reason: {entry.reason}")
    print()
    print(shown.body)
    return EXIT_OK


def _retry(args: argparse.Namespace) -> int:
    async def work(outbox: Outbox, config: Config) -> quarantine.Retried:
        return await quarantine.retry(outbox, config, args.id)

    done = _with_outbox(args, work)
    if args.id is not None and not done.tried:
        print(f"qbo-events: no quarantined body with id {args.id}", file=sys.stderr)
        return EXIT_FAILURE
    print(
        f"retried {done.tried} quarantined webhook bodies: {len(done.parsed)} now parse and left"
        f" the quarantine, {len(done.failing)} still fail"
    )
    if done.parsed:
        print(
            f"accepted {done.new} new events ({done.events - done.new} already seen)"
            + (f"; {done.unrouted} entities reached no instance" if done.unrouted else "")
        )
        if done.new:
            print("a running daemon delivers them at its next rescan (within seconds)")
    for failing in done.failing:
        print(f"  still quarantined: {failing.id}: {failing.reason}")
    return EXIT_OK


def _when(at: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(at))
