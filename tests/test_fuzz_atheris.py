"""Run the coverage-guided webhook parser target (fuzz/webhook_parser.py) for a bounded time."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TARGET = ROOT / "fuzz" / "webhook_parser.py"
SEEDS = ROOT / "fuzz" / "corpus" / "webhook"
SECONDS = int(os.environ.get("QBO_FUZZ_SECONDS", "8"))


def fuzz(tmp_path: Path, *args: str, timeout: float) -> subprocess.CompletedProcess[str]:
    # New inputs go to a scratch corpus (libFuzzer writes to the first directory) and crash
    # artifacts to tmp_path, so the checked-in seeds stay as they are.
    scratch = tmp_path / "corpus"
    scratch.mkdir(exist_ok=True)
    return subprocess.run(
        [
            sys.executable,
            str(TARGET),
            str(scratch),
            str(SEEDS),
            f"-dict={ROOT / 'fuzz' / 'webhook.dict'}",
            f"-artifact_prefix={tmp_path}/",
            "-rss_limit_mb=1024",
            *args,
        ],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=tmp_path,
    )


def test_the_seed_corpus_holds_both_formats_and_broken_bodies() -> None:
    names = sorted(p.name for p in SEEDS.iterdir())
    assert any(n.startswith("legacy-") for n in names)
    assert any(n.startswith("cloudevents-") for n in names)
    assert any(n.startswith("broken-") for n in names)


def test_the_webhook_parser_target_runs_without_a_crash(tmp_path: Path) -> None:
    result = fuzz(tmp_path, f"-max_total_time={SECONDS}", timeout=SECONDS + 120)
    assert result.returncode == 0, result.stderr[-4000:]
    done = re.search(r"Done (\d+) runs", result.stderr)
    assert done is not None, result.stderr[-2000:]
    # It ran: well past the seeds, which alone are about ten inputs.
    assert int(done.group(1)) > 1000
    assert not list(tmp_path.glob("crash-*"))
