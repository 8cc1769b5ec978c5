"""Polling cost: N instances x 22 resources against the sandbox, extrapolated to 1,000 x 22.

    python bench/poll.py                      # N = 50 and 200
    python bench/poll.py --n 50 --n 200 --n 1000 --repeats 3 --json out.json
    python bench/poll.py --calls --repeats 3     # only the API calls, before and after coalescing

For each N this starts `python -m qbo_events sandbox` with N realms (its per-realm rate limits
raised through the control API, so the sandbox never throttles), a bare callback receiver, and
`python -m qbo_events run` with N polling instances (one realm each, all 22 resources, a short
`refresh_interval`). After a warm-up (every loop's first poll: token refresh, first cursor), it
measures a window of several whole poll cycles:

* the daemon's CPU seconds (utime + stime of every thread, from /proc/<pid>/stat);
* polls and QuickBooks API calls in the window, from the sandbox's /_sandbox/stats
  (cross-checked against the daemon's qbo_events_quickbooks_api_calls_total);
* the daemon's RSS (VmRSS at the end of the window, and its peak VmHWM);
* the sandbox's CPU, to show whether the sandbox (not the daemon) was the limit.

Then it extrapolates to the target, 1,000 instances x 22 resources at a 15-minute interval:
CPU seconds per poll x 22,000 / 900 s must stay under 0.1 (10 % of one core) and RSS under
300 MB. The RSS at 1,000 is a straight-line fit over the N measured (or the N=1000 run itself).

A /metrics scrape is timed on its own, outside the CPU window: its cost grows with the number of
(instance, resource) label sets, and Prometheus scrapes it on its own schedule.

At the end (alone with `--calls`, skipped with `--no-calls`) it counts the metered API calls
per company and poll cycle for 5 companies x 22 resources at a 6 s interval, four variants:
polling-only and hybrid instances, each with coalescing off (QBO_EVENTS_COALESCE=0: one call
per resource, the cost before) and on. The counts come from the sandbox's own call log
(`/_sandbox/calls`, kinds cdc, query, read and batch; token calls are not metered by Intuit and
are left out), after a warm-up, over each company's whole cycles in the window; per
company-month = per cycle x 96 x 30. Exit status 1 when "after" exceeds 4 calls per cycle per
company or exceeds "before".

Everything binds 127.0.0.1; every process is ended by its pid; each N is bounded in time.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import math
import os
import re
import sys
import time
import urllib.request
from collections import Counter
from pathlib import Path
from typing import Any

import orjson
from _common import (
    VERIFIER,
    Proc,
    Procs,
    cpu_seconds,
    free_port,
    http_json,
    machine,
    median,
    proc_status,
    start_bare,
    table,
    wait_for,
    workdir,
)

RESOURCES = 22
TARGET_INSTANCES = 1000
TARGET_INTERVAL = 900.0  # seconds
TARGET_POLLS = TARGET_INSTANCES * RESOURCES
CPU_BUDGET = 0.10  # of one core
RSS_BUDGET_MB = 300.0
CLIENT_ID = "bench-client-id"
CLIENT_SECRET = "bench-client-secret-0123456789"
REFRESH_TOKEN = "bench-refresh-token-0123456789"
REALM_BASE = 9130357766900000
# Polls per second the two processes can sustain on a small machine; above it the interval grows
# (a starved event loop would measure queueing, not the cost of a poll).
DEFAULT_MAX_POLL_RATE = 500.0


def thread_cpu(pid: int) -> tuple[float, float]:
    """(main thread, every other thread) CPU seconds: the event loop vs the helper threads."""
    tick = os.sysconf("SC_CLK_TCK")
    main = others = 0.0
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(OSError):
            fields = (task / "stat").read_text().rpartition(")")[2].split()
            used = (int(fields[11]) + int(fields[12])) / tick
            if task.name == str(pid):
                main += used
            else:
                others += used
    return main, others


def log_lines(path: Path) -> int:
    with path.open("rb") as f:
        return sum(chunk.count(b"\n") for chunk in iter(lambda: f.read(1 << 20), b""))


def realm_ids(n: int) -> list[str]:
    return [str(REALM_BASE + i) for i in range(n)]


def refresh_token_for(index: int, realm: str) -> str:
    # The sandbox's rule: the first realm gets --refresh-token, the others "<token>-<realm>".
    return REFRESH_TOKEN if index == 0 else f"{REFRESH_TOKEN}-{realm}"


# -- the sandbox -----------------------------------------------------------------------------


def start_sandbox(procs: Procs, work: Path, realms: list[str], seed: int, rate: float) -> str:
    port = free_port()
    argv = [
        sys.executable, "-m", "qbo_events", "sandbox", "--host", "127.0.0.1",
        "--port", str(port), "--client-id", CLIENT_ID, "--client-secret", CLIENT_SECRET,
        "--refresh-token", REFRESH_TOKEN, "--seed", str(seed), "--rate", str(rate),
        "--random-seed", "7",
    ]  # fmt: skip
    for realm in realms:
        argv += ["--realm-id", realm]
    proc = procs.add(Proc("sandbox", argv, work / "sandbox.log"))
    base = f"http://127.0.0.1:{port}"

    def up() -> bool:
        proc.check()
        try:
            return http_json(f"{base}/_sandbox/faults", timeout=2)[0] == 200
        except OSError:
            return False

    wait_for(up, 120, "the sandbox to listen")
    # Production limits are per realm (500/min, 10/s each) and the daemon keeps to them itself;
    # the sandbox's own windows are lifted so that its clock can never turn a poll into a 429.
    post_json(f"{base}/_sandbox/faults", {"max_per_second": 10**6, "max_per_minute": 10**8})
    return base


def post_json(url: str, body: Any) -> Any:
    request = urllib.request.Request(
        url, data=orjson.dumps(body), method="POST", headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        return orjson.loads(response.read())


def sandbox_requests(base: str) -> dict[str, int]:
    """Per '<route> <status>' request counts of the sandbox."""
    return dict(http_json(f"{base}/_sandbox/stats", timeout=60)[1]["requests"])


# -- the daemon ------------------------------------------------------------------------------


class PollingDaemon:
    def __init__(
        self,
        procs: Procs,
        work: Path,
        *,
        sandbox: str,
        callback_url: str,
        realms: list[str],
        interval_minutes: float,
        log_level: str,
        vendor: str = "polling",
        coalesce: bool | None = None,
    ) -> None:
        """`vendor` is every instance's event.vendor.type; `coalesce` None keeps the caller's
        QBO_EVENTS_COALESCE, False sets it to 0 (one CDC call per resource, the old cost)."""
        self.health_port = free_port()
        webhook_port = free_port()
        lines = [
            f'state_dir = "{work / "state"}"',
            "[log]",
            f'level = "{log_level}"',
            'format = "json"',
            "[http]",
            f'webhook_listen = "127.0.0.1:{webhook_port}"',
            f'health_listen = "127.0.0.1:{self.health_port}"',
            "[quickbooks]",
            f'client_id = "{CLIENT_ID}"',
            f'client_secret = "{CLIENT_SECRET}"',
            f'webhook_verifier_token = "{VERIFIER}"',
            f'api_base_url = "{sandbox}"',
            f'token_url = "{sandbox}/oauth2/v1/tokens/bearer"',
        ]
        for index, realm in enumerate(realms):
            lines += [
                "[[instances]]",
                f'name = "{vendor}-{index:04d}"',
                f'realm_id = "{realm}"',
                f'refresh_token = "{refresh_token_for(index, realm)}"',
                f'event.vendor.type = "{vendor}"',
                f'event.notification.callback.url = "{callback_url}"',
                f"event.poller.refresh_interval = {interval_minutes!r}",
            ]
        self.config_path = work / "config.toml"
        self.config_path.write_text("\n".join(lines) + "\n")
        env = {k: v for k, v in os.environ.items() if k != "NOTIFY_SOCKET"}
        if coalesce is not None:
            env["QBO_EVENTS_COALESCE"] = "1" if coalesce else "0"
        self.proc = procs.add(
            Proc(
                "daemon",
                [sys.executable, "-m", "qbo_events", "run", "--config", str(self.config_path)],
                work / "daemon.log",
                env=env,
            )
        )
        self.pid = self.proc.pid

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.health_port}{path}"

    def wait_ready(self, timeout: float = 60.0) -> None:
        def ready() -> bool:
            self.proc.check()
            try:
                return http_json(self.url("/readyz"), timeout=5)[0] == 200
            except OSError:
                return False

        wait_for(ready, timeout, "the daemon's /readyz", interval=0.1)

    def metrics(self) -> str:
        with urllib.request.urlopen(self.url("/metrics"), timeout=120) as response:
            return str(response.read().decode())


_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})?\s+(\S+)$")


def metric_sums(text: str, names: tuple[str, ...]) -> dict[str, float]:
    """Sum of every sample of each named metric, over all its label sets."""
    sums = dict.fromkeys(names, 0.0)
    for line in text.splitlines():
        if not line or line[0] == "#":
            continue
        match = _SAMPLE.match(line)
        if match and match.group(1) in sums:
            sums[match.group(1)] += float(match.group(3))
    return sums


def api_calls_200(text: str) -> float:
    total = 0.0
    for line in text.splitlines():
        if line.startswith('qbo_events_quickbooks_api_calls_total{status="200"}'):
            total += float(line.split()[-1])
    return total


# -- one measurement -------------------------------------------------------------------------


def polls_of(requests: dict[str, int]) -> tuple[int, int]:
    """(API calls, API calls not answered 200) from the sandbox's request counts. Polls are the
    daemon's own count: the CDC reads of one company share a call (QBO_EVENTS_COALESCE=0 not)."""
    api = {k: v for k, v in requests.items() if k.split()[0] in ("cdc", "query", "query-post")}
    calls = sum(api.values())
    bad = sum(v for k, v in api.items() if not k.endswith(" 200"))
    return calls, bad


