"""One message, from the request to the settled ledger entry; each file is one step.

setup.py     the pre-stream transaction: access, one reply at a time, rate limit,
             provider, history, reservation, the user's message and the reply's row
             (status `streaming`: its id is known before the first byte)
run.py       the run: upstream -> event log -> settle, on its own greenlet/thread,
             to its end whether or not anyone listens
eventlog.py  the event log: the run's LocalFeed in its worker; Redis Streams or the
             database for every other worker and node
relay.py     event log -> SSE for one client (the message's response, or a resume
             after Last-Event-ID / ?after=N)
stop.py      POST .../stop: decided atomically in the database
settle.py    save the reply and settle its tokens, once, whoever ends it
registry.py  this worker's runs; its housekeeper (batched log writes, stop polling,
             checkpoints); the graceful-shutdown wait
sweep.py     ends the runs whose worker died
tokens.py    what is billed (a `Usage`); the estimate and the output count are billing's
events.py    the event payloads; errors.py: error -> event
"""
