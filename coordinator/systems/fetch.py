"""A ``requests`` session that refuses to talk to forbidden addresses, checked at connect time.

``check_fetch_url`` vets what a name resolves to before a fetch; requests then resolves the name
again when it connects, and a rebinding DNS server can answer differently the second time. This
adapter closes that gap: it checks the address of the peer *actually connected* and drops the
connection before a byte (or the API secret) is sent when it is loopback, link-local, private,
multicast or unspecified.

Usage (the forecaster)::

    session = guarded_session(app.config)
    check_fetch_url(url, app.config)           # clear error early, before any connect
    session.post(url, data=form, timeout=30)   # the peer is checked again on connect
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import requests
from requests.adapters import HTTPAdapter
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool
from urllib3.exceptions import NewConnectionError

from coordinator.systems.urls import UrlPolicy, is_forbidden_address


def _checked(connection: Any, sock: Any) -> Any:
    peer = sock.getpeername()[0]
    if is_forbidden_address(peer):
        sock.close()
        raise NewConnectionError(
            connection, f"refused to connect to {connection.host}: forbidden address {peer}"
        )
    return sock


class _GuardedHTTPConnection(HTTPConnection):
    def _new_conn(self):
        return _checked(self, super()._new_conn())


class _GuardedHTTPSConnection(HTTPSConnection):
    def _new_conn(self):
        return _checked(self, super()._new_conn())


class _GuardedHTTPPool(HTTPConnectionPool):
    ConnectionCls = _GuardedHTTPConnection


class _GuardedHTTPSPool(HTTPSConnectionPool):
    ConnectionCls = _GuardedHTTPSConnection


class GuardedAdapter(HTTPAdapter):
    """An ``HTTPAdapter`` whose connections check their peer address (see module docstring)."""

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = {
            "http": _GuardedHTTPPool, "https": _GuardedHTTPSPool,
        }


def guarded_session(config: Mapping[str, Any]) -> requests.Session:
    """Return a session for fetching WHMCS APIs under the configured URL policy.

    With ``ALLOW_PRIVATE_SYSTEM_URLS`` it is a plain session. Otherwise every connection's
    peer is checked, and proxies from the environment are ignored (the peer would be the
    proxy, and a proxy would re-resolve the name where we cannot check it).
    """
    session = requests.Session()
    if UrlPolicy.from_config(config).allow_private:
        return session
    session.trust_env = False
    adapter = GuardedAdapter()
    session.mount("https://", adapter)
    session.mount("http://", adapter)
    return session