def measure(args: argparse.Namespace, n: int, interval_s: float) -> dict[str, Any]:
    realms = realm_ids(n)
    expected_per_cycle = n * RESOURCES
    warmup = args.warmup_cycles * interval_s
    started = time.monotonic()
    with workdir(keep=args.keep) as work, Procs() as procs:
        sandbox = start_sandbox(procs, work, realms, args.seed, args.rate)
        sandbox_pid = procs.started[-1].pid
        _, callback = start_bare(procs, work)
        daemon = PollingDaemon(
            procs,
            work,
            sandbox=sandbox,
            callback_url=callback,
            realms=realms,
            interval_minutes=interval_s / 60.0,
            log_level=args.log_level,
        )
        daemon.wait_ready()
        ready_at = time.monotonic()
        startup_cpu = cpu_seconds(daemon.pid)
        rss_ready = proc_status(daemon.pid)["VmRSS"] / 1024
        time.sleep(max(0.0, ready_at + warmup - time.monotonic()))
        daemon.proc.check()

        # Scraped before the window opens and after it closes, so its own cost stays outside.
        text0 = daemon.metrics()
        req0 = sandbox_requests(sandbox)
        lines0, threads0 = log_lines(daemon.proc.log_path), thread_cpu(daemon.pid)
        cpu0, scpu0, t0 = cpu_seconds(daemon.pid), cpu_seconds(sandbox_pid), time.monotonic()
        window = args.cycles * interval_s
        peak_rss = 0.0
        while (left := t0 + window - time.monotonic()) > 0:
            time.sleep(min(1.0, left))
            daemon.proc.check()
            peak_rss = max(peak_rss, proc_status(daemon.pid)["VmRSS"] / 1024)
        cpu1, scpu1, t1 = cpu_seconds(daemon.pid), cpu_seconds(sandbox_pid), time.monotonic()
        threads1, lines1 = thread_cpu(daemon.pid), log_lines(daemon.proc.log_path)
        req1 = sandbox_requests(sandbox)
        status = proc_status(daemon.pid)
        scrape_cpu0, scrape_t0 = cpu_seconds(daemon.pid), time.monotonic()
        text1 = daemon.metrics()
        scrape_cpu = cpu_seconds(daemon.pid) - scrape_cpu0
        scrape_wall = time.monotonic() - scrape_t0

        calls1, bad1 = polls_of(req1)
        calls0, bad0 = polls_of(req0)
        calls, bad = calls1 - calls0, bad1 - bad0
        names = ("qbo_events_poll_duration_seconds_sum", "qbo_events_poll_duration_seconds_count")
        m0, m1 = metric_sums(text0, names), metric_sums(text1, names)
        poll_count = m1[names[1]] - m0[names[1]]
        poll_mean = (m1[names[0]] - m0[names[0]]) / poll_count if poll_count else float("nan")
        polls = int(poll_count)
        daemon_calls = api_calls_200(text1) - api_calls_200(text0)
        elapsed = t1 - t0
        cpu = cpu1 - cpu0
        cycles = polls / expected_per_cycle
        result = {
            "n": n,
            "loops": expected_per_cycle,
            "interval_s": interval_s,
            "window_s": elapsed,
            "cycles": cycles,
            "cycle_wall_s": elapsed / cycles if cycles else float("nan"),
            "polls": polls,
            "api_calls": calls,
            "api_calls_daemon_200": daemon_calls,
            "api_calls_not_200": bad,
            "cpu_s": cpu,
            "cpu_s_per_cycle": cpu / cycles if cycles else float("nan"),
            "cpu_ms_per_poll": cpu / polls * 1000 if polls else float("nan"),
            "api_calls_per_cycle": calls / cycles if cycles else float("nan"),
            # A 30-day month at a 15-minute interval: 2,880 cycles.
            "api_calls_per_company_month_15min": calls / cycles / n * 2880 if cycles else 0.0,
            "poll_mean_ms": poll_mean * 1000,
            "daemon_core_share": cpu / elapsed,
            "writer_thread_share": (threads1[1] - threads0[1]) / cpu if cpu else float("nan"),
            "log_lines_per_poll": (lines1 - lines0) / polls if polls else float("nan"),
            "sandbox_core_share": (scpu1 - scpu0) / elapsed,
            "rss_ready_mb": rss_ready,
            "rss_mb": status["VmRSS"] / 1024,
            "rss_peak_mb": peak_rss,  # sampled once a second inside the window
            "rss_hwm_mb": status["VmHWM"] / 1024,  # includes the /metrics scrape before it
            "startup_cpu_s": startup_cpu,
            "metrics_bytes": len(text1),
            "metrics_scrape_cpu_s": scrape_cpu,
            "metrics_scrape_wall_s": scrape_wall,
            "run_s": time.monotonic() - started,
            "loadavg_1m": os.getloadavg()[0],
        }
        result["target_core_pct"] = (
            result["cpu_ms_per_poll"] / 1000 * TARGET_POLLS / TARGET_INTERVAL * 100
        )
        return result


