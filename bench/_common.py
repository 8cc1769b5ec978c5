"""Shared benchmark machinery: free ports, the daemon subprocess, helper processes, figures.

Run as a script it is one of the helper processes the benchmarks start:

    python bench/_common.py bare --port P
        a bare aiohttp server whose POST handler reads the body and answers 200;
    python bench/_common.py receiver --port P [--key K] [--verify]
        a callback receiver: answers 200, optionally verifies every delivery with the
        standardwebhooks library, records when each object id arrived (GET /stats, /arrivals);
    python bench/_common.py loadgen --url U --out FILE ...
        the load generator: closed-loop (N connections, back to back) or open-loop (a fixed
        rate of POSTs), signed legacy webhook bodies with distinct entity ids; writes JSON.

Every helper binds 127.0.0.1 only and exits on SIGTERM. Nothing here imports from tests/.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import hashlib
import hmac
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import orjson

VERIFIER = "bench-verifier-token-0123456789"
SIGNATURE_KEY = "bench-signature-key-abcdef"
REALM = "4620816365000000001"
WEBHOOK_PATH = "/webhooks/quickbooks"
HERE = Path(__file__).resolve().parent
SELF = str(HERE / "_common.py")
# 2026-01-01T00:00:00Z; entity timestamps are spread from here so ids never collide.
_BASE_MS = 1767225600000


# -- small utilities -------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def delivery_settings(pairs: Sequence[str], flag: str = "--delivery") -> dict[str, str]:
    """`--delivery KEY=VALUE` flags -> `[delivery]` keys, e.g. max_in_flight_per_endpoint=64
    (and the same for another section's flag, e.g. `--outbox history_days=0`)."""
    settings = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep:
            raise SystemExit(f"{flag} wants KEY=VALUE, not {pair!r}")
        settings[key.strip()] = value.strip()
    return settings


def wait_for(
    condition: Callable[[], Any], timeout: float, what: str, interval: float = 0.05
) -> Any:
    """Poll `condition` until it returns something truthy; raise after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(interval)


def intuit_sign(body: bytes, token: str = VERIFIER) -> str:
    return base64.b64encode(hmac.digest(token.encode(), body, hashlib.sha256)).decode()


def legacy_body(realm: str, entities: Sequence[tuple[str, str, str, str]]) -> bytes:
    """A legacy QuickBooks webhook body; entities: (name, id, operation, lastUpdated)."""
    return orjson.dumps(
        {
            "eventNotifications": [
                {
                    "realmId": realm,
                    "dataChangeEvent": {
                        "entities": [
                            {"name": n, "id": i, "operation": op, "lastUpdated": at}
                            for n, i, op, at in entities
                        ]
                    },
                }
            ]
        }
    )


def entity_body(prefix: str, first: int, count: int, realm: str = REALM) -> bytes:
    """`count` Invoice Create entities with object ids `<prefix><first>` ... (all distinct)."""
    at = time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime())
    return legacy_body(
        realm, [("Invoice", f"{prefix}{n}", "Create", at) for n in range(first, first + count)]
    )


def percentile(values: Sequence[float], p: float) -> float:
    """Nearest-rank percentile of `values` (p in 0..100); nan when empty."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = max(1, min(len(ordered), round(p / 100 * len(ordered) + 0.5)))
    return ordered[rank - 1]


def median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else float("nan")


def proc_status(pid: int) -> dict[str, int]:
    """The kB figures of /proc/<pid>/status (VmRSS, VmHWM, ...)."""
    figures: dict[str, int] = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            parts = value.split()
            if len(parts) == 2 and parts[1] == "kB":
                figures[key] = int(parts[0])
    return figures


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds the process has used so far."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def http_json(url: str, timeout: float = 10.0) -> tuple[int, Any]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return int(response.status), orjson.loads(response.read())
    except urllib.error.HTTPError as exc:
        with exc:
            body = exc.read()
            return int(exc.code), orjson.loads(body) if body else None


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    cells = [[str(h) for h in headers]] + [[str(c) for c in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]

    def line(r: Sequence[str]) -> str:
        pairs = enumerate(zip(r, widths, strict=True))
        return "  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in pairs)

    rule = "  ".join("-" * w for w in widths)
    return "\n".join([line(cells[0]), rule, *(line(r) for r in cells[1:])])


def machine() -> str:
    load = os.getloadavg()[0]
    text = f"{os.cpu_count()} CPUs, Python {sys.version.split()[0]}, {sys.platform}"
    text += f", load average {load:.2f} before the run"
    if load > 0.5:
        text += " (other work is running: the figures will be noisy)"
    return text


# -- processes -------------------------------------------------------------------------------


class Proc:
    """A subprocess ended by its pid: SIGTERM, then SIGKILL after a grace period."""

    def __init__(self, name: str, argv: list[str], log: Path, env: dict[str, str] | None = None):
        self.name = name
        self.log_path = log
        self._log = log.open("ab")
        self.popen = subprocess.Popen(
            argv,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})},
        )
        self.pid = self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def check(self) -> None:
        if not self.alive():
            raise RuntimeError(f"{self.name} exited {self.popen.returncode}: {self.tail()}")

    def tail(self, lines: int = 20) -> str:
        text = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
        return "\n".join(text.splitlines()[-lines:])

    def stop(self, grace: float = 15.0) -> int | None:
        if self.popen.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signal.SIGTERM)
            try:
                self.popen.wait(grace)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(self.pid, signal.SIGKILL)
                self.popen.wait(10)
        self._log.close()
        return self.popen.returncode


