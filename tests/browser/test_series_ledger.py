"""Series and the auditors' ledger views in a real browser: an admin creates a series, sets its
format, registers a system in it; its numbers show in the overview, ledger, gaps and reference
search; verify shows the chain's head (then the first broken event); both exports download and
verify offline; a void number is reissued with a reason. An auditor reads every one of these
pages without a single write control, and a write forged from the auditor's session is refused
and changes nothing."""

from __future__ import annotations

import datetime as dt

import pytest
import requests

from coordinator import auth, keys
from coordinator.numbering import chain, checkpoints, export
from coordinator.numbering import series as series_domain
from tests.browser.test_dashboard import PAGES, check_accessible, login
from tests.support import snapshot

pytestmark = pytest.mark.integration

ACME = "/ui/series/acme-us"
ACME_INVOICE = ACME + "/sequences/invoice"

WRITE_CONTROLS = """() => [...document.querySelectorAll('form, button, input, select, textarea')]
    .filter(e => {
        const form = e.tagName === 'FORM' ? e : e.form;
        if (!form) return e.tagName !== 'BUTTON' || e.type !== 'button';
        if (form.getAttribute('action') === '/ui/logout') return false;
        return (form.getAttribute('method') || 'get').toLowerCase() !== 'get';
    }).map(e => e.outerHTML.slice(0, 120))"""
"""Every form, field or button that could send anything but a read (GET) or the logout."""


@pytest.fixture
def app_config(app_config):
    """The live coordinator signs checkpoints with a key of its own."""
    return {**app_config, "LEDGER_SIGNING_KEYS": checkpoints.generate_key()}


def take(base: str, token: str, reference: str) -> dict:
    answer = requests.post(base + "/v1/allocations", headers={"Authorization": f"Bearer {token}"},
                           json={"document": "invoice", "reference": reference}, timeout=10)
    assert answer.status_code == 201, answer.text
    return answer.json()


def download(page, button: str, fmt: str) -> str:
    page.get_by_label("Format").first.select_option(fmt)
    with page.expect_download() as started:
        page.get_by_role("button", name=button).click()
    return started.value.path().read_text()


@pytest.fixture
def acme(live_coordinator, redis_client):
    """Series acme-us with system green: three invoices (g1..g3), g2 voided by the agent."""
    live = live_coordinator
    assert live.request("POST", "/v1/series", json={
        "name": "acme-us", "description": "ACME Inc. (US)"}).status_code == 201
    registered = live.request("POST", "/v1/systems", json={
        "name": "green", "url": "http://127.0.0.1:9/includes/api.php", "api_identifier": "i",
        "api_secret": "s", "series": "acme-us", "auto_sync": False})
    assert registered.status_code == 201, registered.text
    token = registered.json()["agent_token"]
    ids = [take(live.url, token, f"g{i}")["id"] for i in (1, 2, 3)]
    requests.post(f"{live.url}/v1/allocations/{ids[1]}/void", timeout=10,
                  headers={"Authorization": f"Bearer {token}"},
                  json={"reason": "printed twice"}).raise_for_status()
    return ids


