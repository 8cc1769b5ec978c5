"""Chaos: mixed load, SIGKILL at random moments and restarts with config changes lose nothing.

Replay a failure with `CHAOS_SEED=<seed printed> pytest tests/test_chaos.py`; `bench/chaos.py`
runs the same scenario longer.
"""

from __future__ import annotations

import os
import random
from pathlib import Path

import chaos_scenario
import pytest

KILLS = int(os.environ.get("CHAOS_KILLS", "22"))


@pytest.mark.chaos
def test_nothing_accepted_is_lost_across_random_kills(tmp_path: Path) -> None:
    seed = int(os.environ.get("CHAOS_SEED") or random.SystemRandom().randrange(2**32))
    print(f"CHAOS_SEED={seed}")
    try:
        result = chaos_scenario.run(tmp_path, seed=seed, kills=KILLS)
    except AssertionError as exc:  # a wait that timed out, a daemon that died by itself
        raise AssertionError(f"CHAOS_SEED={seed}: {exc}") from exc
    print(result.summary())
    assert not result.problems, f"CHAOS_SEED={seed}: " + "\n".join(result.problems[:30])
    assert result.kills == KILLS, f"CHAOS_SEED={seed}"
    # The run must have exercised what it claims to: events owed from every source, objects
    # with several events for the order check, and outbox checks at the kill points.
    assert result.events_checked > 200, f"CHAOS_SEED={seed}: {result.summary()}"
    assert result.posts_ok > 50 and result.ordered_objects > 10, f"CHAOS_SEED={seed}"
    assert result.kill_point_items > 0, f"CHAOS_SEED={seed}"
