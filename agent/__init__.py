"""invoice-sync agent: take the next legal number from the coordinator, fail closed.

Thin on purpose: requests and the standard library only; never imports coordinator code.
"""

from agent._exceptions import AgentError, ConfigError

__all__ = [
    "AgentError",
    "ConfigError",
]