def test_admin_runs_a_second_series_from_the_browser(page, shot, live_coordinator,
                                                     redis_client):
    live = live_coordinator
    base = live.url
    year = str(dt.date.today().year)
    login(page, base, live.admin_token)

    # A new series, its invoice format, and a system registered in it — all from the pages.
    page.get_by_role("link", name="Numbering").click()
    check_accessible(page)
    page.get_by_label("Name").fill("acme-us")
    page.get_by_label("Description").fill("ACME Inc. (US)")
    page.get_by_role("button", name="Create series").click()
    page.wait_for_url(base + ACME + "?created=1")
    assert series_domain.get_series(redis_client, "acme-us")["description"] == "ACME Inc. (US)"
    page.locator("#settings-invoice").get_by_label("Format").fill("US-{YEAR}-{NUMBER}")
    page.get_by_role("button", name="Save invoice").click()
    page.wait_for_selector("text=Settings of invoice saved")
    assert redis_client.hget(keys.seq_settings("invoice", "acme-us"), "format") == (
        "US-{YEAR}-{NUMBER}")
    page.locator("#describe-form").get_by_label("Description").fill("ACME US LLC")
    page.get_by_role("button", name="Save description").click()
    page.wait_for_selector("text=Description saved")
    assert series_domain.get_series(redis_client, "acme-us")["description"] == "ACME US LLC"
    page.get_by_label("Credit notes have their own numbering").uncheck()
    page.get_by_role("button", name="Save credit-note numbering").click()
    page.wait_for_selector("text=are numbered in the invoice sequence")
    assert redis_client.hget(keys.seq_settings("credit_note", "acme-us"), "dedicated") == "0"
    check_accessible(page)
    shot(page, "series")

    page.get_by_role("link", name="Systems").click()
    page.get_by_label("Name").fill("green")
    page.get_by_label("API URL").fill("http://127.0.0.1:9/includes/api.php")
    page.get_by_label("API identifier").fill("ident-green")
    page.get_by_label("API secret").fill("secret-green-0123456789")
    page.get_by_label("Series").select_option("acme-us")
    page.get_by_role("button", name="Register").click()
    token = page.get_by_label("Agent token").input_value()
    page.get_by_role("link", name="Continue to green").click()
    assert page.locator("#system-series").inner_text() == "acme-us"

    # green's agent takes numbers in acme-us; the default series stays untouched.
    first, second, _ = (take(base, token, f"g{i}") for i in (1, 2, 3))
    assert first["formatted"] == f"US-{year}-000001" and first["series"] == "acme-us"
    requests.post(f"{base}/v1/allocations/{second['id']}/void", timeout=10,
                  headers={"Authorization": f"Bearer {token}"},
                  json={"reason": "printed twice"}).raise_for_status()

    page.get_by_role("link", name="Overview").click()
    row = page.locator('#overview-sequences tr[data-series="acme-us"][data-sequence="invoice"]')
    assert row.locator("td.num").nth(0).inner_text() == "3"  # last number this period
    assert page.locator(
        '#overview-sequences tr[data-series="default"][data-sequence="invoice"] td.num'
    ).nth(0).inner_text() == "—"
    page.wait_for_function("() => window.Chart && Chart.getChart('activity-chart')")
    assert page.evaluate("Chart.getChart('activity-chart').data.datasets[0].data"
                         ".reduce((a, b) => a + b, 0)") == 3

    # The series' ledger, its gaps, one allocation, and the search across series.
    page.goto(base + ACME)
    page.get_by_role("link", name="Ledger", exact=True).first.click()
    assert page.locator("#ledger-table tbody tr").count() == 3
    assert f"US-{year}-000002" in page.locator("#ledger-table").inner_text()
    shot(page, "series-ledger")
    page.get_by_role("link", name=f"Allocation {second['id']}").click()
    assert "printed twice" in page.locator("#allocation-facts").inner_text()
    shot(page, "allocation")
    page.get_by_role("link", name=f"Ledger of invoice {year}").click()
    page.get_by_role("link", name=f"Gaps and voids of {year}").click()
    assert "printed twice" in page.locator("#gaps-table").inner_text()
    page.goto(base + "/ui/numbering")
    page.get_by_label("WHMCS reference").fill("g1")
    page.get_by_role("button", name="Find in every series").click()
    assert page.locator("#references-table tbody tr").count() == 1
    assert "acme-us" in page.locator("#references-table").inner_text()

    # Verify: ok, with the head the API reports; then an export of each format verifies
    # offline, with no Redis.
    page.goto(base + ACME)
    page.get_by_role("link", name="Verify the chain").first.click()
    assert page.locator("#verify-result").get_attribute("data-ok") == "true"
    expected = live.request("GET", "/v1/series/acme-us/sequences/invoice/ledger/verify").json()
    assert page.locator("#verify-head").inner_text() == expected["head"]
    assert page.locator("#verify-events").inner_text() == str(expected["events"])
    page.get_by_role("button", name="Sign the head now").click()
    page.wait_for_selector("text=Checkpoint signed")
    assert page.locator("#verify-checkpoints").inner_text().startswith("1 ")
    assert page.locator("#verify-result").get_attribute("data-ok") == "true"
    check_accessible(page)
    shot(page, "verify")
    for fmt in ("jsonl", "csv"):
        text = download(page, "Download export of invoice", fmt)
        offline = export.verify_text(text)
        assert (offline["ok"], offline["events"], offline["head"], offline["checkpoints"]) == (
            True, expected["events"], expected["head"], 1)

    # Reissue, on the void number's page: the reason is required (by the server too), then the
    # document has a new number, linked both ways, and the agent's next request answers it.
    page.goto(f"{base}/ui/allocations/{second['id']}")
    page.evaluate("document.querySelector('#f-reason').removeAttribute('required')")
    page.get_by_role("button", name="Reissue a new number").click()
    assert "Length must be between 1 and 500." in page.locator("#reason-error").inner_text()
    assert redis_client.hget(keys.seq_ledger("invoice", year, "acme-us"), "4") is None
    check_accessible(page)  # reloads: the form starts empty again
    page.get_by_label("Reason").fill("voided by mistake, ticket 812")
    page.get_by_role("button", name="Reissue a new number").click()
    page.wait_for_selector("text=Reissued: the document")
    assert page.locator("h1").inner_text().startswith(f"US-{year}-000004")
    assert second["id"] in page.locator("#reissue-of").inner_text()
    assert "voided by mistake, ticket 812" in page.locator("#reissue-of").inner_text()
    shot(page, "reissued")
    replay = requests.post(base + "/v1/allocations", timeout=10,
                           headers={"Authorization": f"Bearer {token}"},
                           json={"document": "invoice", "reference": "g2"})
    assert replay.status_code == 200 and replay.json()["formatted"] == f"US-{year}-000004"
    page.get_by_role("link", name=second["id"]).click()
    assert page.locator("#reissue-form").count() == 0
    assert "acme-us/invoice" in page.locator("#reissued-as").inner_text()
    expected = live.request("GET", "/v1/series/acme-us/sequences/invoice/ledger/verify").json()
    assert expected["ok"]

    # A changed event is named by the page.
    events = keys.seq_events("invoice", "acme-us")
    index, raw = next((i, raw) for i, raw in enumerate(redis_client.lrange(events, 0, -1))
                      if '"g2"' in raw)
    redis_client.lset(events, index, raw.replace('"g2"', '"g7"'))
    page.goto(base + ACME_INVOICE + "/verify")
    assert page.locator("#verify-result").get_attribute("data-ok") == "false"
    named = page.locator("#verify-first-bad").inner_text()
    assert f"event {index} ({second['id']})" in named and "hash does not match" in named
    assert chain.verify(redis_client, "invoice", series="acme-us")["first_bad"]["seq"] == index
    shot(page, "verify-broken")

    # green has numbers: moving it to another series is refused, with the reason.
    page.goto(base + "/ui/systems/green")
    page.locator("#edit-form").get_by_label("Series").select_option("default")
    page.get_by_role("button", name="Save", exact=True).click()
    assert "cannot move" in page.get_by_role("alert").inner_text()
    assert redis_client.hget(keys.system("green"), "series") == "acme-us"

    # A series without systems or numbers is deleted once its name is typed.
    page.goto(base + "/ui/numbering")
    page.get_by_label("Name").fill("spare")
    page.get_by_role("button", name="Create series").click()
    page.wait_for_url(base + "/ui/series/spare?created=1")
    delete = page.get_by_role("button", name="Delete spare")
    assert delete.is_disabled()
    page.get_by_label("to confirm").fill("spare")
    delete.click()
    page.wait_for_selector("text=Series spare deleted")
    assert not series_domain.exists(redis_client, "spare")

    # Phone width: the new pages fit too.
    page.set_viewport_size({"width": 390, "height": 844})
    for path in (ACME, ACME_INVOICE + "/ledger", ACME_INVOICE + "/verify",
                 f"/ui/allocations/{second['id']}", "/ui/references?reference=g1"):
        page.goto(base + path)
        assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth"), path


