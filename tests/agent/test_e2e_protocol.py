"""The agent's protocol assumptions, checked against the real coordinator over HTTP.

test_client.py tests retries against a hand-written fake coordinator; every claim it makes
about the coordinator's behaviour (replay, idempotent confirm and void, refusals) is checked
here against the real one. Where the two differ, the real one is the contract:
confirming with another invoicenum is 409 (not accepted), and an agent may not void a
confirmed number (403; only an admin may).
"""

from __future__ import annotations

import datetime as dt
import http.client
import json
import threading

import pytest
import requests

from agent import Client, CoordinatorRefused, Journal, Poller, Sidecar, WhmcsClient, make_server

pytestmark = pytest.mark.integration

TODAY = dt.date.today()


@pytest.fixture
def blue(live_coordinator):
    return live_coordinator.register("blue")


@pytest.fixture
def agent_client(live_coordinator, blue):
    with Client(url=live_coordinator.url, token=blue.token) as client:
        yield client


def test_replay_answers_200_with_the_same_number(live_coordinator, blue) -> None:
    body = {"document": "invoice", "reference": "10234", "date": TODAY.isoformat()}
    headers = {"Authorization": f"Bearer {blue.token}"}
    first = requests.post(f"{live_coordinator.url}/v1/allocations", json=body, headers=headers)
    again = requests.post(f"{live_coordinator.url}/v1/allocations", json=body, headers=headers)
    assert (first.status_code, again.status_code) == (201, 200)
    assert again.json() == first.json()


def test_same_reference_same_number_through_the_client(agent_client) -> None:
    first = agent_client.allocate("invoice", "1", TODAY)
    assert agent_client.allocate("invoice", "1", TODAY) == first
    assert agent_client.allocate("invoice", "2", TODAY).number == first.number + 1
    assert agent_client.allocate("credit_note", "1", TODAY).formatted.startswith("CN-")


def test_confirm_and_void_are_idempotent(agent_client) -> None:
    a = agent_client.allocate("invoice", "9", TODAY)
    assert agent_client.confirm(a.id, a.formatted).status == "confirmed"
    assert agent_client.confirm(a.id, a.formatted).status == "confirmed"
    b = agent_client.allocate("invoice", "10", TODAY)
    assert agent_client.void(b.id, "invoice deleted before sending").status == "void"
    again = agent_client.void(b.id, "a retried void, other words")
    assert (again.status, again.raw["void_reason"]) == ("void", "invoice deleted before sending")
    assert agent_client.get(a.id).status == "confirmed"


def test_refusals_the_agent_must_handle(agent_client, live_coordinator) -> None:
    a = agent_client.allocate("invoice", "11", TODAY)
    with pytest.raises(CoordinatorRefused) as info:
        agent_client.allocate("invoice", "11", dt.date(TODAY.year - 1, 6, 1))
    assert info.value.code == 409  # the same document in another period
    with pytest.raises(CoordinatorRefused) as info:
        agent_client.confirm(a.id, "INV-SOMETHING-ELSE")
    assert info.value.code == 409  # a confirm must carry the allocated number
    agent_client.confirm(a.id, a.formatted)
    with pytest.raises(CoordinatorRefused) as info:
        agent_client.void(a.id, "changed my mind")
    assert info.value.code == 403  # confirmed: on a legal document; only an admin voids
    b = agent_client.allocate("invoice", "12", TODAY)
    agent_client.void(b.id, "not needed")
    with pytest.raises(CoordinatorRefused) as info:
        agent_client.confirm(b.id, b.formatted)
    assert info.value.code == 409  # void is final
    with pytest.raises(CoordinatorRefused) as info:
        agent_client.get(f"invoice:{TODAY.year}:999")
    assert info.value.code == 404


def test_an_agent_cannot_touch_another_systems_numbers(live_coordinator, agent_client) -> None:
    red = live_coordinator.register("red")
    a = agent_client.allocate("invoice", "1", TODAY)
    with Client(url=live_coordinator.url, token=red.token) as other:
        for call in (lambda: other.confirm(a.id, a.formatted), lambda: other.get(a.id),
                     lambda: other.void(a.id, "not mine")):
            with pytest.raises(CoordinatorRefused) as info:
                call()
            assert info.value.code == 403
    assert agent_client.get(a.id).status == "issued"


def test_whoami_and_status(live_coordinator, blue, agent_client) -> None:
    url = f"{live_coordinator.url}/v1/whoami"
    assert requests.get(url, headers={"Authorization": f"Bearer {blue.token}"}).json() == {
        "kind": "agent", "system": "blue"}
    assert requests.get(url, headers=live_coordinator.headers).json() == {
        "kind": "admin", "system": None}
    bad = requests.get(url, headers={"Authorization": "Bearer isg_nope"})
    assert bad.status_code == 401 and bad.json()["code"] == 401

    assert agent_client.whoami() == {"kind": "agent", "system": "blue"}
    status = agent_client.status()
    assert (status.live, status.ready, status.token_valid, status.system) == (
        True, True, True, "blue")
    assert status.ok
    with Client(url=live_coordinator.url, token="isg_nope") as wrong:
        assert wrong.status().token_valid is False
    # Rotating the token: the old one is refused at once.
    live_coordinator.request("POST", "/v1/systems/blue/agent-token")
    assert agent_client.status().token_valid is False


def test_sidecar_allocates_through_the_real_coordinator_and_the_poller_finishes(
    live_coordinator, blue, tmp_path
) -> None:
    """The hook took a number through the sidecar, then PHP died before writing it."""
    iid = blue.whmcs.add_invoice(status="Paid", subtotal="10.00", date=TODAY)
    config = blue.agent_config(tmp_path / "journal.sqlite3")
    with Journal(config.journal) as journal:
        sidecar = Sidecar(lambda: Client(config), journal=journal)
        server = make_server("127.0.0.1:0", sidecar)
        thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05},
                                  daemon=True)
        thread.start()
        try:
            conn = http.client.HTTPConnection(*server.server_address[:2], timeout=30)
            body = {"document": "invoice", "reference": iid, "date": TODAY.isoformat()}
            conn.request("POST", "/allocate", json.dumps(body),
                         {"Content-Type": "application/json"})
            response = conn.getresponse()
            allocation = json.loads(response.read())
            conn.close()
        finally:
            server.shutdown()
            server.server_close()
        assert response.status == 200
        assert allocation["system"] == "blue" and allocation["status"] == "issued"

        with (
            Client(config) as client,
            WhmcsClient(blue.whmcs_url, blue.identifier, blue.secret) as whmcs,
        ):
            report = Poller(client, whmcs, journal).run()
    assert report.ok and report.allocations == 0  # finished from the journal, no new ask
    assert blue.invoicenums()[iid] == allocation["formatted"]
    (entry,) = live_coordinator.ledger()
    assert (entry["id"], entry["status"]) == (allocation["id"], "confirmed")
