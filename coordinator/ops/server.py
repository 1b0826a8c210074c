"""Run the app factory under gunicorn from inside ``invoice-sync serve``."""

from __future__ import annotations

from typing import Any

from gunicorn.app.base import BaseApplication


class _Gunicorn(BaseApplication):
    """Gunicorn with options from a dict and the app built in each worker after fork."""

    def __init__(self, options: dict[str, Any]) -> None:
        self.options = options
        super().__init__()

    def load_config(self) -> None:
        for key, value in self.options.items():
            self.cfg.set(key, value)

    def load(self):
        from coordinator.app import create_app

        return create_app()


def run_gunicorn(**options: Any) -> None:
    """Serve until SIGINT/SIGTERM with the production defaults plus ``options``."""
    from coordinator.ops import gunicorn_defaults

    settings = {k: v for k, v in vars(gunicorn_defaults).items() if not k.startswith("_")}
    settings.update(options)
    _Gunicorn(settings).run()
