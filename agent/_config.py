"""The agent's configuration: arguments > environment > config file > defaults."""

from __future__ import annotations

import dataclasses
import ipaddress
import logging
import math
import os
import stat
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from agent._exceptions import ConfigError

log = logging.getLogger("agent")

ENV_PREFIX = "INVOICE_SYNC_AGENT_"
"""Prefix of every environment variable the agent reads (API.md, "Agent configuration")."""

CONFIG_ENV = ENV_PREFIX + "CONFIG"
"""Environment variable naming the config file when ``--config`` is not given."""

DEFAULT_TIMEOUT = 10.0
"""Seconds to wait for the coordinator to connect, and again to answer, per attempt."""

NUMBER_ON_CHOICES = ("paid", "created")
"""When WHMCS documents get their number: on payment (proforma mode) or on creation."""

_SECRET_FIELDS = frozenset({"token", "whmcs_secret", "whmcs_access_key"})


def default_journal_path() -> Path:
    """Return the journal's default path under the user's state directory (XDG)."""
    state = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(state) / "invoice-sync" / "agent-journal.sqlite3"


@dataclasses.dataclass(frozen=True)
class Config:
    """Everything the agent needs to know, validated.

    Build it from layers with :meth:`load` (what the CLI does)::

        config = Config.load(file="/etc/invoice-sync/agent.toml", token="…")
        client = Client(config)

    or directly, when every value is at hand::

        config = Config(url="https://numbers.example.com", token="…")

    The config file is TOML; keys are the environment names without the prefix, lower case::

        url = "https://numbers.example.com"
        token = "…"
        whmcs_url = "https://billing.blue.example/includes/api.php"
        number_on = "paid"
        journal = "/var/lib/invoice-sync/journal.sqlite3"
        ca_bundle = "/etc/ssl/certs/internal-ca.pem"
        timeout = 10

    Secrets (``token``, ``whmcs_secret``, ``whmcs_access_key``) never appear in ``repr``.
    """

    url: str | None = None
    token: str | None = dataclasses.field(default=None, repr=False)
    whmcs_url: str | None = None
    whmcs_identifier: str | None = None
    whmcs_secret: str | None = dataclasses.field(default=None, repr=False)
    whmcs_access_key: str | None = dataclasses.field(default=None, repr=False)
    number_on: str = "paid"
    journal: Path = dataclasses.field(default_factory=default_journal_path)
    ca_bundle: Path | None = None
    timeout: float = DEFAULT_TIMEOUT

    def __post_init__(self) -> None:
        # Normalise first (frozen: via object.__setattr__), then validate.
        if self.url is not None:
            object.__setattr__(self, "url", self.url.rstrip("/"))
        object.__setattr__(self, "journal", Path(self.journal))
        if self.ca_bundle is not None:
            object.__setattr__(self, "ca_bundle", Path(self.ca_bundle))
        try:
            timeout = float(self.timeout)
        except (TypeError, ValueError):
            raise ConfigError(
                f"timeout must be a number of seconds, not {self.timeout!r}"
            ) from None
        object.__setattr__(self, "timeout", timeout)
        self._validate()

    def _validate(self) -> None:
        if self.url is not None:
            _check_coordinator_url(self.url)
        if self.token is not None and (
            not self.token.strip() or any(c in self.token for c in "\r\n")
        ):
            raise ConfigError("token is empty or contains a line break; copy it again")
        if self.whmcs_url is not None and urlsplit(self.whmcs_url).scheme not in ("http", "https"):
            raise ConfigError("whmcs_url must be the http(s) URL of WHMCS's includes/api.php")
        if self.number_on not in NUMBER_ON_CHOICES:
            raise ConfigError(
                f"number_on must be one of {', '.join(NUMBER_ON_CHOICES)}, not {self.number_on!r}"
            )
        if not (math.isfinite(self.timeout) and self.timeout > 0):
            raise ConfigError(f"timeout must be a positive number of seconds, not {self.timeout}")
        if self.ca_bundle is not None and not self.ca_bundle.exists():
            raise ConfigError(f"ca_bundle {self.ca_bundle} does not exist")

    def require(self, *names: str) -> None:
        """Raise :class:`ConfigError` naming every one of ``names`` that has no value."""
        missing = [n for n in names if getattr(self, n) in (None, "")]
        if missing:
            hints = ", ".join(
                f"{n} ({ENV_PREFIX}{n.upper()} / --{n.replace('_', '-')})" for n in missing
            )
            raise ConfigError(f"missing configuration: {hints}")

    @classmethod
    def load(
        cls,
        file: str | os.PathLike[str] | None = None,
        *,
        environ: Mapping[str, str] | None = None,
        **overrides: Any,
    ) -> Config:
        """Build a config from arguments > environment > config file > defaults.

        Args:
            file: A TOML config file. Without it, ``INVOICE_SYNC_AGENT_CONFIG`` names one;
                without that, no file is read.
            environ: The environment to read (``os.environ`` when omitted).
            **overrides: Field values given explicitly (``None`` means "not given").

        Raises:
            ConfigError: A file that cannot be read, an unknown key, an invalid value.
        """
        env = os.environ if environ is None else environ
        unknown = set(overrides) - _field_names()
        if unknown:
            raise ConfigError(f"unknown configuration field(s): {', '.join(sorted(unknown))}")
        values: dict[str, Any] = {}
        path = file if file is not None else env.get(CONFIG_ENV)
        if path:
            values.update(_read_file(Path(path)))
        for name in _field_names():
            raw = env.get(ENV_PREFIX + name.upper())
            if raw is not None and raw != "":
                values[name] = raw
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)


def _field_names() -> set[str]:
    return {f.name for f in dataclasses.fields(Config)}


def _read_file(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as fh:
            data = tomllib.load(fh)
            mode = os.fstat(fh.fileno()).st_mode
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {path} is not valid TOML: {exc}") from None
    unknown = set(data) - _field_names()
    if unknown:
        raise ConfigError(
            f"config file {path}: unknown key(s) {', '.join(sorted(unknown))}; "
            f"known: {', '.join(sorted(_field_names()))}"
        )
    for key, value in data.items():
        if not isinstance(value, str | int | float) or isinstance(value, bool):
            raise ConfigError(f"config file {path}: {key} must be a string or a number")
    if _SECRET_FIELDS & set(data) and mode & (stat.S_IRWXG | stat.S_IRWXO) & ~stat.S_IRGRP:
        # Group-readable is fine (a service group); anything more exposes the token.
        log.warning("config file %s holds secrets and is readable by others; chmod 0640", path)
    return data


def _check_coordinator_url(url: str) -> None:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(f"url must be the coordinator's http(s) base URL, not {url!r}")
    if parts.query or parts.fragment:
        raise ConfigError("url must not carry a query or fragment")
    if parts.scheme == "http" and not is_loopback_host(parts.hostname):
        # The bearer token would cross the network in clear text, and anyone holding it can
        # burn numbers (gaps the tax office will ask about). Plain HTTP only on this machine.
        raise ConfigError(
            f"url {url!r} uses plain http to another machine; use https "
            "(plain http is accepted only for localhost)"
        )


def is_loopback_host(host: str) -> bool:
    """Whether ``host`` is ``localhost`` or a loopback IP literal (no DNS lookup)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