class Procs:
    """Every process a benchmark started; `with Procs() as procs:` ends them all, newest first."""

    def __init__(self) -> None:
        self.started: list[Proc] = []

    def __enter__(self) -> Procs:
        return self

    def __exit__(self, *exc: object) -> None:
        for proc in reversed(self.started):
            with contextlib.suppress(Exception):
                proc.stop()

    def add(self, proc: Proc) -> Proc:
        self.started.append(proc)
        return proc


def helper(procs: Procs, role: str, args: list[str], workdir: Path) -> Proc:
    return procs.add(Proc(role, [sys.executable, SELF, role, *args], workdir / f"{role}.log"))


def start_bare(procs: Procs, workdir: Path) -> tuple[Proc, str]:
    port = free_port()
    proc = helper(procs, "bare", ["--port", str(port)], workdir)
    wait_listening(proc, port)
    return proc, f"http://127.0.0.1:{port}{WEBHOOK_PATH}"


def start_receiver(procs: Procs, workdir: Path, *, verify: bool) -> tuple[Proc, str, str]:
    """Returns the process, its callback URL and its base URL (for /stats and /arrivals)."""
    port = free_port()
    args = ["--port", str(port), "--key", SIGNATURE_KEY]
    if verify:
        args.append("--verify")
    proc = helper(procs, "receiver", args, workdir)
    wait_listening(proc, port)
    base = f"http://127.0.0.1:{port}"
    return proc, f"{base}/hook", base


def wait_listening(proc: Proc, port: int, timeout: float = 20.0) -> None:
    def up() -> bool:
        proc.check()
        with socket.socket() as sock:
            sock.settimeout(0.5)
            return sock.connect_ex(("127.0.0.1", port)) == 0

    wait_for(up, timeout, f"{proc.name} to listen on {port}")


