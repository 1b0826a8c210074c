"""gunicorn configuration for the coordinator in production.

    gunicorn -c deploy/gunicorn.conf.py

Everything comes from the environment (the systemd unit's EnvironmentFile, compose's
environment), on top of the defaults ``invoice-sync serve`` uses too:

    INVOICE_SYNC_BIND              address to listen on (default 127.0.0.1:8080; nginx in front)
    INVOICE_SYNC_WORKERS           worker processes (default: one per CPU this process may use)
    PROMETHEUS_MULTIPROC_DIR       where workers share metrics; emptied at start
                                   (default /run/invoice-sync/metrics, the unit's RuntimeDirectory)
    INVOICE_SYNC_CONTROL_SOCKET    gunicornc control socket path (default: none)
    INVOICE_SYNC_*                 the coordinator's own settings (coordinator/defaults.py)
"""

import os

from coordinator.ops.gunicorn_defaults import *  # noqa: F403 (the shared settings and hooks)


def _cpus() -> int:
    # The CPUs this process may run on (cgroups/affinity), not all the machine has.
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


wsgi_app = "coordinator.app:create_app()"
bind = os.environ.get("INVOICE_SYNC_BIND", "127.0.0.1:8080").split(",")
# Workers are processes; each also runs `threads` threads (gthread), so one per CPU is enough.
workers = int(os.environ.get("INVOICE_SYNC_WORKERS") or max(2, _cpus()))

# Must be in the environment before any worker imports prometheus_client; the master never
# imports the app (no preload), and on_starting empties the directory before workers fork.
os.environ.setdefault("PROMETHEUS_MULTIPROC_DIR", "/run/invoice-sync/metrics")

_control = os.environ.get("INVOICE_SYNC_CONTROL_SOCKET")
if _control:
    control_socket_disable = False
    control_socket = _control
