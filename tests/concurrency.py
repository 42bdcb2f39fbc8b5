"""Run callables at the same instant on their own threads (the concurrency tests on
PostgreSQL); each thread closes its own database connection."""

import threading

from django.db import connection


def together(*targets):
    """Run the callables at the same instant on their own threads; return their results."""
    barrier = threading.Barrier(len(targets))
    results = [None] * len(targets)

    def run(index, target):
        barrier.wait()
        try:
            results[index] = target()
        except Exception as exc:
            results[index] = exc
        finally:
            connection.close()

    threads = [threading.Thread(target=run, args=(i, t)) for i, t in enumerate(targets)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    return results


def errors_of(results: list) -> list[Exception]:
    return [result for result in results if isinstance(result, Exception)]