# -- API calls per company and cycle, before and after coalescing ------------------------------

# The kinds Intuit meters as data-out calls; token calls (the OAuth server) and writes are not.
METERED = ("cdc", "query", "read", "batch")
CALLS_TARGET = 4.0  # per poll cycle per company with all 22 resources (issue 9)
MONTH_CYCLES_15MIN = 96 * 30
VARIANTS = (("polling", False), ("polling", True), ("hybrid", False), ("hybrid", True))


def sandbox_calls(base: str, after: int = 0) -> list[dict[str, Any]]:
    """The sandbox's own log of the calls it answered (seq, at, realm_id, kind), after `after`."""
    return list(http_json(f"{base}/_sandbox/calls?after={after}", timeout=60)[1]["calls"])


def whole_cycles(calls: list[dict[str, Any]], interval_s: float) -> tuple[int, int]:
    """(metered calls, cycles) in the whole poll cycles of one realm's calls, in order.

    A realm's calls of one cycle go out together (at most 22 at its 10/s, about 2.2 s) and
    cycles start `interval_s` apart, so a gap of half an interval separates two cycles. The
    first and the last group may be cut by the window's edges and are left out."""
    groups: list[int] = []
    last = -math.inf
    for call in calls:
        if call["kind"] not in METERED:
            continue
        at = dt.datetime.fromisoformat(call["at"]).timestamp()
        if at - last > interval_s / 2:
            groups.append(0)
        groups[-1] += 1
        last = at
    inner = groups[1:-1]
    return sum(inner), len(inner)


