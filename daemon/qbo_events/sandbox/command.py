"""`qbo-events sandbox`: its arguments, the start-up banner, and running until SIGINT/SIGTERM."""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys

import uvloop

from .options import SandboxOptions
from .server import Sandbox

DEFAULT_PORT = 8085


def add_arguments(parser: argparse.ArgumentParser) -> None:
    d = SandboxOptions()
    add = parser.add_argument
    add("--host", default=d.host, help="address to listen on (default %(default)s)")
    add("--port", type=int, default=DEFAULT_PORT, help="0 picks a free port (default %(default)s)")
    add(
        "--realm-id",
        dest="realm_ids",
        action="append",
        metavar="ID",
        help=f"a company to simulate; repeat for several (default {d.realm_ids[0]})",
    )
    add(
        "--client-id",
        default=d.client_id,
        help="the OAuth client id the token endpoint accepts (default %(default)s)",
    )
    add(
        "--client-secret",
        default=d.client_secret,
        help="the OAuth client secret the token endpoint accepts (default %(default)s)",
    )
    add(
        "--refresh-token",
        default=d.refresh_token,
        help="first valid refresh token; further realms get '<token>-<realm id>' "
        "(default %(default)s)",
    )
    add(
        "--auth-code",
        default=d.auth_code,
        help="code accepted once by grant_type=authorization_code (default %(default)s)",
    )
    add(
        "--verifier-token",
        default=d.verifier_token,
        help="webhook signing key (default %(default)s)",
    )
    add("--webhook-url", default=d.webhook_url, help="where to post webhooks (default: none)")
    add(
        "--webhook-format",
        choices=("legacy", "cloudevents"),
        default=d.webhook_format,
        help="the webhook body QuickBooks sends (default %(default)s)",
    )
    add(
        "--seed",
        type=int,
        default=d.seed,
        metavar="N",
        help="objects per entity made before serving (default %(default)s)",
    )
    add(
        "--rate",
        type=float,
        default=d.rate,
        metavar="R",
        help="changes per second made by the simulated companies (default %(default)s)",
    )
    add(
        "--refresh-hard-expiry",
        type=int,
        default=d.refresh_hard_expiry,
        metavar="SECONDS",
        help="a new grant's refresh tokens stop working this long after it, refreshed or not "
        "(default %(default)s: five years)",
    )
    add(
        "--redirect-uri",
        dest="redirect_uris",
        action="append",
        metavar="URI",
        help="a redirect URI registered for the app; repeat for several "
        "(default: any absolute http(s) URI)",
    )
    add(
        "--random-seed",
        type=int,
        default=None,
        metavar="N",
        help="makes the objects and changes repeatable",
    )


def options_from(args: argparse.Namespace) -> SandboxOptions:
    """Raise ValueError naming the first out-of-range argument."""
    if not 0 <= args.port <= 65535:
        raise ValueError("--port: must be 0..65535")
    if args.seed < 0:
        raise ValueError("--seed: must be >= 0")
    if args.rate < 0:
        raise ValueError("--rate: must be >= 0")
    if args.refresh_hard_expiry <= 0:
        raise ValueError("--refresh-hard-expiry: must be > 0")
    realm_ids = tuple(args.realm_ids or SandboxOptions().realm_ids)
    if len(set(realm_ids)) != len(realm_ids):
        raise ValueError("--realm-id: each realm may be given once")
    return SandboxOptions(
        host=args.host,
        port=args.port,
        realm_ids=realm_ids,
        client_id=args.client_id,
        client_secret=args.client_secret,
        refresh_token=args.refresh_token,
        auth_code=args.auth_code,
        verifier_token=args.verifier_token,
        webhook_url=args.webhook_url,
        webhook_format=args.webhook_format,
        seed=args.seed,
        rate=args.rate,
        random_seed=args.random_seed,
        refresh_hard_expiry=args.refresh_hard_expiry,
        redirect_uris=tuple(args.redirect_uris or ()),
    )


def banner(sandbox: Sandbox) -> str:
    o = sandbox.options
    lines = [
        f"QuickBooks sandbox listening on {sandbox.base_url}",
        f"  api base url:    {sandbox.base_url}  (API under /v3/company/<realm id>/...)",
        f"  token url:       {sandbox.token_url}",
        f"  authorize url:   {sandbox.authorize_url}",
        f"  discovery url:   {sandbox.discovery_url}",
        f"  control api:     {sandbox.base_url}/_sandbox/  (GET it for the list of endpoints)",
        f"  client id:       {o.client_id}",
        f"  client secret:   {o.client_secret}",
        f"  auth code:       {o.auth_code}  (accepted once, for realm {o.realm_ids[0]})",
        f"  verifier token:  {o.verifier_token}",
        f"  webhook url:     {o.webhook_url or '(none)'}",
        f"  webhook format:  {o.webhook_format}",
        f"  seed:            {o.seed} objects per entity",
        f"  rate:            {o.rate} changes per second",
        f"  hard expiry:     {o.refresh_hard_expiry} s after a grant",
        f"  redirect uris:   {', '.join(o.redirect_uris) or '(any)'}",
    ]
    for realm, token in o.first_refresh_tokens().items():
        lines.append(f"  realm id:        {realm}  refresh token: {token}")
    return "\n".join(lines)


async def _serve(options: SandboxOptions) -> None:
    sandbox = Sandbox(options)
    await sandbox.start()
    print(banner(sandbox), flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    signals = (signal.SIGINT, signal.SIGTERM)
    for signum in signals:
        loop.add_signal_handler(signum, stop.set)
    try:
        await sandbox.run(stop)
    finally:
        for signum in signals:
            loop.remove_signal_handler(signum)
    print("QuickBooks sandbox stopped", flush=True)


def run_command(args: argparse.Namespace) -> int:
    """Exit code: 0 after SIGINT/SIGTERM, 1 when the port cannot be bound, 2 for bad arguments."""
    try:
        options = options_from(args)
    except ValueError as error:
        print(f"qbo-events sandbox: {error}", file=sys.stderr)
        return 2
    try:
        uvloop.run(_serve(options))
    except OSError as error:
        print(f"qbo-events sandbox: {error}", file=sys.stderr)
        return 1
    return 0
