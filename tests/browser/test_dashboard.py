"""The dashboard in a real browser: log in, register a system and see its token once, follow a
full sync to done (and a failing one to WHMCS's reason), read revenue off the chart's table,
acknowledge a warning; the auditor's read-only view; nothing without a login; CSRF."""

from __future__ import annotations

import datetime as dt
import json
import re
from decimal import ROUND_HALF_EVEN, Decimal

import pytest
import requests

from coordinator import auth, keys
from coordinator.demo.fake_whmcs import FakeWhmcs, serve_fake_whmcs
from coordinator.forecaster import jobs
from coordinator.warnings import store as warning_store
from tests.browser.conftest import Gate

pytestmark = pytest.mark.integration

SEQUENCE = "/ui/series/default/sequences/invoice"
PAGES = ["/ui/", "/ui/systems", "/ui/numbering", "/ui/series/default", SEQUENCE + "/ledger",
         SEQUENCE + "/gaps", SEQUENCE + "/verify", "/ui/references?reference=1", "/ui/revenue",
         "/ui/warnings"]

UNLABELLED = """() => [...document.querySelectorAll(
    'input:not([type=hidden]), select, textarea')].filter(
    e => !(e.labels && e.labels.length) && !e.getAttribute('aria-label')).map(e => e.outerHTML)"""


def login(page, base: str, token: str) -> None:
    page.goto(base + "/ui/")
    assert "/ui/login" in page.url
    page.get_by_label("Token").fill(token)
    page.get_by_role("button", name="Log in").click()
    page.wait_for_url(base + "/ui/")


def check_accessible(page) -> None:
    """Every field has a label; from a fresh load, the first Tab reaches the skip link."""
    assert page.evaluate(UNLABELLED) == []
    page.reload()
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.textContent") == "Skip to content"


def paid_gross(fake, months: set[str]) -> Decimal:
    """Sum the fake's own Paid invoice totals in ``months`` (independently of the coordinator)."""
    return sum((Decimal(i["total"]) for i in fake.invoices_snapshot()
                if i["status"] == "Paid" and i["date"][:7] in months), Decimal(0))


def last_12_months(today: dt.date) -> set[str]:
    index = today.year * 12 + today.month - 1
    return {f"{(index - k) // 12:04d}-{(index - k) % 12 + 1:02d}" for k in range(12)}


def wait_state(page, state: str) -> None:
    page.wait_for_selector(f'#sync-progress[data-state="{state}"]', timeout=60_000)