def daemon_calls_by_kind(text: str) -> dict[str, float]:
    """qbo_events_quickbooks_calls_total by its `kind` label: the daemon's own count."""
    kinds: dict[str, float] = {}
    for line in text.splitlines():
        match = _SAMPLE.match(line)
        if match and match.group(1) == "qbo_events_quickbooks_calls_total" and match.group(2):
            kind = re.search(r'kind="([^"]*)"', match.group(2))
            if kind:
                kinds[kind.group(1)] = kinds.get(kind.group(1), 0.0) + float(match.group(3))
    return kinds


def measure_calls(
    args: argparse.Namespace, vendor: str, coalesce: bool, interval_s: float
) -> dict[str, Any]:
    """One variant: N instances of `vendor`, coalescing on or off; metered calls per cycle."""
    n = args.calls_n
    realms = realm_ids(n)
    with workdir(keep=args.keep) as work, Procs() as procs:
        sandbox = start_sandbox(procs, work, realms, args.seed, 0.0)
        _, callback = start_bare(procs, work)
        daemon = PollingDaemon(
            procs,
            work,
            sandbox=sandbox,
            callback_url=callback,
            realms=realms,
            interval_minutes=interval_s / 60.0,
            log_level=args.log_level,
            vendor=vendor,
            coalesce=coalesce,
        )
        daemon.wait_ready()
        # The warm-up holds every loop's first poll: the token refresh and the first cursor.
        time.sleep(args.calls_warmup_cycles * interval_s)
        daemon.proc.check()
        text0 = daemon.metrics()
        seq0 = max((c["seq"] for c in sandbox_calls(sandbox)), default=0)
        t0 = time.monotonic()
        while (left := t0 + args.calls_cycles * interval_s - time.monotonic()) > 0:
            time.sleep(min(1.0, left))
            daemon.proc.check()
        window = sandbox_calls(sandbox, seq0)
        text1 = daemon.metrics()
    per_realm = {
        r: whole_cycles([c for c in window if c["realm_id"] == r], interval_s) for r in realms
    }
    calls = sum(c for c, _ in per_realm.values())
    cycles = sum(k for _, k in per_realm.values())
    if min(k for _, k in per_realm.values()) == 0:
        raise RuntimeError(f"{vendor}: a company had no whole cycle in the window; more cycles?")
    kinds = Counter(c["kind"] for c in window)
    own0, own1 = daemon_calls_by_kind(text0), daemon_calls_by_kind(text1)
    per_cycle = calls / cycles
    return {
        "vendor": vendor,
        "coalesce": coalesce,
        "n": n,
        "interval_s": interval_s,
        "cycles": cycles / n,  # whole cycles per company
        "calls": calls,  # metered, in those whole cycles
        "calls_by_kind": dict(sorted(kinds.items())),  # every call in the window, edges too
        "window_metered": sum(v for k, v in kinds.items() if k in METERED),
        "daemon_calls_metered": sum(own1.get(k, 0.0) - own0.get(k, 0.0) for k in METERED),
        "calls_per_cycle_company": per_cycle,
        "calls_per_cycle_company_max": max(c / k for c, k in per_realm.values()),
        "calls_per_company_month_15min": per_cycle * MONTH_CYCLES_15MIN,
    }