class Daemon:
    """`python -m qbo_events run` with a config of its own in `workdir`."""

    def __init__(
        self,
        procs: Procs,
        workdir: Path,
        callback_url: str,
        *,
        durability: str = "full",
        log_level: str = "info",
        delivery: dict[str, str] | None = None,
        outbox: dict[str, str] | None = None,
        notify: bool = True,
    ) -> None:
        """`delivery`, `outbox`: extra `[delivery]` and `[outbox]` keys (TOML values as text).
        `notify=False` disables the instance's notifications: events are accepted and stored
        but never sent."""
        self.webhook_port = free_port()
        self.health_port = free_port()
        self.workdir = workdir
        self.config_path = workdir / "config.toml"
        delivery_keys = {"timeout": "15", **(delivery or {})}
        self.config_path.write_text(
            f'state_dir = "{workdir / "state"}"\n'
            "[log]\n"
            f'level = "{log_level}"\nformat = "json"\n'
            "[http]\n"
            f'webhook_listen = "127.0.0.1:{self.webhook_port}"\n'
            f'webhook_path = "{WEBHOOK_PATH}"\n'
            f'health_listen = "127.0.0.1:{self.health_port}"\n'
            "max_body_bytes = 8388608\n"
            "[quickbooks]\n"
            f'webhook_verifier_token = "{VERIFIER}"\n'
            "[delivery]\n"
            + "".join(f"{k} = {v}\n" for k, v in delivery_keys.items())
            + "[outbox]\n"
            f'durability = "{durability}"\n'
            + "".join(f"{k} = {v}\n" for k, v in (outbox or {}).items())
            + "[[instances]]\n"
            'name = "bench"\n'
            f'realm_id = "{REALM}"\n'
            'tags = ["bench"]\n'
            'event.vendor.type = "webhook"\n'
            f"event.notification.enabled = {'true' if notify else 'false'}\n"
            f'event.notification.callback.url = "{callback_url}"\n'
            f'event.notification.signature.key = "{SIGNATURE_KEY}"\n'
        )
        env = {k: v for k, v in os.environ.items() if k != "NOTIFY_SOCKET"}
        self.proc = procs.add(
            Proc(
                "daemon",
                [sys.executable, "-m", "qbo_events", "run", "--config", str(self.config_path)],
                workdir / "daemon.log",
                env=env,
            )
        )
        self.pid = self.proc.pid

    @property
    def outbox_path(self) -> Path:
        from qbo_events.app import OUTBOX_FILE

        return self.workdir / "state" / OUTBOX_FILE

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.webhook_port}{WEBHOOK_PATH}"

    def health(self, path: str) -> tuple[int, Any]:
        return http_json(f"http://127.0.0.1:{self.health_port}{path}")

    def wait_ready(self, timeout: float = 30.0) -> None:
        def ready() -> bool:
            self.proc.check()
            try:
                return self.health("/readyz")[0] == 200
            except OSError:
                return False

        wait_for(ready, timeout, "the daemon's /readyz")

    def outbox(self) -> dict[str, Any]:
        return dict(self.health("/status")[1]["outbox"])

    def delivered(self) -> int:
        return int(self.health("/status")[1]["deliveries"]["delivered"])


# -- the load generator ----------------------------------------------------------------------


def run_loadgen(
    procs: Procs,
    workdir: Path,
    url: str,
    *,
    prefix: str,
    duration: float,
    concurrency: int = 64,
    rate: float = 0.0,
    per_body: int = 1,
    warmup: float = 0.0,
    record: bool = False,
    bodies: int = 0,
    timeout: float | None = None,
) -> dict[str, Any]:
    """Run the load generator in its own process and return its JSON report.

    rate = 0: closed loop, `concurrency` connections each POSTing back to back.
    rate > 0: open loop, `rate` bodies per second on schedule, at most `concurrency` in flight.
    """
    out = workdir / f"loadgen-{prefix}.json"
    args = [
        "--url", url, "--out", str(out), "--prefix", prefix, "--duration", str(duration),
        "--concurrency", str(concurrency), "--rate", str(rate), "--per-body", str(per_body),
        "--warmup", str(warmup),
    ]  # fmt: skip
    if record:
        args.append("--record")
    if bodies:
        args += ["--bodies", str(bodies)]
    proc = helper(procs, "loadgen", args, workdir)
    limit = timeout if timeout is not None else warmup + duration + 60
    try:
        proc.popen.wait(limit)
    except subprocess.TimeoutExpired:
        proc.stop(5)
        raise TimeoutError(f"load generator overran {limit} s") from None
    proc.stop()
    if proc.popen.returncode != 0:
        raise RuntimeError(f"load generator failed: {proc.tail()}")
    return dict(orjson.loads(out.read_bytes()))


