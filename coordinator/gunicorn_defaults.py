"""gunicorn settings shared by ``invoice-sync serve`` and ``deploy/gunicorn.conf.py``."""

worker_class = "gthread"
# Threads let one worker overlap requests that wait on Redis's fsync.
threads = 8
timeout = 30
graceful_timeout = 20
keepalive = 5
accesslog = None
