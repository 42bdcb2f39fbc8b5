"""Counting the statements of every thread (a reply's run and the worker's housekeeper work on
threads of their own)."""

import threading

from django.db import connection
from django.db.backends.signals import connection_created


class StatementsOfEveryThread:
    """Records the statements of every database connection opened while it is active, with
    the name of the thread that ran each (the request's, the run's, the housekeeper's)."""

    def __init__(self):
        self.statements: list[tuple[str, str]] = []

    def __call__(self, execute, sql, params, many, context):
        self.statements.append((threading.current_thread().name, sql))
        return execute(sql, params, many, context)

    def _install(self, *, connection, **kwargs):
        if self not in connection.execute_wrappers:
            connection.execute_wrappers.append(self)

    def __enter__(self):
        connection_created.connect(self._install)
        connection.ensure_connection()
        self._install(connection=connection)
        return self

    def __exit__(self, *exc):
        connection_created.disconnect(self._install)
        connection.execute_wrappers.remove(self)

    def of(self, thread_name: str) -> list[str]:
        """The kinds of the data statements one thread ran (no BEGIN/COMMIT/SAVEPOINT)."""
        kinds = ("SELECT", "INSERT", "UPDATE", "DELETE", "WITH")
        found = [sql.split()[0].upper() for name, sql in self.statements if name == thread_name]
        return [kind for kind in found if kind in kinds]

    def matching(self, start: str) -> list[str]:
        """The statements of any thread that start with `start`."""
        return [sql for _, sql in self.statements if sql.startswith(start)]
