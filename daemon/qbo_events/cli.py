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

    from qbo_events import deliveries_cli

    deliveries_cli.add_arguments(
        command("deliveries", "list, show, replay, re-queue or resume deliveries", _no_action),
        with_config,
    )

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
