"""gunicorn settings (docs/operations.md explains each choice and the measurements behind
it). Every value can be overridden from the environment so operators and benchmarks need no
code change."""

import os

bind = os.environ.get(
    "GUNICORN_BIND", f"{os.environ.get('HOST', '127.0.0.1')}:{os.environ.get('PORT', '8000')}"
)
# gevent: a stream is a greenlet, not an OS thread, so a worker holds a thousand streams
# without GIL hand-offs between hundreds of threads. Chosen by `make bench` against gthread
# (docs/operations.md): at 500 and 1000 streams a lower first-byte p99, and more messages
# per second at less CPU each. A sync worker would cut any stream longer than `timeout`.
# No preload_app: the worker monkey-patches before it imports Django, so psycopg and the
# pool pick gevent's wait functions and threading.local (and with it Django's per-request
# database connection) is per greenlet.
worker_class = os.environ.get("GUNICORN_WORKER_CLASS", "gevent")
workers = int(os.environ.get("GUNICORN_WORKERS", "2"))
# gthread only: each open stream holds a thread.
threads = int(os.environ.get("GUNICORN_THREADS", "32"))
if worker_class == "gthread":
    # Equal to threads, or connections queue behind busy threads; with no spare slot for
    # an idle keep-alive connection, keep-alive is off (each message is its own request).
    worker_connections = int(os.environ.get("GUNICORN_WORKER_CONNECTIONS", str(threads)))
    keepalive = int(os.environ.get("GUNICORN_KEEPALIVE", "0"))
else:
    # Concurrent connections (streams) per worker.
    worker_connections = int(os.environ.get("GUNICORN_WORKER_CONNECTIONS", "1000"))
    keepalive = int(os.environ.get("GUNICORN_KEEPALIVE", "5"))
# The worker's heartbeat, not a per-request limit: a healthy long stream is never killed.
timeout = int(os.environ.get("GUNICORN_TIMEOUT", "120"))
# Above the longest stream, so a restart lets running streams finish.
graceful_timeout = int(os.environ.get("GUNICORN_GRACEFUL_TIMEOUT", "300"))
accesslog = os.environ.get("GUNICORN_ACCESSLOG", "-") or None  # "" turns it off
errorlog = "-"
loglevel = os.environ.get("GUNICORN_LOGLEVEL", "info")
# Query strings can hold secrets in other services; ours hold none, but never log them.
access_log_format = '%(h)s "%(m)s %(U)s %(H)s" %(s)s %(b)s %(L)ss'
