"""The command line: parses arguments, calls into the package, maps errors to exit codes."""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import msgspec
import orjson

from qbo_events import __version__, deliveries
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

    delivery_commands = command(
        "deliveries", "list, show, replay or re-queue deliveries", _no_action
    )
    actions = delivery_commands.add_subparsers(dest="action", required=True, metavar="ACTION")
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

    from qbo_events import quarantine_cli

    quarantine_cli.add_arguments(
        command("quarantine", "list, show or retry the webhook bodies not understood", _no_action),
        with_config,
    )
    from qbo_events import resync_cli

    resync_cli.add_arguments(
        command("resync", "read a company again and deliver every object found", _no_action),
        with_config,
    )
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
