"""gunicorn settings (docs/operations.md explains each choice and the measurements behind
it). Every value can be overridden from the environment so operators and benchmarks need no
code change."""

import os
import signal
import sys
import time

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
# Above the longest stream, so a restart lets running streams finish. A reply's run outlives
# its request when the client has gone: worker_exit below waits for the runs too.
graceful_timeout = int(os.environ.get("GUNICORN_GRACEFUL_TIMEOUT", "300"))
accesslog = os.environ.get("GUNICORN_ACCESSLOG", "-") or None  # "" turns it off
errorlog = "-"
loglevel = os.environ.get("GUNICORN_LOGLEVEL", "info")
# Query strings can hold secrets in other services; ours hold none, but never log them.
# The worker's pid (<pid>) says which worker served a request (a run lives in one).
access_log_format = '%(h)s "%(m)s %(U)s %(H)s" %(s)s %(b)s %(L)ss %(p)s'

# --- graceful shutdown of reply runs -------------------------------------------------------
# gunicorn waits up to graceful_timeout for the requests in flight, not for a reply's run
# whose client has gone (a greenlet or thread of its own). So the worker remembers when it
# was told to stop, and on its way out waits for its runs for what is left of
# graceful_timeout (runs still going a few seconds before the end are stopped, their text
# saved and billed). docs/operations.md.
_stop_asked_at: list[float] = []


def post_worker_init(worker):
    from gevent import monkey

    if monkey.is_module_patched("select"):  # the gevent worker
        from config.readable import use_in_httpcore

        use_in_httpcore()  # the SDK's pool probes idle connections without gevent's hub

    previous = signal.getsignal(signal.SIGTERM)

    def remember_and_exit(signum, frame):
        _stop_asked_at.append(time.monotonic())
        if callable(previous):
            previous(signum, frame)

    signal.signal(signal.SIGTERM, remember_and_exit)
    signal.siginterrupt(signal.SIGTERM, False)  # as gunicorn has it: no EINTR mid-request


def worker_exit(server, worker):
    registry = sys.modules.get("chat.reply.registry")
    # Not after a quick shutdown (SIGINT/SIGQUIT), nor where no run ever started (the master).
    if registry is None or not _stop_asked_at:
        return
    left = graceful_timeout - (time.monotonic() - _stop_asked_at[0]) - 1
    remaining = registry.wait_for_runs(timeout=left)
    if remaining:
        worker.log.warning("Exiting with %d reply run(s) unfinished", len(remaining))
