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


def system_tag(name: str) -> str:
    """The hash tag ``{sys:<name>}`` every per-system key starts with (one Cluster slot)."""
    return f"{{sys:{name}}}"


def system_data_pattern(name: str) -> str:
    """SCAN pattern of every key of system ``name``: its record and its forecaster data.

    Deleting a system purges everything under this pattern, so per-system data (invoices,
    aggregates, sync history) must live under ``system_tag(name)``. Names are slugs
    (``[a-z0-9_-]``), so they hold no glob characters.
    """
    return f"{system_tag(name)}:*"
