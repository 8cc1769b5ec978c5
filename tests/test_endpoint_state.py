"""The endpoint health transitions, pure: healthy -> failing -> paused -> healthy."""

from __future__ import annotations

from qbo_events.sinks import endpoint_state as es

URL = "http://127.0.0.1:9/hook"
PAUSE, PROBE = 100.0, 10.0


def fail(h: es.Health, now: float) -> tuple[es.Health, es.Notice | None]:
    return es.failed(h, now, pause_after=PAUSE, probe_interval=PROBE)


def test_first_failure_starts_failing_with_one_notice() -> None:
    h, notice = fail(es.Health(url=URL, last_success_at=5.0), 10.0)
    assert h.state is es.State.FAILING
    assert (h.failing_since, h.consecutive_failures, h.last_success_at) == (10.0, 1, 5.0)
    assert notice == es.Notice(type="endpoint.failing", since=10.0, consecutive_failures=1, at=10)
    h, notice = fail(h, 50.0)
    assert notice is None and h.state is es.State.FAILING and h.consecutive_failures == 2
    assert h.failing_since == 10.0


def test_pause_after_continuous_failure_then_probes_only() -> None:
    h, _ = fail(es.Health(url=URL), 0.0)
    h, notice = fail(h, 99.0)
    assert h.state is es.State.FAILING and notice is None
    h, notice = fail(h, 100.0)
    assert h.state is es.State.PAUSED
    assert notice == es.Notice(type="endpoint.paused", since=0.0, consecutive_failures=3, at=100)
    assert h.next_probe_at == 110.0
    assert not es.may_probe(h, 109.9)
    assert es.may_probe(h, 110.0)
    h = es.probe_taken(h, 110.0, PROBE)
    assert not es.may_probe(h, 115.0) and h.next_probe_at == 120.0
    # A failed probe: still paused, no second notice, the count goes on.
    h, notice = fail(h, 111.0)
    assert notice is None and h.state is es.State.PAUSED and h.consecutive_failures == 4
    assert h.next_probe_at == 121.0


def test_zero_pause_after_never_pauses() -> None:
    h, _ = es.failed(es.Health(url=URL), 0.0, pause_after=0, probe_interval=PROBE)
    h, _ = es.failed(h, 1e9, pause_after=0, probe_interval=PROBE)
    assert h.state is es.State.FAILING


def test_success_recovers_with_one_notice() -> None:
    h, _ = fail(es.Health(url=URL), 0.0)
    h, _ = fail(h, 200.0)
    assert h.state is es.State.PAUSED
    h, notice = es.succeeded(h, 300.0)
    assert h == es.Health(url=URL, last_success_at=300.0)
    assert notice == es.Notice(
        type="endpoint.recovered", since=0.0, consecutive_failures=2, at=300.0
    )
    h, notice = es.succeeded(h, 301.0)
    assert notice is None and h.last_success_at == 301.0


def test_healthy_endpoint_is_never_probed() -> None:
    assert not es.may_probe(es.Health(url=URL), 1e12)
    failing, _ = fail(es.Health(url=URL), 0.0)
    assert not es.may_probe(failing, 1e12)


def test_hand_resume_keeps_the_last_success_and_forgets_the_failures() -> None:
    h, _ = fail(es.Health(url=URL, last_success_at=7.0), 0.0)
    h, _ = fail(h, 500.0)
    h = es.resumed(h)
    assert h == es.Health(url=URL, last_success_at=7.0)
    # Failing again after a resume starts a new episode, with its own notice.
    h, notice = fail(h, 600.0)
    assert notice is not None and notice.type == "endpoint.failing" and h.failing_since == 600


def test_a_new_url_starts_over_and_the_same_url_keeps_its_state() -> None:
    h, _ = fail(es.Health(url=URL), 0.0)
    assert es.retargeted(h, URL) is h
    assert es.retargeted(h, "http://elsewhere/hook") == es.Health(url="http://elsewhere/hook")


def test_restored_pause_probes_at_once_and_failing_keeps_its_start() -> None:
    paused = es.restored(
        URL, "paused", last_success_at=1.0, consecutive_failures=9, failing_since=2.0, now=50.0
    )
    assert paused.state is es.State.PAUSED and es.may_probe(paused, 50.0)
    failing = es.restored(
        URL, "failing", last_success_at=None, consecutive_failures=3, failing_since=2.0, now=50.0
    )
    assert failing.next_probe_at is None
    # Continuous failure is counted from before the restart.
    h, notice = fail(failing, 102.0)
    assert h.state is es.State.PAUSED and notice is not None and notice.since == 2.0


def test_a_shorter_probe_interval_brings_the_next_probe_forward() -> None:
    h, _ = fail(es.Health(url=URL), 0.0)
    h, _ = es.failed(h, 200.0, pause_after=PAUSE, probe_interval=3600)
    assert h.next_probe_at == 3800.0
    assert es.reprobed(h, 300.0, 1.0).next_probe_at == 301.0
    assert es.reprobed(h, 300.0, 7200.0) is h  # a longer interval waits for the next probe
    healthy = es.Health(url=URL)
    assert es.reprobed(healthy, 300.0, 1.0) is healthy
