"""A transport seam for tests, like httpx's MockTransport, on top of requests' adapters."""

from __future__ import annotations

import http
import io
import json as jsonlib
from collections.abc import Callable, Mapping
from typing import Any

import requests
import urllib3
from requests.adapters import BaseAdapter, HTTPAdapter

Handler = Callable[[requests.PreparedRequest], requests.Response]


def mock_response(
    status_code: int,
    json: Any = None,
    *,
    headers: Mapping[str, str] | None = None,
    content: bytes | None = None,
) -> requests.Response:
    """Build a ``requests.Response`` for a :class:`MockTransport` handler to return.

    Args:
        status_code: The HTTP status.
        json: A value to send as ``application/json`` (ignored when ``content`` is given).
        headers: Extra response headers.
        content: A raw body (e.g. an HTML error page from a proxy).
    """
    hdrs = dict(headers or {})
    if content is None:
        content = b"" if json is None else jsonlib.dumps(json).encode()
        if json is not None:
            hdrs.setdefault("Content-Type", "application/json")
    try:
        reason = http.HTTPStatus(status_code).phrase
    except ValueError:
        reason = ""
    raw = urllib3.HTTPResponse(
        body=io.BytesIO(content),
        headers=hdrs,
        status=status_code,
        reason=reason,
        preload_content=False,
    )
    # build_response is requests' public way to turn a urllib3 response into a Response;
    # the request is attached by MockTransport.send.
    return HTTPAdapter().build_response(requests.PreparedRequest(), raw)


class MockTransport(BaseAdapter):
    """Answer requests with a function instead of the network.

    ::

        def handler(request):
            if request.path_url == "/livez":
                return mock_response(200, {"status": "ok"})
            raise requests.ConnectionError("coordinator down")

        client = Client(url="https://numbers.example", token="t", transport=MockTransport(handler))

    The handler gets the ``requests.PreparedRequest`` (``.method``, ``.url``, ``.headers``,
    ``.body``) and returns a response built with :func:`mock_response`, or raises a
    ``requests`` exception (``ConnectionError``, ``Timeout``) to play a broken network.
    """

    def __init__(self, handler: Handler) -> None:
        super().__init__()
        self.handler = handler

    def send(  # type: ignore[override]
        self,
        request: requests.PreparedRequest,
        stream: bool = False,
        timeout: Any = None,
        verify: Any = True,
        cert: Any = None,
        proxies: Any = None,
    ) -> requests.Response:
        response = self.handler(request)
        response.request = request
        response.url = request.url or ""
        response.connection = self
        return response

    def close(self) -> None:
        """Nothing to release."""