async def _loadgen(a: argparse.Namespace) -> dict[str, Any]:
    import aiohttp

    connector = aiohttp.TCPConnector(limit=a.concurrency, force_close=False)
    timeout = aiohttp.ClientTimeout(total=30)
    counter = 0
    statuses: dict[int, int] = {}
    errors = 0
    latencies: list[float] = []  # of requests completed inside the measured window
    sends: dict[str, float] = {}  # first object id of a body -> monotonic send time
    lag: list[float] = []  # open loop: how late each POST left against its schedule

    def next_body() -> tuple[bytes, str]:
        nonlocal counter
        first = counter
        counter += a.per_body
        return entity_body(a.prefix, first, a.per_body), f"{a.prefix}{first}"

    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:

        async def post(body: bytes) -> int:
            headers = {"intuit-signature": intuit_sign(body), "Content-Type": "application/json"}
            async with session.post(a.url, data=body, headers=headers) as response:
                await response.read()
                return response.status

        start = time.monotonic()
        window_start = start + a.warmup
        end = window_start + a.duration
        measured = 0
        total_ok = 0

        async def one(body: bytes, first_id: str) -> None:
            nonlocal errors, measured, total_ok
            sent = time.monotonic()
            if a.record:
                sends[first_id] = sent
            try:
                status = await post(body)
            except (aiohttp.ClientError, TimeoutError):
                errors += 1
                return
            done = time.monotonic()
            total_ok += status == 200
            if window_start <= done <= end:
                statuses[status] = statuses.get(status, 0) + 1
                if status == 200:
                    measured += 1
                    latencies.append(done - sent)

        limit = a.bodies * a.per_body
        if a.rate <= 0:

            async def worker() -> None:
                while time.monotonic() < end and not (a.bodies and counter >= limit):
                    await one(*next_body())

            await asyncio.gather(*(worker() for _ in range(a.concurrency)))
        else:
            tasks: set[asyncio.Task[None]] = set()
            interval = 1.0 / a.rate
            n = 0
            while True:
                due = start + n * interval
                if due >= end:
                    break
                delay = due - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
                lag.append(time.monotonic() - due)
                task = asyncio.create_task(one(*next_body()))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
                n += 1
            if tasks:
                await asyncio.wait(tasks, timeout=30)
        finished = time.monotonic()
        elapsed = finished - window_start
    window = min(elapsed, a.duration)
    return {
        "requests": measured,
        "events": measured * a.per_body,
        "window_s": window,
        "req_per_s": measured / window if window > 0 else 0.0,
        "statuses": {str(k): v for k, v in sorted(statuses.items())},
        "errors": errors,
        "p50_ms": percentile(latencies, 50) * 1000,
        "p99_ms": percentile(latencies, 99) * 1000,
        "max_ms": max(latencies, default=float("nan")) * 1000,
        "bodies_sent": counter // a.per_body,
        "ok_total": total_ok,
        "schedule_lag_p99_ms": percentile(lag, 99) * 1000 if lag else None,
        "start": start,
        "window_start": window_start,
        "finished": finished,
        "sends": sends,
    }


# -- the helper servers ----------------------------------------------------------------------


def _serve(app: Any, port: int) -> None:
    import uvloop
    from aiohttp import web

    async def main() -> None:
        runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", port).start()
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGTERM, stop.set)
        loop.add_signal_handler(signal.SIGINT, stop.set)
        await stop.wait()
        await runner.cleanup()

    uvloop.run(main())


