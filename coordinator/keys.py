"""Every Redis key the coordinator uses, built in one place.

Keys of one sequence share the hash tag ``{seq:<name>}`` and keys of one system share
``{sys:<name>}``, so each Lua script touches a single hash slot and the layout also holds
on Redis Cluster.
"""

from __future__ import annotations

# --- auth -------------------------------------------------------------------------------

TOKENS = "auth:tokens"
"""Hash: sha256(token) -> JSON ``{"kind": "admin"|"agent", "system": name|None, ...}``."""


# --- numbering ----------------------------------------------------------------------------


def seq_settings(seq: str) -> str:
    """Hash: the settings of sequence ``seq`` (increment, format, padding, reset, dedicated)."""
    return f"{{seq:{seq}}}:settings"


def seq_counter(seq: str, period: str) -> str:
    """String: the last number issued in ``period`` (``all``, ``2026`` or ``2026-11``)."""
    return f"{{seq:{seq}}}:counter:{period}"


# --- systems ------------------------------------------------------------------------------

SYSTEMS = "systems"
"""Set: names of the registered systems."""


def system(name: str) -> str:
    """Hash: one registered system (the API secret only as MultiFernet ciphertext)."""
    return f"{{sys:{name}}}:system"


# --- operations ---------------------------------------------------------------------------


def rate_limit(token_digest: str, window: int) -> str:
    """String: requests counted for one token (by digest prefix) in one fixed time window."""
    return f"ratelimit:{token_digest[:32]}:{window}"
