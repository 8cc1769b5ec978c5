"""The PostgreSQL store's delivery bookkeeping without HTTP: the deep-object case of issue 13.

50 objects each with 600 queued events (30,000 rows) are accepted, then 1 and then 2 claimer
processes claim (batches of 50, through the heads table) and complete them until none is left.
Prints the intake rate and the claim+complete events/s for each number of claimers; each run has
its own schema, dropped afterwards.

    .venv/bin/python bench/pg_claims.py [--dsn DSN] [--objects 50] [--depth 600]
        [--claimers 1,2] [--rounds 3] [--cap N]

Run as `pg_claims.py claimer ...` it is one claiming process (started by the benchmark).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import statistics
import subprocess
import sys
import time

import psycopg
from psycopg import sql
from qbo_events.pg import Connection
from qbo_events.pg import claims as c
from qbo_events.pg.migrations import migrate

DEFAULT_DSN = "postgresql://postgres@127.0.0.1:5432/test"


async def connect(dsn: str, schema: str) -> Connection:
    return await psycopg.AsyncConnection.connect(
        dsn, autocommit=True, options=f"-c search_path={schema}"
    )


async def fill(dsn: str, schema: str, objects: int, depth: int) -> float:
    """Accept depth rounds of one event per object; returns events/s of the intake."""
    async with await connect(dsn, schema) as conn:
        await migrate(conn)
        began = time.perf_counter()
        for n in range(depth):
            await c.accept(
                conn,
                [
                    c.NewEvent(f"o{i}#{n}", "acme", "http://receiver", f"o{i}", b"x" * 300)
                    for i in range(objects)
                ],
            )
        return objects * depth / (time.perf_counter() - began)


async def claimer(dsn: str, schema: str, owner: str, batch: int, cap: int | None) -> None:
    """Claim and complete until nothing is left; wait for `go` on stdin to start."""
    async with await connect(dsn, schema) as conn:
        print("ready", flush=True)
        sys.stdin.readline()
        done = 0
        claims = 0
        empty = 0
        while True:
            got = await c.claim(conn, owner, limit=batch, endpoint_cap=cap)
            if not got:
                empty += 1
                if await c.next_due(conn) is None:
                    break
                await asyncio.sleep(0.001)  # the other claimer holds the last heads
                continue
            claims += 1
            done += await c.complete(conn, got)
        print(json.dumps({"done": done, "claims": claims, "empty": empty}), flush=True)


def run_claimers(args: argparse.Namespace, schema: str, count: int) -> tuple[float, list[int]]:
    command = [sys.executable, __file__, "claimer", "--dsn", args.dsn, "--schema", schema]
    command += ["--batch", str(args.batch)]
    if args.cap is not None:
        command += ["--cap", str(args.cap)]
    procs = [
        subprocess.Popen(
            [*command, "--owner", f"p{i}"], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
        )
        for i in range(count)
    ]
    try:
        for p in procs:
            assert p.stdout is not None and p.stdout.readline().strip() == "ready"
        began = time.perf_counter()
        for p in procs:
            assert p.stdin is not None
            p.stdin.write("go\n")
            p.stdin.flush()
        results = []
        for p in procs:
            assert p.stdout is not None
            report = json.loads(p.stdout.readline())
            print(f"    {report}", file=sys.stderr)
            results.append(report["done"])
            p.wait(timeout=600)
        return time.perf_counter() - began, results
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()


def one_round(args: argparse.Namespace, count: int) -> tuple[float, float, list[int]]:
    schema = f"bench_{secrets.token_hex(4)}"
    with psycopg.connect(args.dsn, autocommit=True) as admin:
        admin.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(schema)))
    try:
        intake = asyncio.run(fill(args.dsn, schema, args.objects, args.depth))
        seconds, per_process = run_claimers(args, schema, count)
        total = args.objects * args.depth
        if sum(per_process) != total:
            raise SystemExit(f"{sum(per_process)} events completed of {total}")
        return intake, total / seconds, per_process
    finally:
        with psycopg.connect(args.dsn, autocommit=True) as admin:
            admin.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(schema)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("role", nargs="?", default="bench", choices=["bench", "claimer"])
    parser.add_argument("--dsn", default=os.environ.get("QBO_EVENTS_TEST_POSTGRES", DEFAULT_DSN))
    parser.add_argument("--objects", type=int, default=50)
    parser.add_argument("--depth", type=int, default=600)
    parser.add_argument("--batch", type=int, default=50)
    parser.add_argument("--claimers", default="1,2")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--cap", type=int, default=None, help="max_in_flight_per_endpoint")
    parser.add_argument("--schema")
    parser.add_argument("--owner")
    args = parser.parse_args()
    if args.role == "claimer":
        asyncio.run(claimer(args.dsn, args.schema, args.owner, args.batch, args.cap))
        return

    print(
        f"{args.objects} objects x {args.depth} events, claim batches of {args.batch},"
        f" endpoint cap {args.cap}, {args.rounds} rounds per claimer count"
    )
    table = []
    for count in [int(n) for n in args.claimers.split(",")]:
        rates, intakes = [], []
        for r in range(args.rounds):
            intake, rate, per_process = one_round(args, count)
            rates.append(rate)
            intakes.append(intake)
            print(
                f"  {count} claimer(s), round {r + 1}: {rate:,.0f} events/s claimed+completed"
                f" (per process {per_process}); intake {intake:,.0f} events/s",
                flush=True,
            )
        table.append((count, statistics.median(rates), min(rates), max(rates)))
    print("\nclaimers  median events/s  (min-max)")
    for count, median, low, high in table:
        print(f"{count:>8}  {median:>15,.0f}  ({low:,.0f}-{high:,.0f})")


if __name__ == "__main__":
    main()
