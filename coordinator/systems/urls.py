"""Which WHMCS API URLs the coordinator may fetch: https only, never into its own network.

The coordinator holds every system's API secret and fetches the URL an admin typed, so a URL
pointing at ``127.0.0.1``, a private address or the cloud metadata service (169.254.169.254)
would turn it into a proxy into its own network (SSRF). The check runs twice:

- at registration (``validate_system_url``): the URL's shape, the scheme, IP literals, known
  internal names and, best-effort, what the name resolves to now;
- right before every fetch (``check_fetch_url``): the name is resolved again and *every*
  address must be public, so a name re-pointed after registration (DNS rebinding) is refused.
  The caller should connect to the returned addresses (or check the connected peer), which
  closes the remaining gap between this check and the connect.

Both are relaxed by ``ALLOW_HTTP_SYSTEM_URLS`` / ``ALLOW_PRIVATE_SYSTEM_URLS`` (labs, demo).
"""

from __future__ import annotations

import concurrent.futures
import ipaddress
import re
import socket
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from coordinator.exceptions import UnsafeURL

API_PATH_SUFFIX = "/includes/api.php"
"""WHMCS serves its external API at ``<install dir>/includes/api.php``; nothing else is valid."""

MAX_URL_LENGTH = 2048

Resolver = Callable[[str, int], list[str]]
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

_LABEL = re.compile(r"^(?!-)[a-z0-9-]{1,63}(?<!-)$")
_INTERNAL_NAMES = frozenset({
    "localhost", "localhost.localdomain", "ip6-localhost", "ip6-loopback",
    "metadata", "metadata.google.internal", "instance-data", "instance-data.ec2.internal",
})
_INTERNAL_SUFFIXES = (".localhost", ".local", ".localdomain", ".internal", ".intranet",
                      ".lan", ".home.arpa", ".in-addr.arpa", ".ip6.arpa")
_NAT64 = ipaddress.ip_network("64:ff9b::/96")


def resolve(host: str, port: int) -> list[str]:
    """Return every address ``host`` resolves to for TCP (the system resolver)."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP)
    return sorted({info[4][0] for info in infos})


@dataclass(frozen=True)
class UrlPolicy:
    """What URLs are acceptable, from config; ``resolver`` is injectable for tests.

    Usage::

        policy = UrlPolicy.from_config(app.config)
        url = validate_system_url("https://billing.example/includes/api.php", policy)
    """

    allow_http: bool = False
    allow_private: bool = False
    resolver: Resolver = field(default=resolve, compare=False)
    resolve_timeout: float = 2.0

    @classmethod
    def from_config(cls, config: Mapping[str, Any], resolver: Resolver | None = None) -> UrlPolicy:
        """Build the policy from ``ALLOW_HTTP_SYSTEM_URLS`` and ``ALLOW_PRIVATE_SYSTEM_URLS``."""
        return cls(
            allow_http=_truthy(config.get("ALLOW_HTTP_SYSTEM_URLS")),
            allow_private=_truthy(config.get("ALLOW_PRIVATE_SYSTEM_URLS")),
            resolver=resolver or resolve,
        )


def _truthy(value: Any) -> bool:
    if isinstance(value, str):
        return value.strip().lower() in {"1", "true", "yes", "on"}
    return bool(value)


def _unsafe(message: str) -> UnsafeURL:
    return UnsafeURL(message, {"json": {"url": [message]}})


@dataclass(frozen=True)
class _Parsed:
    scheme: str
    host: str
    port: int
    literal: IPAddress | None


def _parse(url: Any) -> _Parsed:
    """Check the URL's shape (never its addresses) and split it."""
    if not isinstance(url, str) or not url:
        raise _unsafe("Not a valid URL.")
    if len(url) > MAX_URL_LENGTH:
        raise _unsafe(f"Longer than {MAX_URL_LENGTH} characters.")
    if any(ch.isspace() or ord(ch) < 0x20 or ord(ch) > 0x7E for ch in url):  # > 0x7E: DEL too
        raise _unsafe("Must not contain whitespace, control or non-ASCII characters "
                      "(write international names in punycode).")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        raise _unsafe("Not a valid URL.") from None
    scheme = parts.scheme.lower()
    if scheme not in {"http", "https"}:
        raise _unsafe("Must be an https:// URL.")
    if "@" in parts.netloc:  # urlsplit finds a user (or password) only after an "@"
        raise _unsafe("Must not contain credentials: give them as api_identifier/api_secret.")
    if parts.query or parts.fragment or url.endswith(("?", "#")):
        # WHMCS merges query parameters into the API call: a query could override `action`.
        raise _unsafe("Must not have a query string or fragment.")
    if not parts.path.endswith(API_PATH_SUFFIX) or "/../" in parts.path or "/./" in parts.path:
        raise _unsafe(f"Must be the WHMCS API endpoint, ending in {API_PATH_SUFFIX}.")
    host = (parts.hostname or "").rstrip(".").lower()
    if not host:
        raise _unsafe("Must name a host.")
    return _Parsed(scheme, host, port or (443 if scheme == "https" else 80), _ip_literal(host))


