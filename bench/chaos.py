"""The chaos run at length: the scenario of tests/test_chaos.py with as many SIGKILLs as asked.

    python bench/chaos.py                        # 100 kills, a random seed
    python bench/chaos.py --kills 300 --seed 7   # replay or extend one run
    python bench/chaos.py --rounds 5 --kills 40  # five seeds in a row

The scenario itself lives in tests/chaos_scenario.py (its load in tests/chaos_load.py, its
checks in tests/chaos_checks.py), so the test and this script run the same thing. Prints kills
survived, events checked, duplicates and what justified them, and wall time; exit status 1 when
any promise broke.
"""

from __future__ import annotations

import argparse
import random
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))
sys.path.insert(0, str(HERE))

import chaos_scenario  # noqa: E402
from _common import workdir  # noqa: E402


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="bench/chaos.py", description=__doc__.splitlines()[0])
    parser.add_argument("--kills", type=int, default=100, help="SIGKILLs per round (100)")
    parser.add_argument("--seed", type=int, default=None, help="the first round's seed")
    parser.add_argument("--rounds", type=int, default=1, help="runs, each with its own seed")
    parser.add_argument(
        "--lifetime", type=float, default=2.5, help="longest life between kills, seconds (2.5)"
    )
    parser.add_argument("--keep", action="store_true", help="keep configs, logs and the outbox")
    a = parser.parse_args(argv)
    seed = a.seed if a.seed is not None else random.SystemRandom().randrange(2**32)
    failed = 0
    for round_ in range(a.rounds):
        with workdir(a.keep) as tmp:
            try:
                result = chaos_scenario.run(
                    tmp, seed=seed + round_, kills=a.kills, lifetime=a.lifetime
                )
            except AssertionError as exc:  # a wait that timed out, a daemon that died by itself
                print(f"chaos seed {seed + round_}: {exc}", flush=True)
                failed += 1
                continue
        print(result.summary(), flush=True)
        if result.config_changes:
            print("  config changes: " + "; ".join(result.config_changes))
        if result.duplicates.worst:
            print(f"  slowest acknowledgement behind a duplicate: {result.duplicates.worst}")
        for problem in result.problems[:50]:
            print(f"  PROBLEM: {problem}")
        if result.problems:
            failed += 1
            print(f"  {len(result.problems)} problems; replay with --seed {seed + round_}")
    print(f"{a.rounds - failed} of {a.rounds} rounds held every promise")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