def test_admin_runs_the_business_from_the_browser(page, shot, live_coordinator, worker,
                                                  redis_client):
    live = live_coordinator
    base = live.url
    today = dt.date.today()
    red = live.register("red", exchange_rate="0.5000")
    red.whmcs.seed(400, seed=2, start_date=today - dt.timedelta(days=500), days=500,
                   currencies=("EUR",))
    blue = FakeWhmcs("ident-blue", "secret-blue-0123456789")
    blue.seed(3000, seed=1, start_date=today - dt.timedelta(days=700), days=700,
              currencies=("EUR",))
    # Progress is reported per stored batch of ~5 pages: hold WHMCS after 20 of its 31 pages.
    gate = Gate(blue, after=20)

    with serve_fake_whmcs(gate) as blue_server:
        page.goto(base + "/ui/login")
        shot(page, "login")
        assert page.evaluate(UNLABELLED) == []
        assert page.evaluate("document.activeElement.id") == "f-token"  # autofocus
        login(page, base, live.admin_token)
        shot(page, "overview-empty")

        # Register blue: the agent token is shown once, and it works.
        page.get_by_role("link", name="Systems").click()
        check_accessible(page)
        page.get_by_label("Name").fill("blue")
        page.get_by_label("Description").fill("EU brand")
        page.get_by_label("API URL").fill(blue_server.url)
        page.get_by_label("API identifier").fill("ident-blue")
        page.get_by_label("API secret").fill("secret-blue-0123456789")
        page.get_by_label("Sync automatically every day").uncheck()
        shot(page, "systems-register")
        page.get_by_role("button", name="Register").click()
        token = page.get_by_label("Agent token").input_value()
        assert token.startswith("isg_")
        record = json.loads(redis_client.hget(keys.TOKENS, auth.digest(token)))
        assert (record["kind"], record["system"]) == ("agent", "blue")
        page.context.grant_permissions(["clipboard-read", "clipboard-write"])
        page.get_by_role("button", name="Copy").click()
        page.wait_for_selector("#copy-status:has-text('Copied')")
        assert page.evaluate("navigator.clipboard.readText()") == token
        shot(page, "system-token")
        page.get_by_role("link", name="Continue to blue").click()
        assert token not in page.content()  # shown once: never again
        assert "secret-blue-0123456789" not in page.content()

        # Numbers for the ledger, the gaps and the overview's hourly chart, taken by blue's agent.
        agent = {"Authorization": f"Bearer {token}"}
        ids = []
        for reference in ("1001", "1002", "1003"):
            answer = requests.post(base + "/v1/allocations", headers=agent, timeout=10,
                                   json={"document": "invoice", "reference": reference})
            assert answer.status_code == 201
            ids.append(answer.json()["id"])
        requests.post(f"{base}/v1/allocations/{ids[1]}/void", headers=agent, timeout=10,
                      json={"reason": "invoice deleted before sending"}).raise_for_status()

        # A full sync: the bar moves while WHMCS is held half-way, then reaches done.
        page.get_by_role("button", name="Full sync").click()
        page.wait_for_url(re.compile(r".*/ui/syncs/[0-9a-f]+$"))
        page.wait_for_function(
            "() => { const b = document.querySelector('#sync-bar');"
            " return b && b.max > 1 && b.value > 0; }")
        value, maximum = page.evaluate(
            "() => [document.querySelector('#sync-bar').value,"
            " document.querySelector('#sync-bar').max]")
        assert 0 < value < maximum == 3000
        assert page.locator("#sync-progress").get_attribute("data-state") == "running"
        shot(page, "sync-running")
        gate.open()
        wait_state(page, "done")
        assert "Invoices: 3000" in page.locator("#sync-progress").inner_text()
        shot(page, "sync-done")

        # red, synced from its page too.
        page.goto(base + "/ui/systems/red")
        page.get_by_role("button", name="Full sync").click()
        wait_state(page, "done")

        # Revenue: the chart draws both systems and the forecast; its table has the totals.
        page.get_by_role("link", name="Revenue").click()
        page.wait_for_function("() => window.Chart && Chart.getChart('revenue-chart')")
        labels = page.evaluate(
            "Chart.getChart('revenue-chart').data.datasets.map(d => d.label)")
        assert labels == ["blue", "red", "Forecast"]
        months = last_12_months(today)
        blue_gross = paid_gross(blue, months)
        red_gross = paid_gross(red.whmcs, months)
        expected = (blue_gross + red_gross * Decimal("0.5")).quantize(Decimal("0.01"),
                                                                       ROUND_HALF_EVEN)
        assert Decimal(page.locator("#total-gross").inner_text()) == expected
        drawn = page.evaluate(
            "Chart.getChart('revenue-chart').data.datasets[0].data.reduce((a, b) => a + b, 0)")
        assert Decimal(str(drawn)).quantize(Decimal("0.01")) == blue_gross
        check_accessible(page)
        shot(page, "revenue")
        with page.expect_download() as download:
            page.get_by_role("link", name="Download CSV").click()
        rows = download.value.path().read_text().splitlines()
        assert rows[0].startswith("month,blue gross,red gross,")
        assert rows[-1].split(",")[-2] == str(expected)

        # A wrong secret (write-only field): the next sync fails with WHMCS's reason and a fix.
        page.goto(base + "/ui/systems/blue")
        page.get_by_label("New API secret").fill("not-the-secret")
        page.get_by_role("button", name="Save").click()
        page.wait_for_selector("text=Saved.")
        page.get_by_role("button", name="Sync new invoices").click()
        wait_state(page, "failed")
        failure = page.locator("#sync-progress").inner_text()
        assert "whmcs_auth" in failure and "What to fix" in failure
        assert page.locator("#sync-error").inner_text()
        shot(page, "sync-failed")

        # Warnings: the failure is listed and acknowledged.
        page.get_by_role("link", name="Warnings").click()
        row = page.locator('tr[data-id="sync_failed:blue"]')
        assert "rejected the API credentials" in row.inner_text()
        shot(page, "warnings")
        row.get_by_role("button", name="Acknowledge warning sync_failed:blue").click()
        page.wait_for_load_state()
        assert page.locator('tr[data-id="sync_failed:blue"]').count() == 0  # filter: open
        page.get_by_label("State").select_option("all")
        page.get_by_role("button", name="Filter").click()
        assert "acknowledged" in page.locator('tr[data-id="sync_failed:blue"]').inner_text()
        assert redis_client.hget(keys.warning("sync_failed:blue"), "acked") == "1"

        # Numbering: ledger with the reference search, and the void with its reason.
        page.get_by_role("link", name="Numbering").click()
        check_accessible(page)
        shot(page, "numbering")
        page.get_by_role("link", name="default", exact=True).click()
        page.get_by_role("link", name="Ledger", exact=True).first.click()
        assert page.locator("#ledger-table tbody tr").count() == 3
        shot(page, "ledger")
        page.get_by_label("WHMCS reference").fill("1002")
        page.get_by_role("button", name="Search").click()
        assert page.locator("#references-table tbody tr").count() == 1
        assert "void" in page.locator("#references-table").inner_text()
        shot(page, "references")
        page.goto(base + SEQUENCE + "/gaps")
        assert "invoice deleted before sending" in page.locator("#gaps-table").inner_text()
        shot(page, "gaps")

        # Overview: durability, sequences, the hourly chart, systems with their last syncs.
        page.get_by_role("link", name="Overview").click()
        page.wait_for_function("() => window.Chart && Chart.getChart('activity-chart')")
        assert page.evaluate(
            "Chart.getChart('activity-chart').data.datasets[0].data"
            ".reduce((a, b) => a + b, 0)") == 3
        assert page.locator("#health-status").inner_text() == "ok"
        # Open: what reconciliation found after the syncs (WHMCS numbers the coordinator never
        # issued, and the other way round); not the acknowledged sync failure.
        still_open = warning_store.list_warnings(redis_client, include_acked=False)
        assert "sync_failed:blue" not in {w["id"] for w in still_open}
        assert page.locator("#open-warnings").inner_text() == str(len(still_open))
        systems = page.locator("#overview-systems").inner_text()
        assert "blue" in systems and "failed" in systems and "red" in systems
        shot(page, "overview")

        # A form whose CSRF token was removed is refused, and changes nothing.
        page.goto(base + "/ui/systems/blue")
        page.evaluate("document.querySelector('#delete-form input[name=csrf_token]').remove()")
        page.get_by_label("to confirm").fill("blue")
        page.get_by_role("button", name="Delete blue").click()
        assert "CSRF" in page.content()
        assert redis_client.sismember(keys.SYSTEMS, "blue")

        # Delete with the typed confirmation: the button waits for the exact name.
        page.goto(base + "/ui/systems/blue")
        delete = page.get_by_role("button", name="Delete blue")
        assert delete.is_disabled()
        page.get_by_label("to confirm").fill("blu")
        assert delete.is_disabled()
        page.get_by_label("to confirm").fill("blue")
        delete.click()
        page.wait_for_selector("text=System blue deleted")
        assert not redis_client.sismember(keys.SYSTEMS, "blue")

        # Phone width: no page scrolls sideways (wide tables scroll inside their box).
        page.set_viewport_size({"width": 390, "height": 844})
        for path in PAGES:
            page.goto(base + path)
            assert page.evaluate(
                "document.documentElement.scrollWidth <= window.innerWidth"), path
        page.goto(base + "/ui/")
        shot(page, "overview-phone")


