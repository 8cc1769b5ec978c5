"""The operator console in a real browser (the distribution's Chromium, driven by Playwright)
against the daemon as a subprocess, with the sandbox and a callback receiver: what the page shows,
what its buttons do (checked at the receiver), and that it never reaches beyond 127.0.0.1."""

from __future__ import annotations

import re
import shutil
import signal
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import orjson
import pytest
from harness import DaemonProcess, Receiver, SandboxProcess, instance_toml, legacy_body, wait_for
from playwright.sync_api import Browser, ConsoleMessage, Locator, Page, expect, sync_playwright
from qbo_events import console

CHROMIUM = shutil.which("chromium")
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="the chromium package is not installed")

TOKEN = "console-admin-token-0123456789"
WEBHOOK_REALM = "111"
REALMS = ("9341453908128517", "4620816365171386431")
ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--no-first-run",
]  # fmt: skip
WAIT_MS = 20_000


@dataclass
class Site:
    daemon: DaemonProcess
    receiver: Receiver
    sandbox: SandboxProcess
    tmp: Path
    failing: threading.Event  # while set, the receiver answers 500
    instances: str
    settings: str

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.daemon.health_port}/"


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    tmp = tmp_path_factory.mktemp("console")
    receiver = Receiver().start()
    failing = threading.Event()

    def plan(_event_id: str, _attempt: int) -> tuple[int, dict[str, str]]:
        return (500, {}) if failing.is_set() else (200, {})

    receiver.plan = plan
    sandbox = SandboxProcess(tmp, realms=REALMS)
    polling = 'event.poller.urls = ["invoices"]\nevent.poller.refresh_interval = 1\n'
    instances = (
        instance_toml("acme", WEBHOOK_REALM, receiver.url)
        + instance_toml(
            "ledger",
            REALMS[0],
            receiver.url,
            vendor="polling",
            extra=f'refresh_token = "{sandbox.refresh_token}"\n{polling}',
        )
        # A refresh token QuickBooks refuses: the instance needs re-authorization.
        + instance_toml(
            "lapsed",
            REALMS[1],
            receiver.url,
            vendor="polling",
            extra=f'refresh_token = "refused-refresh-token"\n{polling}',
        )
    )
    (tmp / "admin_token").write_text(TOKEN)
    d = DaemonProcess(tmp, instances)
    settings = sandbox.quickbooks_settings() + (
        '[http]\nadmin_token_file = "admin_token"\n'
        f'public_base_url = "http://127.0.0.1:{d.webhook_port}"\n'
    )
    d.write_config(instances, settings=settings)
    d.start()
    yield Site(d, receiver, sandbox, tmp, failing, instances, settings)
    try:
        assert d.stop() == 0
    finally:
        d.close()
        sandbox.close()
        receiver.stop()


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        yield b
        b.close()


@pytest.fixture
def page(browser: Browser, site: Site) -> Iterator[Any]:
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    requested: list[str] = []
    context.on("request", lambda request: requested.append(request.url))
    errors: list[str] = []
    p = context.new_page()
    p.set_default_timeout(WAIT_MS)
    p.on("pageerror", lambda error: errors.append(str(error)))

    def logged(msg: ConsoleMessage) -> None:
        # A refused action's 401 is logged by the browser itself; it is what the test wants.
        if msg.type == "error" and not msg.text.startswith("Failed to load resource"):
            errors.append(msg.text)

    p.on("console", logged)
    p.goto(site.url)
    p.wait_for_selector("body[data-loaded]")
    yield p
    context.close()
    assert requested, "the page made no request"
    outside = [url for url in requested if urlsplit(url).hostname != "127.0.0.1"]
    assert outside == [], f"the console reached beyond 127.0.0.1: {outside}"
    assert errors == [], f"the page logged errors: {errors}"