def _ip_literal(host: str) -> IPAddress | None:
    """Return the address if ``host`` is an IP literal, in any form a resolver accepts."""
    if ":" in host:
        if "%" in host:
            raise _unsafe("IPv6 zone identifiers are not accepted.")
        try:
            return ipaddress.IPv6Address(host)
        except ValueError:
            raise _unsafe("Not a valid IPv6 address.") from None
    # inet_aton takes what the C resolver takes: 1.2.3.4, and 127.1, 0x7f000001, 2130706433,
    # 0177.0.0.1 too.
    try:
        return ipaddress.IPv4Address(socket.inet_aton(host))
    except OSError:
        pass
    labels = host.split(".")
    if not all(_LABEL.match(label) for label in labels):
        raise _unsafe("Not a valid host name.")
    if labels[-1].isdigit() or re.fullmatch(r"0x[0-9a-f]*", labels[-1]):
        raise _unsafe("Not a valid host name.")
    return None


def _forbidden_reason(ip: IPAddress) -> str | None:
    """Say why an address is off limits, or None for a public unicast address."""
    embedded = None
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            embedded = ip.ipv4_mapped
        elif ip.sixtofour is not None:
            embedded = ip.sixtofour
        elif ip.teredo is not None:
            embedded = ip.teredo[1]
        elif ip in _NAT64:
            embedded = ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    if embedded is not None and _forbidden_reason(embedded):
        return _forbidden_reason(embedded)
    if ip.is_loopback:
        return "a loopback address"
    if ip.is_link_local:
        return "a link-local address (this includes cloud metadata, 169.254.169.254)"
    if ip.is_multicast:
        return "a multicast address"
    if ip.is_unspecified:
        return "the unspecified address"
    if ip.is_private or ip.is_reserved or not ip.is_global:
        return "a private or reserved address"
    return None


def _check_name(host: str) -> None:
    if host in _INTERNAL_NAMES or host.endswith(_INTERNAL_SUFFIXES):
        raise _unsafe("Must not name an internal host (localhost, metadata, .internal, .local).")
    if "." not in host:
        # A single label is completed with the resolver's search domains: an internal host.
        raise _unsafe("Must be a fully qualified host name.")


def _check_addresses(addresses: list[str]) -> list[str]:
    for address in addresses:
        # ipaddress reads an IPv6 zone (fe80::1%eth0, as getaddrinfo gives it) itself.
        reason = _forbidden_reason(ipaddress.ip_address(address))
        if reason:
            raise _unsafe(f"The host resolves to {reason}; the coordinator does not fetch there.")
    return addresses


def _resolve_with_timeout(policy: UrlPolicy, host: str, port: int) -> list[str]:
    # getaddrinfo has no timeout of its own; a slow resolver must not hold a request forever.
    pool = concurrent.futures.ThreadPoolExecutor(max_workers=1)
    try:
        return pool.submit(policy.resolver, host, port).result(timeout=policy.resolve_timeout)
    finally:
        pool.shutdown(wait=False)


def check_url_shape(url: Any) -> None:
    """Check only the URL's form (used by the schema, which has no config).

    Raises:
        UnsafeURL: not an http(s) URL to ``.../includes/api.php`` without credentials or query.
    """
    _parse(url)


def validate_system_url(url: Any, policy: UrlPolicy) -> str:
    """Check a WHMCS API URL given at registration; return it unchanged when acceptable.

    Shape (http(s), no credentials, no query, path ending ``/includes/api.php``) always;
    https unless ``allow_http``; and unless ``allow_private``: IP literals and known internal
    names refused, and the name's current addresses checked when it resolves (a name that does
    not resolve now is accepted: it is checked again at every fetch).

    Raises:
        UnsafeURL: with ``{"json": {"url": [reason]}}`` as field errors.
    """
    parsed = _parse(url)
    if parsed.scheme != "https" and not policy.allow_http:
        raise _unsafe("Must be an https:// URL (the API secret would travel in clear).")
    if policy.allow_private:
        return url
    if parsed.literal is not None:
        reason = _forbidden_reason(parsed.literal)
        if reason:
            raise _unsafe(f"Points at {reason}; the coordinator does not fetch there.")
        return url
    _check_name(parsed.host)
    try:
        addresses = _resolve_with_timeout(policy, parsed.host, parsed.port)
    except (OSError, UnicodeError, concurrent.futures.TimeoutError):
        return url
    _check_addresses(addresses)
    return url


def check_fetch_url(url: str, config: Mapping[str, Any],
                    resolver: Resolver | None = None) -> list[str]:
    """Check a stored URL right before fetching it; return the addresses it may connect to.

    Unlike registration, a name that does not resolve is refused here: an address that cannot
    be checked is not fetched. Connect only to the returned addresses, or verify the peer
    address of the connection made, so the name cannot be re-pointed in between.

    Raises:
        UnsafeURL: the URL or any address it resolves to is not allowed.
    """
    policy = UrlPolicy.from_config(config, resolver)
    parsed = _parse(url)
    if parsed.scheme != "https" and not policy.allow_http:
        raise _unsafe("Must be an https:// URL (the API secret would travel in clear).")
    if parsed.literal is not None:
        addresses = [str(parsed.literal)]
    else:
        if not policy.allow_private:
            _check_name(parsed.host)
        try:
            addresses = _resolve_with_timeout(policy, parsed.host, parsed.port)
        except (OSError, UnicodeError, concurrent.futures.TimeoutError):
            raise _unsafe(f"The host {parsed.host} does not resolve.") from None
        if not addresses:
            raise _unsafe(f"The host {parsed.host} does not resolve.")
    if policy.allow_private:
        return addresses
    return _check_addresses(addresses)


def is_forbidden_address(address: str) -> bool:
    """Whether the coordinator must not connect to ``address`` (for peer checks after connect)."""
    return _forbidden_reason(ipaddress.ip_address(address)) is not None
