"""Exceptions raised by the invoice-sync agent.

The hierarchy, in one place::

    AgentError                      root: catch this to catch everything the agent raises
    ├── ConfigError                 the agent's own configuration is missing or invalid
    ├── CoordinatorError            talking to the coordinator failed (see _client.py)
    └── WhmcsError                  talking to this installation's WHMCS failed (see _whmcs.py)

Every message says what the operator must fix, never contains a token or secret.
"""

from __future__ import annotations


class AgentError(Exception):
    """Root of every error the agent raises."""


class ConfigError(AgentError):
    """The agent's configuration is missing a value or has an invalid one."""