def api(site: Site, path: str, body: object = None) -> Any:
    request = urllib.request.Request(
        f"{site.url}api/v1/{path}",
        data=None if body is None else orjson.dumps(body),
        method="GET" if body is None else "POST",
        headers={"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        return orjson.loads(response.read())


def give_token(page: Page, token: str = TOKEN) -> None:
    page.fill("#token-input", token)
    page.click("#token-dialog button[value=ok]")


def card(page: Page, name: str) -> Locator:
    return page.locator(f'article.card[data-instance="{name}"]')


def test_the_console_is_served_small_and_locked_down(site: Site) -> None:
    assert console.size() < 200 * 1024
    for path, kind in (("", "text/html"), ("console/console.js", "text/javascript"),
                       ("console/console.css", "text/css")):  # fmt: skip
        with urllib.request.urlopen(site.url + path, timeout=10) as response:
            assert response.headers["Content-Type"].startswith(kind)
            assert response.headers["X-Content-Type-Options"] == "nosniff"
            policy = response.headers["Content-Security-Policy"]
            assert "script-src 'self'" in policy and "unsafe-inline" not in policy
    with pytest.raises(urllib.error.HTTPError) as missing:
        urllib.request.urlopen(site.url + "console/..%2Fconsole%2F__init__.py", timeout=10)
    assert missing.value.code == 404
    missing.value.close()


def test_the_overview_shows_each_instance_with_its_state(site: Site, page: Page) -> None:
    acme, ledger, lapsed = (card(page, n) for n in ("acme", "ledger", "lapsed"))
    expect(acme).to_have_attribute("data-state", "configured")
    expect(acme).to_have_attribute("data-mode", "webhooks")
    expect(acme).to_have_attribute("data-endpoint", "healthy")
    expect(ledger).to_have_attribute("data-mode", "polling")
    expect(lapsed).to_have_attribute("data-state", "needs re-authorization")
    expect(lapsed.locator("dd").first).to_have_text("needs re-authorization")
    # The polling table lists the polled resource of each polling instance, with its error.
    rows = page.locator("#polling-rows tr")
    expect(rows.filter(has_text="lapsed").filter(has_text="invoices")).to_contain_text(
        "authorize again"
    )
    expect(rows.filter(has_text="ledger")).to_have_count(1)


def test_the_chart_shows_a_burst(site: Site, page: Page) -> None:
    before = site.receiver.count()
    at = "2026-11-27T13:04:47Z"
    burst = [("Invoice", str(500 + i), "Create", at) for i in range(30)]
    assert site.daemon.post(legacy_body(WEBHOOK_REALM, *burst)) == 200
    wait_for(lambda: site.receiver.count() >= before + 30, what="the burst delivered")
    chart = page.locator('figure.chart[data-instance="acme"]')
    wait_for(
        lambda: (
            int(chart.get_attribute("data-delivered") or 0) >= 30
            and int(chart.get_attribute("data-accepted") or 0) >= 30
        ),
        what="the chart to draw the burst",
    )
    assert chart.locator("rect.bar").count() >= 1
    chart.locator("summary").click()
    rows = chart.locator("tbody tr")
    expect(rows.first).to_be_visible()
    cells = [row.locator("td").all_text_contents() for row in rows.all()]
    assert sum(int(c[1]) for c in cells) >= 30 and sum(int(c[2]) for c in cells) >= 30
    assert any(c[4] != "—" and c[5] != "—" for c in cells), cells


def test_a_dead_letter_is_retried_from_the_page_and_delivered(site: Site, page: Page) -> None:
    site.failing.set()
    body = legacy_body(WEBHOOK_REALM, ("Invoice", "900", "Create", "2026-11-27T14:00:00Z"))
    assert site.daemon.post(body) == 200
    dead = wait_for(
        lambda: api(site, "deliveries?state=dead&instance=acme")["deliveries"],
        what="the event to be dead-lettered",
    )
    event_id = dead[0]["event_id"]
    page.select_option("#filter select[name=state]", "dead")
    page.click("#filter button[type=submit]")
    row = page.locator(f'#delivery-rows tr[data-event-id="{event_id}"]')
    retry = row.get_by_role("button", name="Retry")

    # Without the token the button refuses, and nothing changes.
    retry.click()
    page.click("#token-cancel")
    expect(page.locator("#message")).to_contain_text("refused without the admin token")
    retry.click()
    give_token(page, "not-the-token")
    expect(page.locator("#message")).to_contain_text("token was refused")
    assert [i["event_id"] for i in api(site, "deliveries?state=dead")["deliveries"]] == [event_id]

    site.failing.clear()
    retry.click()
    give_token(page)
    expect(page.locator("#message")).to_contain_text("1 dead letter queued again")
    wait_for(lambda: event_id in site.receiver.ids(), what="the retried delivery at the receiver")
    assert api(site, "deliveries?state=dead")["deliveries"] == []


def test_a_replay_of_the_last_minute_redelivers_the_right_count(site: Site, page: Page) -> None:
    at = [f"2026-11-27T15:00:0{i}Z" for i in range(3)]
    for stamp in at:
        assert (
            site.daemon.post(legacy_body(WEBHOOK_REALM, ("Invoice", "777", "Update", stamp))) == 200
        )
    kept = wait_for(
        lambda: (
            (found := api(site, "deliveries?state=delivered&object=invoices/777")["deliveries"])
            and len(found) == 3
            and found
        ),
        what="three deliveries of invoice 777 in the history",
    )
    ids = {item["event_id"] for item in kept}
    delivered = site.receiver.ids()
    form = page.locator("#replay")
    form.locator("select[name=instance]").select_option("acme")
    form.locator("input[name=since]").fill("1m")
    form.locator("input[name=object]").fill("invoices/777")
    form.locator("button[type=submit]").click()
    give_token(page)
    expect(page.locator("#confirm-text")).to_have_text("Send 3 delivered events of acme again?")
    page.click("#confirm-ok")
    expect(page.locator("#message")).to_contain_text("3 events are queued")
    wait_for(lambda: site.receiver.count() >= len(delivered) + 3, what="three replayed deliveries")
    again = site.receiver.ids()[len(delivered) :]
    assert sorted(again) == sorted(ids)


def test_a_needs_reauthorization_instance_gets_its_connect_link(site: Site, page: Page) -> None:
    lapsed = card(page, "lapsed")
    expect(lapsed).to_have_attribute("data-state", "needs re-authorization")
    lapsed.get_by_role("button", name="Make connect link").click()
    give_token(page)
    link = lapsed.get_by_role("textbox", name="Connect link for lapsed")
    expect(link).to_have_value(
        re.compile(rf"^http://127\.0\.0\.1:{site.daemon.webhook_port}/connect/\S+$")
    )


def test_the_quarantine_is_listed_shown_and_retried(site: Site, page: Page) -> None:
    # Markup in a body is shown as text, never made into elements.
    assert site.daemon.post(b'{"eventNotifications": "<img id=injected src=/x>"}') == 200
    row = page.locator("#quarantine-rows tr[data-quarantine-id]").last
    expect(row).to_be_visible()
    row.get_by_role("button", name="Show").click()
    expect(page.locator("#quarantine-body")).to_contain_text('"<img id=injected src=/x>"')
    assert page.locator("#injected").count() == 0
    row.get_by_role("button", name="Retry").click()
    give_token(page)
    expect(page.locator("#message")).to_contain_text("Tried 1: 0 parsed")
    expect(page.locator("#message")).to_contain_text("1 still failing")


def test_a_resync_is_started_and_cancelled_from_its_card(site: Site, page: Page) -> None:
    lapsed = card(page, "lapsed")
    lapsed.get_by_role("button", name="Start resync").click()
    give_token(page)
    expect(page.locator("#confirm-text")).to_contain_text("Start a resync of lapsed?")
    page.click("#confirm-ok")
    expect(page.locator("#message")).to_contain_text(re.compile(r"Resync rs_\S+ of lapsed is"))
    cancel = lapsed.get_by_role("button", name="Cancel resync")
    expect(cancel).to_be_enabled()
    cancel.click()
    page.click("#confirm-ok")
    expect(page.locator("#message")).to_contain_text(re.compile(r"is (cancelling|cancelled)"))
    assert api(site, "instances/lapsed/resync")["resync"]["state"] in ("cancelling", "cancelled")


def test_a_rejected_reload_shows_a_banner(site: Site, page: Page) -> None:
    banner = page.locator("#banner")
    expect(banner).to_be_hidden()
    site.daemon.write_config(site.instances + "[[instances]]\nname = 5\n", settings=site.settings)
    site.daemon.signal(signal.SIGHUP)
    expect(banner).to_contain_text("The last reload was rejected")
    site.daemon.write_config(site.instances, settings=site.settings)
    site.daemon.signal(signal.SIGHUP)
    expect(banner).to_be_hidden()


def test_a_phone_sized_window_has_no_horizontal_scroll(
    site: Site, browser: Browser, tmp_path: Path
) -> None:
    context = browser.new_context(viewport={"width": 390, "height": 844})
    try:
        p = context.new_page()
        p.goto(site.url)
        p.wait_for_selector("body[data-loaded]", timeout=WAIT_MS)
        card(p, "acme").wait_for(timeout=WAIT_MS)
        overflow = p.evaluate(
            "document.documentElement.scrollWidth - document.documentElement.clientWidth"
        )
        assert overflow <= 0, f"the page scrolls sideways by {overflow} px"
        p.screenshot(path=str(tmp_path / "console-phone.png"))
        print(f"screenshot: {tmp_path / 'console-phone.png'}")
    finally:
        context.close()


def test_the_keyboard_reaches_the_buttons(site: Site, page: Page, tmp_path: Path) -> None:
    card(page, "acme").wait_for()
    page.screenshot(path=str(tmp_path / "console-overview.png"), full_page=False)
    reached: list[str] = []
    for _ in range(40):
        page.keyboard.press("Tab")
        reached.append(
            page.evaluate(
                "(() => { const e = document.activeElement;"
                " return e.tagName + ':' + (e.textContent || '').trim() + ':'"
                " + getComputedStyle(e).outlineStyle; })()"
            )
        )
    buttons = [r for r in reached if r.startswith("BUTTON:")]
    assert any(r.startswith("BUTTON:Make connect link:") for r in buttons), reached
    assert any(r.startswith("BUTTON:Start resync:") for r in buttons), reached
    # The focused element shows it: an outline, not the browser's nothing.
    assert all(not r.endswith(":none") for r in buttons), buttons
    page.click('a[href="#deliveries"]')
    page.locator("#delivery-rows tr").first.get_by_role("button", name="Show").click()
    expect(page.locator("#delivery-detail pre").first).to_contain_text('"eventType"')
    page.screenshot(path=str(tmp_path / "console-deliveries.png"), full_page=False)
    print(
        f"screenshots: {tmp_path / 'console-overview.png'}, {tmp_path / 'console-deliveries.png'}"
    )
