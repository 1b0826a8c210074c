"""Typed, immutable views of what the coordinator answers."""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

from agent._exceptions import CoordinatorBadResponse

DOCUMENTS = ("invoice", "credit_note")
"""The document types the coordinator numbers (API.md, ``POST /v1/allocations``)."""


def parse_utc(value: str) -> dt.datetime:
    """Parse an ISO 8601 UTC timestamp such as ``2026-11-21T10:15:02Z`` into an aware datetime."""
    parsed = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    if parsed.tzinfo is None:
        raise ValueError(f"timestamp without a time zone: {value!r}")
    return parsed.astimezone(dt.UTC)


@dataclasses.dataclass(frozen=True)
class Allocation:
    """One number the coordinator issued, as API.md's allocation object.

    ::

        allocation = client.allocate("invoice", "10234", date=datetime.date(2026, 11, 21))
        allocation.formatted   # 'INV-2026-000051' -> write this into tblinvoices.invoicenum
        allocation.id          # 'invoice:2026:51' -> confirm or void with this

    ``raw`` keeps the coordinator's JSON as received, so fields added to the contract later
    survive a round trip (``--json`` prints it). ``replay`` says whether the coordinator
    answered with a number it had already issued for this document (HTTP 200, or a batch
    item's ``"replay": true``) rather than a new one (201); ``None`` when unknown.
    """

    id: str
    number: int
    formatted: str
    sequence: str
    period: str
    system: str
    document: str
    reference: str
    status: str
    issued_at: dt.datetime
    raw: Mapping[str, Any] = dataclasses.field(
        default_factory=dict, repr=False, compare=False, hash=False
    )
    replay: bool | None = dataclasses.field(default=None, compare=False, hash=False)

    @property
    def series(self) -> str:
        """Return the numbering series (API.md: ``default`` unless the coordinator says)."""
        series = self.raw.get("series")
        return series if isinstance(series, str) and series else "default"

    @classmethod
    def from_json(cls, data: Any) -> Allocation:
        """Build an allocation from the coordinator's JSON, or raise CoordinatorBadResponse."""
        if not isinstance(data, dict):
            raise CoordinatorBadResponse("allocation is not a JSON object")
        try:
            number = data["number"]
            if isinstance(number, bool) or not isinstance(number, int) or number < 0:
                raise ValueError(f"number must be a non-negative integer, not {number!r}")
            strings = {
                name: data[name]
                for name in (
                    "id",
                    "formatted",
                    "sequence",
                    "period",
                    "system",
                    "document",
                    "reference",
                    "status",
                )
            }
            for name, value in strings.items():
                if not isinstance(value, str) or not value:
                    raise ValueError(f"{name} must be a non-empty string, not {value!r}")
            issued_at = parse_utc(data["issued_at"])
        except KeyError as exc:
            raise CoordinatorBadResponse(f"allocation lacks the field {exc.args[0]!r}") from None
        except (TypeError, ValueError, AttributeError) as exc:
            raise CoordinatorBadResponse(f"allocation is malformed: {exc}") from None
        replay = data.get("replay")
        return cls(
            number=number,
            issued_at=issued_at,
            raw=MappingProxyType(dict(data)),
            replay=replay if isinstance(replay, bool) else None,
            **strings,
        )

    def to_json(self) -> dict[str, Any]:
        """Return the allocation as the coordinator sent it (unknown fields included)."""
        if self.raw:
            return dict(self.raw)
        data = {
            f.name: getattr(self, f.name)
            for f in dataclasses.fields(self)
            if f.name not in ("raw", "replay")
        }
        data["issued_at"] = self.issued_at.isoformat().replace("+00:00", "Z")
        return data


@dataclasses.dataclass(frozen=True)
class Status:
    """What ``Client.status()`` found out about the coordinator.

    ::

        status = client.status()
        if not status.ok:
            print(status.problems)

    Attributes:
        url: The coordinator's base URL.
        live: ``GET /livez`` answered 2xx.
        ready: ``GET /readyz`` answered 2xx (Redis answers and is durable).
        token_valid: The agent token was accepted (``None``: not checked, no token).
        clock_skew: Coordinator clock minus local clock, from the HTTP ``Date`` header
            (``None`` when the coordinator sent none). One-second resolution.
        system: The system the agent token belongs to (``GET /v1/whoami``); ``None`` when
            unknown (older coordinator, refused token).
    """

    url: str
    live: bool
    ready: bool
    token_valid: bool | None
    clock_skew: dt.timedelta | None
    system: str | None = None

    MAX_CLOCK_SKEW = dt.timedelta(minutes=2)
    """Skew beyond which documents dated "today" may land in another period at midnight."""

    @property
    def problems(self) -> list[str]:
        """Return what is wrong, one sentence each; empty when all is well."""
        found = []
        if not self.live:
            found.append("coordinator is not live (GET /livez failed)")
        if not self.ready:
            found.append("coordinator is not ready (GET /readyz failed: Redis down or not durable)")
        if self.token_valid is False:
            found.append("the agent token was refused (401); check INVOICE_SYNC_AGENT_TOKEN")
        if self.clock_skew is not None and abs(self.clock_skew) > self.MAX_CLOCK_SKEW:
            found.append(f"clock skew of {self.clock_skew.total_seconds():+.0f}s; check NTP")
        return found

    @property
    def ok(self) -> bool:
        """Return True when nothing is wrong."""
        return not self.problems

    def to_json(self) -> dict[str, Any]:
        """Return the status as plain JSON values."""
        skew = None if self.clock_skew is None else self.clock_skew.total_seconds()
        return {
            "url": self.url,
            "live": self.live,
            "ready": self.ready,
            "token_valid": self.token_valid,
            "clock_skew_seconds": skew,
            "system": self.system,
            "ok": self.ok,
            "problems": self.problems,
        }
