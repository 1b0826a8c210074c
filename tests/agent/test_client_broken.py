"""A coordinator answering 500 ("something is broken") is refused at once, never retried."""

from __future__ import annotations

import pytest

from agent import Client, CoordinatorRefused
from agent._cli import ExitCode, main

from .conftest import FAST, TOKEN, FakeCoordinator, Sleeps
from .test_sidecar import call, journal, sidecar, tcp  # noqa: F401  (tcp and its fixtures)


def test_500_is_refused_after_one_attempt(coordinator: FakeCoordinator, client: Client,
                                          sleeps: Sleeps) -> None:
    coordinator.fail_next = [500] * FAST.attempts
    with pytest.raises(CoordinatorRefused) as info:
        client.allocate("invoice", "5")
    assert info.value.code == 500 and "injected failure" in info.value.message
    assert len(coordinator.posts("/v1/allocations")) == 1
    assert sleeps == []
    assert coordinator.allocations == {}


def test_cli_exits_refused_not_unavailable_on_500(coordinator: FakeCoordinator, agent_env,
                                                  capsys) -> None:
    coordinator.fail_next = [500] * 8
    code = main(["--url", coordinator.url, "--token", TOKEN, "next", "invoice",
                 "--reference", "9"])
    assert code == ExitCode.REFUSED
    assert "injected failure" in capsys.readouterr().err


def test_sidecar_passes_a_500_through_instead_of_try_again(tcp, coordinator) -> None:  # noqa: F811
    coordinator.fail_next = [500] * FAST.attempts
    status, payload = call(tcp, "POST", "/allocate", {"document": "invoice", "reference": "2"})
    assert status == 500
    assert "try again later" not in payload["message"]
    assert "injected failure" in payload["message"]
    assert set(payload) == {"code", "status", "message", "errors"}
