"""Guards of allocation that the mutation run (issue 17) found without a test of their own."""

from __future__ import annotations

import pytest

from coordinator import keys
from tests.support import snapshot

pytestmark = [pytest.mark.integration, pytest.mark.both_servers]

SWITCHING = "Credit-note numbering is being switched between sequences; retry shortly"


def take(client, headers, reference, document="invoice", date="2026-11-21"):
    return client.post("/v1/allocations", headers=headers,
                       json={"document": document, "reference": reference, "date": date})


def test_a_credit_note_during_a_half_done_switch_is_told_to_retry_and_takes_nothing(
    client, agent, redis_client, valkey
):
    """Mid-switch of credit notes to the invoice sequence (credit_note already closed, invoice
    not yet open) neither sequence serves credit notes. The agent must be told exactly that,
    so that it retries, and no number may be taken while the switch is half done."""
    blue = agent("blue")
    assert take(client, blue, "warm-up").status_code == 201
    redis_client.hset(keys.seq_settings("credit_note"), "dedicated", "0")
    before = snapshot(valkey.url)
    answer = take(client, blue, "cn-1", document="credit_note")
    assert answer.status_code == 503
    assert answer.get_json()["message"] == SWITCHING
    assert snapshot(valkey.url) == before