def test_auditor_has_no_write_control_and_a_forged_write_is_refused(page, shot,
                                                                   live_coordinator,
                                                                   redis_client, valkey, acme):
    live = live_coordinator
    _, token = auth.create_token(redis_client, auth.AUDITOR, "tax advisor", "test")
    login(page, live.url, token)
    reader_pages = [p for p in PAGES if p != "/ui/systems"] + [
        ACME, ACME_INVOICE + "/ledger", ACME_INVOICE + "/gaps", ACME_INVOICE + "/verify",
        f"/ui/allocations/{acme[1]}", "/ui/references?reference=g1"]
    for path in reader_pages:
        response = page.goto(live.url + path)
        assert response.status == 200 and page.url == live.url + path, path
        assert page.evaluate(WRITE_CONTROLS) == [], path
    shot(page, "auditor-allocation")
    # Reading what an auditor is for: verify and the export.
    page.goto(live.url + ACME_INVOICE + "/verify")
    assert page.locator("#verify-result").get_attribute("data-ok") == "true"
    assert export.verify_text(download(page, "Download export of invoice", "csv"))["ok"]

    # Writes forged from this session, with its valid CSRF token, are refused.
    before = snapshot(valkey.url, skip=(b"ui:",))
    forged = {"/ui/numbering": {"name": "evil"}, ACME: {"description": "changed"},
              ACME + "/delete": {"confirm": "acme-us"},
              ACME_INVOICE: {"next_number": "90", "format": "X-{NUMBER}"},
              "/ui/systems/green": {"series": "default"},
              f"/ui/allocations/{acme[1]}/reissue": {"reason": "forged"},
              ACME_INVOICE + "/checkpoints": {}}
    for path, form in forged.items():
        status = page.evaluate("""async ([path, form]) => {
            const csrf = document.querySelector('input[name=csrf_token]').value;
            const body = new URLSearchParams({...form, csrf_token: csrf});
            return (await fetch(path, {method: 'POST', body})).status; }""", [path, form])
        assert status == 403, path
    assert snapshot(valkey.url, skip=(b"ui:",)) == before