def _bare(a: argparse.Namespace) -> None:
    from aiohttp import web

    async def handle(request: web.Request) -> web.Response:
        await request.read()
        return web.json_response({"status": "ok"})

    app = web.Application(client_max_size=8 * 2**20)
    app.router.add_post(WEBHOOK_PATH, handle)
    _serve(app, a.port)


def _receiver(a: argparse.Namespace) -> None:
    from aiohttp import web

    verifier = None
    if a.verify:
        from standardwebhooks.webhooks import Webhook

        verifier = Webhook("whsec_" + base64.b64encode(a.key.encode()).decode())
    arrivals: dict[str, float] = {}
    stats = {"count": 0, "bad_signatures": 0, "duplicates": 0, "first": None, "last": None}

    async def hook(request: web.Request) -> web.Response:
        body = await request.read()
        now = time.monotonic()
        if verifier is not None:
            try:
                verifier.verify(body, dict(request.headers))
            except Exception:
                stats["bad_signatures"] += 1
                return web.Response(status=400)
        object_id = orjson.loads(body)["message"]["events"][0]["objectId"]
        if object_id in arrivals:
            stats["duplicates"] += 1
        else:
            arrivals[object_id] = now
        stats["count"] += 1
        if stats["first"] is None:
            stats["first"] = now
        stats["last"] = now
        return web.Response(status=200)

    async def get_stats(_: web.Request) -> web.Response:
        return web.Response(body=orjson.dumps(stats), content_type="application/json")

    async def get_arrivals(_: web.Request) -> web.Response:
        return web.Response(body=orjson.dumps(arrivals), content_type="application/json")

    app = web.Application(client_max_size=8 * 2**20)
    app.router.add_post("/hook", hook)
    app.router.add_get("/stats", get_stats)
    app.router.add_get("/arrivals", get_arrivals)
    _serve(app, a.port)


def _main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="_common.py")
    roles = parser.add_subparsers(dest="role", required=True)
    bare = roles.add_parser("bare")
    bare.add_argument("--port", type=int, required=True)
    receiver = roles.add_parser("receiver")
    receiver.add_argument("--port", type=int, required=True)
    receiver.add_argument("--key", default=SIGNATURE_KEY)
    receiver.add_argument("--verify", action="store_true")
    gen = roles.add_parser("loadgen")
    gen.add_argument("--url", required=True)
    gen.add_argument("--out", required=True)
    gen.add_argument("--prefix", required=True)
    gen.add_argument("--duration", type=float, required=True)
    gen.add_argument("--concurrency", type=int, default=64)
    gen.add_argument("--rate", type=float, default=0.0)
    gen.add_argument("--per-body", type=int, default=1)
    gen.add_argument("--warmup", type=float, default=0.0)
    gen.add_argument("--record", action="store_true")
    gen.add_argument("--bodies", type=int, default=0, help="closed loop: stop after this many")
    a = parser.parse_args(argv)
    if a.role == "bare":
        _bare(a)
    elif a.role == "receiver":
        _receiver(a)
    else:
        import uvloop

        report = uvloop.run(_loadgen(a))
        Path(a.out).write_bytes(orjson.dumps(report))
    return 0


@contextlib.contextmanager
def workdir(keep: bool = False) -> Iterator[Path]:
    import shutil
    import tempfile

    path = Path(tempfile.mkdtemp(prefix="qbo-bench-", dir=os.environ.get("BENCH_TMPDIR")))
    try:
        yield path
    finally:
        if keep:
            print(f"(work files kept in {path})")
        else:
            shutil.rmtree(path, ignore_errors=True)


def dump(obj: Any) -> str:
    return json.dumps(obj, indent=2, default=str)


if __name__ == "__main__":
    raise SystemExit(_main(sys.argv[1:]))
