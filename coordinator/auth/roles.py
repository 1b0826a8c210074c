"""Who may call: the roles a token can have, and the principal a request authenticates as.

    admin    full control: sequences, systems, syncs, tokens, warnings
    auditor  read-only: sequences, ledgers, gaps, audits, reports, warnings — never a change
    agent    one system's allocations: allocate, confirm, void (and read its own)

Which role may call which endpoint is declared on each view with ``auth.require(...)``;
``docs/TOKENS.md`` has the table and a test holds every route to it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

ADMIN = "admin"
AUDITOR = "auditor"
AGENT = "agent"

ROLES = (ADMIN, AUDITOR, AGENT)
"""Every role a stored token may have."""

MANAGED_ROLES = (ADMIN, AUDITOR)
"""Roles created and revoked through ``/v1/tokens``; agent tokens belong to their system and
change only through the systems registry (register, rotate, delete)."""

READERS = (ADMIN, AUDITOR)
"""Roles that may read the numbering and reporting endpoints."""

TOKEN_PREFIX = {ADMIN: "isa_", AUDITOR: "isr_", AGENT: "isg_"}
"""Prefixes make a leaked token recognisable to secret scanners and in support tickets."""


@dataclass(frozen=True)
class Principal:
    """Who is calling: an admin, an auditor, or the agent of one system.

    ``token_id`` names the token in ``GET /v1/tokens`` and in audit records; it is left out of
    comparisons, so ``Principal("agent", "blue")`` is the agent of blue whatever its token.
    """

    kind: str
    system: str | None = None
    token_id: str | None = field(default=None, compare=False)

    @property
    def is_admin(self) -> bool:
        """Whether this is an admin."""
        return self.kind == ADMIN

    @property
    def actor(self) -> str:
        """Name the caller in audit records: ``agent:<system>``, ``admin:<token id>``…"""
        if self.kind == AGENT:
            return f"agent:{self.system}"
        return f"{self.kind}:{self.token_id}"
