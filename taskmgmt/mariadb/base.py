"""Django's MySQL/MariaDB backend, with two round trips fewer per transaction.

Django opens a transaction with `SET autocommit=0` and ends it with `COMMIT` and
`SET autocommit=1`: four round trips for a status change's lock-update-insert,
three of them only to say where the transaction begins and ends. Here a
transaction starts with `START TRANSACTION` sent in the same query as its first
statement, and ends with `COMMIT` (or `ROLLBACK`) alone: the server is back in
autocommit mode after it, so nothing more is sent. A transaction that ran no
statement sends nothing at all. Measured in docs/performance.md ("the lever table").

What differs from Django's own backend, on purpose and tested
(tests/test_mariadb_backend.py): a statement that commits implicitly (DDL, which
MariaDB never rolls back anyway) ends the transaction, and the statements after
it in the same atomic block commit one by one, as they would in autocommit mode.
Migrations on MariaDB do not wrap DDL in transactions (`can_rollback_ddl` is False).
"""

from django.db.backends.mysql import base

# The transaction's opening, sent in one query with its first statement.
BEGIN = "START TRANSACTION; "


class CursorWrapper(base.CursorWrapper):
    def __init__(self, cursor, db):
        super().__init__(cursor)
        self.db = db

    def execute(self, query, args=None):
        if not self.db.begin_pending:
            return super().execute(query, args)
        # The query's results follow START TRANSACTION's (none): step past it, so
        # rowcount, lastrowid and the rows are the statement's, as callers expect.
        # An error in the statement raises from nextset(), inside the same mapping.
        self.db.begin_pending, self.db.began = False, True
        with_begin = BEGIN + query if isinstance(query, str) else BEGIN.encode() + query
        try:
            self.cursor.execute(with_begin, args)
            self.cursor.nextset()
            return self.cursor.rowcount
        except base.Database.OperationalError as e:
            if e.args[0] in self.codes_for_integrityerror:
                raise base.IntegrityError(*tuple(e.args)) from e
            raise

    def executemany(self, query, args):
        self.db.begin_now(self.cursor)
        return super().executemany(query, args)

    def callproc(self, procname, args=()):
        self.db.begin_now(self.cursor)
        return self.cursor.callproc(procname, args)


class DatabaseWrapper(base.DatabaseWrapper):
    # The connection's transaction: None sent yet but one is open (begin_pending),
    # or START TRANSACTION sent and not yet ended (began).
    begin_pending = False
    began = False

    def get_new_connection(self, conn_params):
        self.begin_pending = self.began = False
        return super().get_new_connection(conn_params)

    def create_cursor(self, name=None):
        return CursorWrapper(self.connection.cursor(), self)

    def begin_now(self, cursor) -> None:
        """Send START TRANSACTION on its own, when the first statement cannot carry it."""
        if self.begin_pending:
            with self.wrap_database_errors:
                cursor.execute(BEGIN.rstrip("; "))
            self.begin_pending, self.began = False, True

    def _set_autocommit(self, autocommit):
        if not autocommit:
            # Django turns autocommit off only to begin a transaction: begin it lazily
            # (once: turning it off again inside one changes nothing, as on the server).
            if not self.began:
                self.begin_pending = True
            return
        if self.began:
            # Leaving a transaction nothing ended: SET autocommit=1 would have committed it.
            self._end("commit")
        if self.begin_pending:
            self.begin_pending = False  # the transaction was ended (or never started)
            return
        super()._set_autocommit(autocommit)

    def _commit(self):
        self._end("commit")

    def _rollback(self):
        self._end("rollback")

    def _end(self, how: str) -> None:
        if self.began:
            # Still open if this raises: Django's rollback after a failed commit is sent.
            (super()._commit if how == "commit" else super()._rollback)()
            self.began = False
        # Still in Django's transaction mode (commit() inside set_autocommit(False)):
        # the next statement begins the next transaction.
        self.begin_pending = not self.get_autocommit()

    def _close(self):
        self.begin_pending = self.began = False
        return super()._close()
