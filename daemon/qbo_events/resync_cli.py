"""`qbo-events resync --instance NAME [--resources a,b] (--since T | --full | --cancel | --status)`.

The command records the job (or its cancellation) in the state directory's database and exits;
the running daemon takes the job up within a few seconds (sources/resync.py). It opens the
outbox beside a running daemon (SQLite, another process) and never creates one.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Awaitable, Callable
from typing import TypeVar

import orjson

from qbo_events import config as config_module
from qbo_events import resync_requests
from qbo_events.config import Config
from qbo_events.outbox import Outbox
from qbo_events.resync_store import Job, ResyncError, ResyncStore

T = TypeVar("T")
EXIT_OK, EXIT_FAILURE, EXIT_USAGE = 0, 1, 2


def add_arguments(
    parser: argparse.ArgumentParser, with_config: Callable[[argparse.ArgumentParser], None]
) -> None:
    parser.set_defaults(handler=_resync)
    with_config(parser)
    parser.add_argument("--instance", required=True, help="the instance to resync")
    parser.add_argument(
        "--resources",
        help="comma-separated resource names (default: the instance's event.poller.resources)",
    )
    what = parser.add_mutually_exclusive_group(required=True)
    what.add_argument(
        "--since",
        metavar="T",
        help="objects changed since T: RFC 3339 or a span back (90m, 2d); CDC within 30 days",
    )
    what.add_argument("--full", action="store_true", help="every object, read with Query")
    what.add_argument("--cancel", action="store_true", help="cancel the instance's running resync")
    what.add_argument("--status", action="store_true", help="print the instance's latest resync")


def _resync(args: argparse.Namespace) -> int:
    config = config_module.load(args.config or config_module.default_path())
    inst = config.instance(args.instance)
    if inst is None:
        print(f"qbo-events: no instance named {args.instance!r}", file=sys.stderr)
        return EXIT_USAGE
    if args.status:
        job = _with_store(config, _latest(args.instance))
        if job is None:
            print(f"{args.instance}: no resync yet")
            return EXIT_OK
        print(orjson.dumps(job.summary()).decode())
        return EXIT_OK
    if args.cancel:
        try:
            job = _with_store(config, lambda store: store.cancel(args.instance))
        except ResyncError as exc:
            print(f"qbo-events: {exc}", file=sys.stderr)
            return EXIT_FAILURE
        print(f"{job.id} cancelling")
        return EXIT_OK
    named = args.resources.split(",") if args.resources else None
    try:
        job = _with_store(
            config,
            lambda store: resync_requests.request(
                store, inst, resources=named, since=args.since, full=args.full
            ),
        )
    except ValueError as exc:
        print(f"qbo-events: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except ResyncError as exc:
        print(f"qbo-events: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    print(job.id)
    return EXIT_OK


def _latest(instance: str) -> Callable[[ResyncStore], Awaitable[Job | None]]:
    async def read(store: ResyncStore) -> Job | None:
        return store.latest(instance)

    return read


def _with_store(config: Config, work: Callable[[ResyncStore], Awaitable[T]]) -> T:
    from qbo_events.app import outbox_path

    async def run() -> T:
        # create=False: a state_dir that is not there is an error (exit 1), never a new one.
        async with Outbox(
            outbox_path(config), create=False, durability=config.outbox.durability
        ) as outbox:
            return await work(ResyncStore(outbox))

    return asyncio.run(run())
