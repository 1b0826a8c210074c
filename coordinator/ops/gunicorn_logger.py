"""gunicorn's logger, minus the access line nobody reads.

The coordinator writes its own JSON line per request (``coordinator.ops.logs``), so
``gunicorn_defaults`` sets no ``accesslog`` and sends ``gunicorn.access`` to a null handler.
gunicorn still builds each access line when *any* logging config is given (it is:
``logconfig_dict``): about 5% of an allocation's CPU in a worker, measured with py-spy
(docs/COSTS.md). This logger skips it unless an access log is actually asked for.
"""

from __future__ import annotations

from gunicorn.glogging import Logger as _GunicornLogger


class Logger(_GunicornLogger):
    """gunicorn's logger; access lines only with ``accesslog`` set."""

    def access(self, resp, req, environ, request_time) -> None:
        if self.cfg.accesslog:
            super().access(resp, req, environ, request_time)
