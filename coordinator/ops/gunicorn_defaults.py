"""gunicorn settings shared by ``invoice-sync serve`` and ``deploy/gunicorn.conf.py``."""

# gthread, answering gunicorn's own errors (unparseable requests) in the API's JSON shape.
worker_class = "coordinator.ops.gunicorn_worker.JsonErrorWorker"
# Threads let one worker overlap requests that wait on Redis's fsync.
threads = 8
timeout = 30
graceful_timeout = 20
keepalive = 5
# The app writes one JSON line per request (with its request id): gunicorn's own would repeat it.
accesslog = None
# ...and gunicorn does not even build its access lines (they cost ~5% of an allocation's CPU).
logger_class = "coordinator.ops.gunicorn_logger.Logger"

# gunicorn 25+ opens a control socket at $XDG_RUNTIME_DIR/gunicorn.ctl or ~/.gunicorn/gunicorn.ctl:
# one path for every instance of a user, so a second coordinator (or a test) takes it over and
# the first to stop deletes the other's. Off by default; `serve` and the systemd unit place one
# per instance.
control_socket_disable = True

# Multiprocess metrics (PROMETHEUS_MULTIPROC_DIR): start with an empty directory, and stop
# summing a dead worker's live gauges.
from coordinator.ops.multiproc import child_exit, on_starting  # noqa: E402, F401

# gunicorn's own lines (worker boot, timeouts) as the same JSON objects the app writes, on
# stderr, through the root logger the app also uses. With a logconfig_dict gunicorn writes
# access lines even without `accesslog`, and those carry the query string: they go nowhere.
logconfig_dict = {
    "version": 1,
    "disable_existing_loggers": False,
    "root": {"level": "INFO", "handlers": ["stderr_json"]},
    "loggers": {
        "gunicorn.error": {"level": "INFO", "handlers": [], "propagate": True},
        "gunicorn.access": {"level": "INFO", "handlers": ["null"], "propagate": False},
    },
    "handlers": {
        "stderr_json": {"()": "coordinator.ops.logs.StderrHandler"},
        "null": {"class": "logging.NullHandler"},
    },
    "formatters": {},
}
