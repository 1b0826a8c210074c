"""Security headers on every response, and trusting a reverse proxy's forwarded headers.

The coordinator serves JSON only, so the policy is the strictest there is: nothing may be
framed, loaded, sniffed, cached or referred. HSTS is sent only on requests that came over
https; behind nginx that is known from ``X-Forwarded-Proto``, which is trusted only when
``TRUSTED_PROXIES`` says how many proxies stand in front (werkzeug's ``ProxyFix``).
"""

from __future__ import annotations

from flask import Flask, request
from werkzeug.middleware.proxy_fix import ProxyFix

SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Content-Security-Policy": "default-src 'none'; frame-ancestors 'none'",
    "Referrer-Policy": "no-referrer",
    # Answers carry numbers, tokens and revenue: no shared or browser cache may keep them.
    "Cache-Control": "no-store",
}


def _add_headers(app: Flask):
    # Built once: on every response only the names a view set itself are looked at.
    # (werkzeug's Headers.setdefault raises and catches a KeyError per missing header.)
    hsts_seconds = int(app.config["HSTS_SECONDS"])
    hsts = f"max-age={hsts_seconds}; includeSubDomains"
    pairs = tuple((name.lower(), name, value) for name, value in SECURITY_HEADERS.items())

    def add(response):
        headers = response.headers
        present = {name.lower() for name, _ in headers}
        headers.extend([(name, value) for lower, name, value in pairs if lower not in present])
        if hsts_seconds and "strict-transport-security" not in present and request.is_secure:
            headers.add("Strict-Transport-Security", hsts)
        return response

    return add


def init_app(app: Flask) -> None:
    """Add the headers to every response; wrap the WSGI app in ProxyFix when proxies are trusted."""
    proxies = int(app.config["TRUSTED_PROXIES"])
    if proxies:
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=proxies, x_proto=proxies, x_host=proxies,
                                x_port=proxies)
    app.after_request(_add_headers(app))
