"""The command line: parses arguments, calls into the package, maps errors to exit codes."""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from qbo_events import __version__
from qbo_events import config as config_module
from qbo_events.config import Config
from qbo_events.errors import ConfigError, QboEventsError, StartupError

EXIT_OK, EXIT_FAILURE, EXIT_USAGE = 0, 1, 2


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    handler: Callable[[argparse.Namespace], int] = args.handler
    try:
        return handler(args)
    except ConfigError as exc:
        for problem in exc.problems:
            print(f"config: {problem}", file=sys.stderr)
        return EXIT_USAGE
    except StartupError as exc:
        print(f"qbo-events: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except QboEventsError as exc:
        print(f"qbo-events: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    except KeyboardInterrupt:
        return EXIT_FAILURE


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="qbo-events",
        description="QuickBooks Online changes delivered as signed callbacks.",
    )
    parser.add_argument("--version", action="version", version=f"qbo-events {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, help: str, handler: Callable[[argparse.Namespace], int]) -> Any:
        sub = commands.add_parser(name, help=help, description=help)
        sub.set_defaults(handler=handler)
        return sub

    def with_config(sub: argparse.ArgumentParser) -> None:
        sub.add_argument(
            "--config",
            type=Path,
            help="config file (default: $QBO_EVENTS_CONFIG, else ./config.toml)",
        )

    with_config(command("run", "run the daemon in the foreground", _run))
    with_config(command("check", "validate the config and print a summary", _check))
    with_config(command("status", "show the running daemon's /status as a table", _status))

    deliveries = command("deliveries", "list or re-queue deliveries", _no_action)
    actions = deliveries.add_subparsers(dest="action", required=True, metavar="ACTION")
    listing = actions.add_parser(
        "list",
        help="list pending or dead-lettered deliveries",
        description="List pending or dead-lettered deliveries. Exits 1 when there is no outbox"
        " in state_dir (it is never created here).",
    )
    listing.set_defaults(handler=_deliveries_list)
    with_config(listing)
    listing.add_argument("--instance", help="only this instance's deliveries")
    listing.add_argument("--dead", action="store_true", help="dead-lettered only")
    listing.add_argument(
        "--limit", type=int, default=100, help="list at most this many (default %(default)s)"
    )
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

    from qbo_events import demo, sandbox

    demo.add_arguments(
        command("demo", "run sandbox, daemon and a verifying receiver together", demo.run_command)
    )
    authorize = command(
        "authorize", "exchange an OAuth authorization code for tokens and store them", _authorize
    )
    with_config(authorize)
    authorize.add_argument("--instance", required=True, help="the instance to store tokens for")
    authorize.add_argument(
        "--code", required=True, help="the authorization code (the redirect's code)"
    )
    authorize.add_argument(
        "--redirect-uri", required=True, help="the redirect URI the consent request named"
    )
    authorize.add_argument(
        "--realm-id",
        help="the redirect's realmId: refused before the code is used unless it is the "
        "instance's realm_id",
    )

    connect = command(
        "connect",
        "print a single-use link that connects a QuickBooks company to an instance",
        _connect,
    )
    with_config(connect)
    connect.add_argument("--instance", required=True, help="the instance to connect")
    connect.add_argument(
        "--valid",
        default="1h",
        help="how long the link (with --local: the wait) lasts: 90s, 15m, 1h, 2d"
        " (default %(default)s)",
    )
    connect.add_argument(
        "--local",
        action="store_true",
        help="take the redirect on a one-shot listener on 127.0.0.1 instead of the webhook "
        "listener; prints (and tries to open) the authorization URL and waits",
    )
    connect.add_argument(
        "--port",
        type=int,
        default=0,
        help="with --local: the port to listen on (default: a free one, unless "
        "quickbooks.redirect_uri is a localhost URI, whose port is used)",
    )
    disconnect = command(
        "disconnect",
        "revoke an instance's grant at QuickBooks and forget its tokens",
        _disconnect,
    )
    with_config(disconnect)
    disconnect.add_argument("--instance", required=True, help="the instance to disconnect")

    sandbox.add_arguments(
        command("sandbox", "serve the simulated QuickBooks Online API", sandbox.run_command)
    )
    return parser


def _load(args: argparse.Namespace) -> tuple[Config, Path]:
    path = args.config or config_module.default_path()
    return config_module.load(path), path


def _no_action(_: argparse.Namespace) -> int:
    return EXIT_USAGE


def _run(args: argparse.Namespace) -> int:
    import uvloop

    from qbo_events.app import Daemon

    config, path = _load(args)
    return int(uvloop.run(Daemon(config, path).run()))


def _check(args: argparse.Namespace) -> int:
    from qbo_events import poll_budget
    from qbo_events.app import outbox_path
    from qbo_events.connect.links import redirect_uri
    from qbo_events.connect.status import describe
    from qbo_events.connect.status import line as connection_line
    from qbo_events.connect.store import read_connections

    config, path = _load(args)
    for warning in poll_budget.warnings(config):
        # Apart from the errors (stdout stays the summary) and no reason to refuse the file.
        print(f"warning: {warning}", file=sys.stderr)
    print(f"{path}: ok")
    print(f"  state_dir   {config.state_dir}")
    print(f"  webhooks    {config.http.webhook_listen}{config.http.webhook_path}")
    print(f"  health      {config.http.health_listen}")
    print(f"  delivery    {config.delivery.format}, {config.delivery.workers} workers")
    print(f"  connect     redirect {redirect_uri(config) or '(none: --local only)'}")
    print(f"  instances   {len(config.instances)}")
    connections = read_connections(outbox_path(config))
    for inst in config.instances:
        poller = inst.event.poller
        # A webhook-only instance polls nothing: its interval would mislead; its filter holds.
        reads = (
            f"{len(poller.resources)} resources every {poller.interval_seconds:g} s"
            if inst.polls
            else f"webhooks only, {len(poller.resources)} resources"
        )
        slow = [name for name in poller.resources if name in config_module.SLOW_RESOURCES]
        if inst.polls and slow and poller.slow_interval_seconds is not None:
            reads += f" ({len(slow)} of them every {poller.slow_interval_seconds:g} s)"
        print(
            f"    {inst.name}: realm {inst.realm_id or '(learned by connecting)'}, "
            f"{inst.event.vendor.type}, {reads} "
            f"-> {inst.callback_url}"
            f"{' (signed)' if inst.signature_key else ''}"
        )
        row = connections.get(inst.name)
        print(f"      {connection_line(describe(inst, row, refused=False))}")
    return EXIT_OK


def _deliveries_list(args: argparse.Namespace) -> int:
    from qbo_events.app import outbox_path
    from qbo_events.outbox import Outbox

    config, _ = _load(args)

    async def listing() -> list[Any]:
        # create=False: a state_dir that is not there is an error (exit 1), never a new one.
        async with Outbox(outbox_path(config), create=False) as outbox:
            return await outbox.listing(dead=args.dead, instance=args.instance, limit=args.limit)

    rows = asyncio.run(listing())
    print(f"{'EVENT':<37} {'INSTANCE':<16} {'OBJECT':<28} {'TYPE':<8} {'TRIES':>5}  NEXT / ERROR")
    for row in rows:
        when = "dead" if row.state == "dead" else _ago(row.next_at)
        obj = f"{row.object_type}/{row.object_id}"
        print(
            f"{row.event_id:<37} {row.instance:<16} {obj:<28} {row.event_type:<8} "
            f"{row.attempts:>5}  {when}{' ' + row.last_error if row.last_error else ''}"
        )
    print(f"{len(rows)} {'dead-lettered' if args.dead else 'pending'} deliveries")
    return EXIT_OK


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


def _authorize(args: argparse.Namespace) -> int:
    from qbo_events.app import outbox_path
    from qbo_events.outbox import Outbox
    from qbo_events.quickbooks.authorize import authorize

    config, _ = _load(args)
    instance = config.instance(args.instance)
    if instance is None:
        print(f"qbo-events: no instance named {args.instance!r} in the config", file=sys.stderr)
        return EXIT_USAGE
    if args.realm_id is not None and args.realm_id != instance.realm_id:
        print(
            f"qbo-events: the authorization is for realm {args.realm_id}, but instance "
            f"{instance.name} serves realm {instance.realm_id}; the code was not used. Sign in "
            f"to the company with realm ID {instance.realm_id}, or authorize the instance that "
            f"serves realm {args.realm_id}",
            file=sys.stderr,
        )
        return EXIT_USAGE

    async def exchange() -> str:
        done = await authorize(
            config,
            instance,
            code=args.code,
            redirect_uri=args.redirect_uri,
            realm_given=args.realm_id is not None,
        )
        async with Outbox(outbox_path(config)) as outbox:
            await outbox.save_tokens(instance.name, done.tokens)
        return done.unconfirmed

    unconfirmed = asyncio.run(exchange())
    if unconfirmed:
        print(
            f"qbo-events: QuickBooks could not confirm the realm ({unconfirmed}); "
            "stored on the strength of --realm-id",
            file=sys.stderr,
        )
    print(
        f"stored new tokens for {args.instance}; "
        "`systemctl reload qbo-events` makes a running daemon use them"
    )
    return EXIT_OK


def _instance(config: Config, name: str) -> Any:
    instance = config.instance(name)
    if instance is None:
        raise ConfigError([f"instances: no instance named {name!r}"])
    return instance


def _connect(args: argparse.Namespace) -> int:
    from qbo_events.connect import command as connect_command
    from qbo_events.connect.links import parse_duration

    config, _ = _load(args)
    instance = _instance(config, args.instance)
    try:
        valid = parse_duration(args.valid)
    except ValueError as exc:
        print(f"qbo-events: --valid: {exc}", file=sys.stderr)
        return EXIT_USAGE
    if args.local:
        done = asyncio.run(
            connect_command.local(
                config, instance, port=args.port, valid=valid, say=lambda s: print(s, flush=True)
            )
        )
        print(done)
        return EXIT_OK
    link = asyncio.run(connect_command.mint_link(config, instance, valid))
    until = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(time.time() + valid))
    print(link)
    print(f"single use, valid until {until}: open it to connect {instance.name}")
    return EXIT_OK


def _disconnect(args: argparse.Namespace) -> int:
    from qbo_events.connect import command as connect_command

    config, _ = _load(args)
    instance = _instance(config, args.instance)
    asyncio.run(connect_command.disconnect(config, instance, say=print))
    return EXIT_OK


def _status(args: argparse.Namespace) -> int:
    from qbo_events.status_table import fetch_and_print, fetch_and_print_recorded

    path = args.config or config_module.default_path()
    try:
        config = config_module.load(path)
    except ConfigError:
        # A broken file on disk is when an operator most needs to see the daemon that still runs.
        return fetch_and_print_recorded(Path(path))
    return fetch_and_print(config)


def _ago(at: float) -> str:
    delta = at - time.time()
    return "now" if delta <= 0 else f"in {delta:.0f} s"