def test_auditor_sees_everything_and_can_change_nothing(page, shot, live_coordinator,
                                                        redis_client):
    live = live_coordinator
    live.register("red")
    _, token = auth.create_token(redis_client, auth.AUDITOR, "tax advisor", "test")
    login(page, live.url, token)
    for path in [p for p in PAGES if p != "/ui/systems"]:
        page.goto(live.url + path)
        assert page.url == live.url + path
        # The one form an auditor gets is logging out.
        assert page.locator("form[method=post]").count() == 1
        assert page.locator("form[method=post]").get_attribute("action") == "/ui/logout"
    shot(page, "auditor-revenue")
    # The systems registry is the admins' (as in the API): no link to it, 403 when typed in.
    assert page.get_by_role("link", name="Systems").count() == 0
    assert page.goto(live.url + "/ui/systems/red").status == 403
    # Posting anyway (with a valid CSRF token) is refused with 403 and changes nothing.
    status = page.evaluate("""async () => {
        const csrf = document.querySelector('input[name=csrf_token]').value;
        const body = new URLSearchParams({csrf_token: csrf, confirm: 'red'});
        return (await fetch('/ui/systems/red/delete', {method: 'POST', body})).status; }""")
    assert status == 403
    assert redis_client.sismember(keys.SYSTEMS, "red")


def test_revoking_a_token_ends_even_a_page_left_open(page, live_coordinator, redis_client):
    """The sync page polls in the background; once its token is revoked it lands on the
    login page by itself."""
    live = live_coordinator
    live.register("red")
    _, token = auth.create_token(redis_client, auth.ADMIN, "second admin", "test")
    login(page, live.url, token)
    queued = jobs.request_sync(redis_client, "red", "missing")  # no worker: stays queued
    page.goto(f"{live.url}/ui/syncs/{queued['id']}")
    assert page.locator("#sync-progress").get_attribute("data-state") == "queued"
    auth.revoke_token(redis_client, auth.token_id(auth.digest(token)), "admin:test")
    page.wait_for_url(re.compile(r".*/ui/login\?next=.*"))


def test_no_page_is_reachable_without_logging_in(page, live_coordinator):
    live_coordinator.register("red")
    for path in PAGES + ["/ui/systems/red", "/ui/revenue.csv"]:
        page.goto(live_coordinator.url + path)
        assert page.url.startswith(live_coordinator.url + "/ui/login?next="), path
        assert page.get_by_label("Token").is_visible()
