"""The runs of this worker process, and the one housekeeping loop that serves them all.

The housekeeper (a greenlet under gevent, a thread under gthread) does every periodic write
and read of the shared stores for all runs of the worker at once, so their cost does not
grow with the number of open streams:

- every REPLY_LOG_FLUSH_MS: the pending events of all runs, one batch (eventlog.LogWriter);
- every REPLY_STOP_POLL_MS: stops requested on other workers (one MGET or one SELECT);
- every REPLY_CHECKPOINT_S: the text of every run whose text changed and the heartbeat of
  all runs, in one UPDATE (the sweep ends runs whose heartbeat is older than REPLY_STALE_S);
- every minute, with the database log: the events of replies past REPLY_LOG_TTL_S.

Graceful shutdown: `wait_for_runs()` (called by gunicorn's worker_exit hook) waits for the
runs to end, bounded by the time gunicorn allows.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from typing import TYPE_CHECKING

from django.conf import settings

if TYPE_CHECKING:
    from chat.reply.run import Run

logger = logging.getLogger(__name__)

EXPIRE_EVERY_S = 60.0

_lock = threading.Lock()
_runs: dict[uuid.UUID, Run] = {}
_idle = threading.Event()
_idle.set()
_housekeeper: threading.Thread | None = None


def add(run: Run) -> None:
    global _housekeeper
    with _lock:
        _runs[run.reply_id] = run
        _idle.clear()
        if _housekeeper is None or not _housekeeper.is_alive():
            _housekeeper = threading.Thread(
                target=_housekeep, name="reply-housekeeper", daemon=True
            )
            _housekeeper.start()


def remove(run: Run) -> None:
    with _lock:
        _runs.pop(run.reply_id, None)
        if not _runs:
            _idle.set()


def get(reply_id) -> Run | None:
    with _lock:
        return _runs.get(reply_id)


def active() -> list[Run]:
    with _lock:
        return list(_runs.values())


def wait_for_runs(timeout: float) -> list[Run]:
    """Wait up to `timeout` seconds for every run of this process to end; the runs still
    going then are stopped (their text so far saved and billed) with a few seconds more."""
    if not _idle.wait(max(0.0, timeout - STOP_GRACE_S)):
        remaining = active()
        logger.warning(
            "Shutting down with %d reply run(s) still going: stopping them", len(remaining)
        )
        for run in remaining:
            run.request_stop("shutdown")
        _idle.wait(STOP_GRACE_S)
    return active()


STOP_GRACE_S = 5.0


TICK_S = 0.05


def _housekeep() -> None:
    from chat.reply.eventlog import log_writer

    due = {"flush": 0.0, "stops": 0.0, "checkpoint": 0.0, "expire": 0.0}
    while True:
        time.sleep(TICK_S)
        now = time.monotonic()
        if now >= due["flush"]:
            due["flush"] = now + settings.REPLY_LOG_FLUSH_MS / 1000
            _guarded("write the event logs", log_writer.flush)
        runs = active()
        if runs and now >= due["stops"]:
            due["stops"] = now + settings.REPLY_STOP_POLL_MS / 1000
            _guarded("look for stops", _apply_stops, runs)
        if runs and now >= due["checkpoint"]:
            due["checkpoint"] = now + settings.REPLY_CHECKPOINT_S
            # A run younger than one interval still has the heartbeat of its set-up.
            old = [run for run in runs if now - run.started_at >= settings.REPLY_CHECKPOINT_S]
            if old:
                _guarded("checkpoint the runs", checkpoint, old)
        if runs and now >= due["expire"]:
            due["expire"] = now + EXPIRE_EVERY_S
            _guarded("expire event logs", _expire_logs)


def _guarded(what: str, action, *args) -> None:
    try:
        action(*args)
    except Exception:
        logger.exception("Reply housekeeping could not %s", what)


def _apply_stops(runs: list[Run]) -> None:
    from chat.reply.eventlog import shared_log

    waiting = [run.reply_id for run in runs if not run.stop_requested]
    for reply_id in shared_log().stops_requested(waiting):
        run = get(reply_id)
        if run is not None:
            run.request_stop("stopped")


CHECKPOINT_BATCH = 100


def checkpoint(runs: list[Run]) -> None:
    """Save the text of the runs whose text changed, and every run's heartbeat: one UPDATE
    per CHECKPOINT_BATCH runs (building one for 1000 runs holds the worker ~0.25 s of CPU;
    between batches the other greenlets run)."""
    for start in range(0, len(runs), CHECKPOINT_BATCH):
        if start:
            time.sleep(0)
        _checkpoint_batch(runs[start : start + CHECKPOINT_BATCH])


def _checkpoint_batch(runs: list[Run]) -> None:
    """Only rows still `streaming` are touched: a checkpoint never overwrites an ended reply."""
    from django.db.models import Case, F, JSONField, TextField, Value, When
    from django.utils import timezone

    from chat.models import Message
    from chat.reply.eventlog import release_db_connection

    snapshots = [(run, run.snapshot()) for run in runs]
    changed = [(run, snap) for run, snap in snapshots if len(snap[0]) != run.checkpointed_chars]
    updates: dict = {"heartbeat_at": timezone.now()}
    if changed:
        updates["content"] = Case(
            *[When(pk=run.reply_id, then=Value(text)) for run, (text, _) in changed],
            default=F("content"),
            output_field=TextField(),
        )
        updates["stream_offsets"] = Case(
            *[
                When(pk=run.reply_id, then=Value(offsets, output_field=JSONField()))
                for run, (_, offsets) in changed
            ],
            default=F("stream_offsets"),
            output_field=JSONField(),
        )
    try:
        Message.objects.filter(
            pk__in=[run.reply_id for run in runs], status=Message.Status.STREAMING
        ).update(**updates)
    finally:
        release_db_connection()
    for run, (text, _) in changed:
        run.checkpointed_chars = len(text)


def _expire_logs() -> None:
    from chat.reply.eventlog import shared_log

    shared_log().expire()
