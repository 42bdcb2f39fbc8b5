"""gunicorn settings (docs/operations.md explains each choice). Every value can be
overridden from the environment so operators and benchmarks need no code change."""

import os

bind = os.environ.get(
    "GUNICORN_BIND", f"{os.environ.get('HOST', '127.0.0.1')}:{os.environ.get('PORT', '8000')}"
)
# Streams hold a thread each: a sync worker would cut any stream longer than `timeout`.
worker_class = os.environ.get("GUNICORN_WORKER_CLASS", "gthread")
workers = int(os.environ.get("GUNICORN_WORKERS", "2"))
threads = int(os.environ.get("GUNICORN_THREADS", "32"))
# Equal to threads, or connections queue behind busy threads.
worker_connections = int(os.environ.get("GUNICORN_WORKER_CONNECTIONS", str(threads)))
# gthread's timeout is a heartbeat of the worker process, not a per-request limit.
timeout = int(os.environ.get("GUNICORN_TIMEOUT", "120"))
# Above the longest stream, so a restart lets running streams finish.
graceful_timeout = int(os.environ.get("GUNICORN_GRACEFUL_TIMEOUT", "300"))
# Streams are one request per connection; with worker_connections == threads gthread
# has no room to park idle keep-alive connections, so say so instead of warning.
keepalive = int(os.environ.get("GUNICORN_KEEPALIVE", "0"))
accesslog = os.environ.get("GUNICORN_ACCESSLOG", "-") or None  # "" turns it off
errorlog = "-"
loglevel = os.environ.get("GUNICORN_LOGLEVEL", "info")
# Query strings can hold secrets in other services; ours hold none, but never log them.
access_log_format = '%(h)s "%(m)s %(U)s %(H)s" %(s)s %(b)s %(L)ss'