def report_calls(args: argparse.Namespace) -> tuple[bool, list[dict[str, Any]]]:
    """Run the four variants `--repeats` times, print the table; (target met, every run)."""
    interval_s = args.calls_interval * 60.0
    print(
        f"API calls: {args.calls_n} instances x {RESOURCES} resources, interval "
        f"{interval_s:g} s, warm-up {args.calls_warmup_cycles:g} cycles, "
        f"{args.calls_cycles:g} cycles measured, per variant",
        flush=True,
    )
    runs: list[dict[str, Any]] = []
    for rep in range(args.repeats):
        for vendor, coalesce in VARIANTS:
            run = measure_calls(args, vendor, coalesce, interval_s)
            run["repeat"] = rep
            runs.append(run)
            by_kind = ", ".join(f"{k} {v}" for k, v in run["calls_by_kind"].items() if v)
            print(
                f"  {vendor}, coalescing {'on' if coalesce else 'off'} (run {rep + 1}/"
                f"{args.repeats}): {run['calls']} metered calls in {run['cycles']:g} whole "
                f"cycles per company; whole window: {by_kind} (metered {run['window_metered']}, "
                f"the daemon's own count {run['daemon_calls_metered']:.0f})",
                flush=True,
            )
    per: dict[tuple[str, bool], float] = {}
    rows = []
    for vendor, coalesce in VARIANTS:
        group = [r for r in runs if (r["vendor"], r["coalesce"]) == (vendor, coalesce)]
        per[(vendor, coalesce)] = median([r["calls_per_cycle_company"] for r in group])
        # VARIANTS puts each vendor's "before" first, so it is known when "after" comes.
        ratio = f"{per[(vendor, True)] / per[(vendor, False)]:.3f}" if coalesce else ""
        rows.append(
            [
                f"{vendor}, {'after (coalescing on)' if coalesce else 'before (coalescing off)'}",
                f"{median([r['cycles'] for r in group]):.2f}",
                f"{per[(vendor, coalesce)]:.2f}",
                f"{median([r['calls_per_cycle_company_max'] for r in group]):.2f}",
                f"{per[(vendor, coalesce)] * MONTH_CYCLES_15MIN:,.0f}",
                ratio,
            ]
        )
    print()
    print(
        f"Metered API calls (cdc, query, read, batch; token calls excluded) per company, "
        f"medians over {args.repeats} run(s); a month = 30 days at 15 min = "
        f"{MONTH_CYCLES_15MIN:,} cycles"
    )
    print(
        table(
            [
                "variant", "cycles", "calls/cycle/company", "worst company",
                "calls/company-month @15min", "after/before",
            ],
            rows,
        )
    )  # fmt: skip
    ok = True
    for vendor in ("polling", "hybrid"):
        before, after = per[(vendor, False)], per[(vendor, True)]
        met = after <= CALLS_TARGET and after <= before
        ok = ok and met
        print(
            f"{vendor}: {before:.2f} -> {after:.2f} calls per cycle per company; target "
            f"<= {CALLS_TARGET:g} and <= before: {'met' if met else 'MISSED'}"
        )
    return ok, runs


# -- extrapolation and the report ------------------------------------------------------------


def fit(points: list[tuple[float, float]]) -> tuple[float, float] | None:
    """Least-squares line (intercept, slope) through the points; None with fewer than 2 x."""
    xs = {x for x, _ in points}
    if len(xs) < 2:
        return None
    mx = sum(x for x, _ in points) / len(points)
    my = sum(y for _, y in points) / len(points)
    sxx = sum((x - mx) ** 2 for x, _ in points)
    slope = sum((x - mx) * (y - my) for x, y in points) / sxx
    return my - slope * mx, slope


def choose_interval(n: int, args: argparse.Namespace) -> float:
    if args.interval is not None:
        return float(args.interval) * 60.0
    # 15 s when the machine keeps up, longer when N x 22 polls would exceed the poll rate.
    return max(15.0, n * RESOURCES / float(args.max_poll_rate))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--n", type=int, action="append", help="instances (repeatable; default 50 and 200)"
    )
    parser.add_argument(
        "--interval",
        type=float,
        default=None,
        help="refresh_interval in minutes (default: 0.25, longer for N whose polls exceed "
        "--max-poll-rate)",
    )
    parser.add_argument("--max-poll-rate", type=float, default=DEFAULT_MAX_POLL_RATE)
    parser.add_argument("--cycles", type=float, default=0, help="cycles measured (default: fit)")
    parser.add_argument("--warmup-cycles", type=float, default=1.3)
    parser.add_argument(
        "--budget", type=float, default=170.0, help="seconds per N run, roughly (default 170)"
    )
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--seed", type=int, default=2, help="sandbox objects per entity")
    parser.add_argument("--rate", type=float, default=0.0, help="sandbox changes per second")
    parser.add_argument("--log-level", default="info")
    parser.add_argument("--json", type=Path, help="write every run's figures here")
    parser.add_argument("--keep", action="store_true", help="keep the work directories")
    calls = parser.add_argument_group(
        "API calls per company, polling and hybrid, coalescing off (before) and on (after)"
    )
    calls.add_argument("--calls", action="store_true", help="measure only the API calls")
    calls.add_argument("--no-calls", action="store_true", help="skip the API calls at the end")
    calls.add_argument("--calls-n", type=int, default=5, help="companies (default 5)")
    calls.add_argument(
        "--calls-interval", type=float, default=0.1, help="refresh_interval, minutes (0.1)"
    )
    calls.add_argument("--calls-warmup-cycles", type=float, default=1.5)
    calls.add_argument("--calls-cycles", type=float, default=5.0, help="window in cycles (5)")
    args = parser.parse_args(argv)
    ns = args.n or [50, 200]

    print(f"machine: {machine()}")
    if args.calls:
        calls_ok, call_runs = report_calls(args)
        if args.json:
            args.json.write_bytes(orjson.dumps({"calls": call_runs}, option=orjson.OPT_INDENT_2))
        return 0 if calls_ok else 1
    runs: list[dict[str, Any]] = []
    for n in ns:
        interval_s = choose_interval(n, args)
        if args.cycles:
            cycles = args.cycles
        else:
            # Whole cycles that fit the budget after start-up (~10 s) and the warm-up.
            cycles = max(1.0, (args.budget - 10 - args.warmup_cycles * interval_s) // interval_s)
        for rep in range(args.repeats):
            run_args = argparse.Namespace(**{**vars(args), "cycles": cycles})
            print(
                f"N={n}: interval {interval_s:.1f} s, warm-up {args.warmup_cycles:g} cycles, "
                f"measuring {cycles:g} cycles (run {rep + 1}/{args.repeats}) ...",
                flush=True,
            )
            result = measure(run_args, n, interval_s)
            result["repeat"] = rep
            runs.append(result)
            print(
                "  cpu {cpu_s:.2f} s over {window_s:.1f} s, {polls} polls, "
                "{cpu_ms_per_poll:.3f} ms/poll, daemon {daemon_core_share:.0%} / sandbox "
                "{sandbox_core_share:.0%} of a core, RSS {rss_mb:.1f} MB, "
                "run {run_s:.0f} s, load average {loadavg_1m:.1f}".format(**result),
                flush=True,
            )

    rows = []
    by_n: dict[int, list[dict[str, Any]]] = {}
    for run in runs:
        by_n.setdefault(run["n"], []).append(run)
    summary: dict[int, dict[str, float]] = {}
    for n, group in by_n.items():
        s = {
            key: median([r[key] for r in group])
            for key in (
                "loops", "interval_s", "cycles", "cycle_wall_s", "cpu_s_per_cycle",
                "cpu_ms_per_poll", "api_calls_per_cycle", "api_calls_not_200", "poll_mean_ms",
                "rss_mb", "rss_peak_mb", "target_core_pct", "daemon_core_share",
                "sandbox_core_share", "metrics_scrape_cpu_s", "metrics_bytes",
                "writer_thread_share", "log_lines_per_poll", "rss_hwm_mb",
                "api_calls_per_company_month_15min",
            )
        }  # fmt: skip
        summary[n] = s
    rss_line = fit([(r["n"], r["rss_mb"]) for r in runs])
    for n, s in summary.items():
        if n == TARGET_INSTANCES:
            rss_target = f"{s['rss_peak_mb']:.0f} MB"
        elif rss_line is not None:
            rss_target = f"{rss_line[0] + rss_line[1] * TARGET_INSTANCES:.0f} MB"
        else:
            rss_target = "(needs 2 N)"
        rows.append(
            [
                n,
                int(s["loops"]),
                f"{s['interval_s']:.0f}",
                len(by_n[n]),
                f"{s['cycles']:.2f}",
                f"{s['cycle_wall_s']:.1f}",
                f"{s['cpu_s_per_cycle']:.3f}",
                f"{s['cpu_ms_per_poll']:.3f}",
                f"{s['api_calls_per_cycle']:.0f}",
                f"{s['poll_mean_ms']:.1f}",
                f"{s['rss_mb']:.1f}",
                f"{s['target_core_pct']:.2f} %",
                rss_target,
            ]
        )
    print()
    print(
        f"Polling, N instances x {RESOURCES} resources (medians over repeats); extrapolated to "
        f"{TARGET_INSTANCES} x {RESOURCES} @ {TARGET_INTERVAL / 60:.0f} min "
        f"(budget {CPU_BUDGET:.0%} of a core, {RSS_BUDGET_MB:.0f} MB)"
    )
    print(
        table(
            [
                "N", "loops", "interval s", "runs", "cycles", "cycle wall s", "CPU s/cycle",
                "CPU ms/poll", "API calls/cycle", "poll ms (mean)", "RSS MB",
                "@1000x22/15min CPU", "@1000x22 RSS",
            ],
            rows,
        )
    )  # fmt: skip
    cpu_line = fit([(r["polls"] / r["window_s"], r["cpu_s"] / r["window_s"]) for r in runs])
    target_rate = TARGET_POLLS / TARGET_INTERVAL
    print()
    if cpu_line is not None:
        base, per_poll = cpu_line
        at_target = base + per_poll * target_rate
        print(
            f"CPU fit over runs: {base * 100:.2f} % of a core idle + {per_poll * 1000:.3f} ms per "
            f"poll -> {at_target * 100:.2f} % at {target_rate:.1f} polls/s"
        )
    if rss_line is not None:
        print(
            f"RSS fit over runs: {rss_line[0]:.1f} MB + {rss_line[1] * 1000:.1f} kB per instance "
            f"-> {rss_line[0] + rss_line[1] * TARGET_INSTANCES:.0f} MB at {TARGET_INSTANCES}"
        )
    for n, s in summary.items():
        print(
            f"N={n}: daemon {s['daemon_core_share']:.0%} / sandbox {s['sandbox_core_share']:.0%} "
            f"of a core during the window ({s['writer_thread_share']:.0%} of the daemon's CPU "
            f"in threads other than the event loop's); API calls not 200: "
            f"{s['api_calls_not_200']:.0f}; log lines per poll: {s['log_lines_per_poll']:.2f}; "
            f"RSS peak in window {s['rss_peak_mb']:.0f} MB, high-water mark "
            f"{s['rss_hwm_mb']:.0f} MB; one /metrics scrape: {s['metrics_bytes'] / 1e6:.1f} MB, "
            f"{s['metrics_scrape_cpu_s'] * 1000:.0f} ms CPU; API calls per company-month at "
            f"15 min: {s['api_calls_per_company_month_15min']:,.0f}"
        )
    worst_cpu = max(s["target_core_pct"] for s in summary.values())
    if TARGET_INSTANCES in summary:
        rss_at_target = summary[TARGET_INSTANCES]["rss_peak_mb"]
    elif rss_line is not None:
        rss_at_target = rss_line[0] + rss_line[1] * TARGET_INSTANCES
    else:
        rss_at_target = float("nan")
    # A /metrics scrape grows with the (instance, resource) label sets: scaled to 1,000 x 22 and
    # taken once a minute, what it adds to the average.
    biggest = max(summary)
    scrape_at_target = summary[biggest]["metrics_scrape_cpu_s"] * TARGET_INSTANCES / biggest
    cpu_ok = worst_cpu < CPU_BUDGET * 100
    rss_ok = rss_at_target < RSS_BUDGET_MB
    print(
        f"target CPU: {'met' if cpu_ok else 'MISSED'} (worst extrapolation {worst_cpu:.2f} % of "
        f"a core); with a /metrics scrape every 60 s at 1,000 x 22 (~{scrape_at_target:.1f} s "
        f"CPU each): {worst_cpu + scrape_at_target / 60 * 100:.1f} %"
    )
    print(
        f"target RSS: {'met' if rss_ok else 'MISSED'} ({rss_at_target:.0f} MB at "
        f"{TARGET_INSTANCES} instances, steady; see the high-water marks above for scrapes)"
    )
    calls_ok, call_runs = True, []
    if not args.no_calls:
        print()
        calls_ok, call_runs = report_calls(args)
    if args.json:
        out = {"runs": runs, "calls": call_runs}
        args.json.write_bytes(orjson.dumps(out, option=orjson.OPT_INDENT_2))
    return 0 if cpu_ok and rss_ok and calls_ok else 1


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        raise SystemExit(main())
