"""Django's MySQL/MariaDB backend, with fewer round trips per transaction.

Django opens a transaction with `SET autocommit=0` and ends it with `COMMIT` and
`SET autocommit=1`: a status change (lock, update, history insert) took six
queries, three of them only to say where the transaction begins and ends. Here:

- a transaction's `START TRANSACTION` is sent in the same query as its first
  statement, and nothing follows its `COMMIT` (the server is back in autocommit
  mode after it); a transaction that ran no statement sends nothing;
- a write whose outcome no caller reads can be *deferred* (`defer`): it is sent in
  one query with the transaction's next statement, or with its `COMMIT`. A status
  change's UPDATE (of the row it holds locked) and its history INSERT go with the
  COMMIT: two queries in all. An error in a deferred write is raised where it is
  sent, still inside the transaction, which then rolls back as it would have.

Measured in docs/performance.md ("the lever table"); tests/test_mariadb_backend.py
checks what the server did. One difference from Django's backend, on purpose: a
statement that commits implicitly (DDL, which MariaDB never rolls back anyway) ends
the transaction, and the statements after it in the same atomic block commit one by
one, as in autocommit mode. Migrations on MariaDB do not wrap DDL in transactions.
"""

from django.db.backends.mysql import base
from django.db.backends.utils import debug_transaction

BEGIN = "START TRANSACTION"


class CursorWrapper(base.CursorWrapper):
    def __init__(self, cursor, db):
        super().__init__(cursor)
        self.db = db

    def execute(self, query, args=None):
        before = self.db.take_prefix()
        if not before:
            return super().execute(query, args)
        # The statements before the query answer first (none has rows): step past each,
        # so rowcount, lastrowid and the rows are the query's, as callers expect.
        prefix = "; ".join(before) + "; "
        sent = prefix.replace("%", "%%") if args is not None else prefix  # args follow
        if isinstance(query, bytes):
            sent = sent.encode()
        with self.db.mapped_errors():
            self.cursor.execute(sent + query, args)
            # What Django logs as this query's SQL is the query's alone, not the prefix's.
            self.cursor._executed = self.cursor._executed[len(prefix.encode()) :]
            for _ in before:
                self.cursor.nextset()
        return self.cursor.rowcount

    def executemany(self, query, args):
        self.db.send_prefix(self.cursor)
        return super().executemany(query, args)

    def callproc(self, procname, args=()):
        self.db.send_prefix(self.cursor)
        return self.cursor.callproc(procname, args)


class DatabaseWrapper(base.DatabaseWrapper):
    # The connection's transaction: one is open but nothing is sent yet (begin_pending),
    # or START TRANSACTION was sent and it has not ended (began).
    begin_pending = False
    began = False
    # Counts the transactions ended on this connection: a row locked while it reads N
    # is held while it still reads N (`transaction_serial`).
    transaction_serial = 0

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.deferred: list[str] = []
        self._mogrifier = None

    def get_new_connection(self, conn_params):
        self._forget_transaction()
        self._mogrifier = None
        return super().get_new_connection(conn_params)

    def create_cursor(self, name=None):
        return CursorWrapper(self.connection.cursor(), self)

    def defer(self, sql: str, params) -> bool:
        """Send this write with the transaction's next statement or its COMMIT, not now:
        for a write whose rowcount and insert id nobody reads. False (nothing done)
        outside a transaction, where the caller sends it itself."""
        if self.get_autocommit() or not self.in_atomic_block:
            return False
        self.ensure_connection()
        if self._mogrifier is None:
            self._mogrifier = self.connection.cursor()
        statement = self._mogrifier.mogrify(sql, params)
        self.deferred.append(statement)
        if self.queries_logged:
            # Counted where it is asked for, as if sent: query counts and logs stay Django's.
            self.queries_log.append({"sql": statement, "time": "0.000"})
        return True

    def lock_token(self) -> int | None:
        """What identifies the transaction open now (None outside one): a row locked
        under one token is held while `lock_token()` still returns it."""
        return None if self.get_autocommit() else self.transaction_serial

    def take_prefix(self) -> list[str]:
        """What must go before the next statement: START TRANSACTION, deferred writes."""
        before = []
        if self.begin_pending:
            before.append(BEGIN)
            self.begin_pending, self.began = False, True
        if self.deferred:
            before += self.deferred
            self.deferred = []
        return before

    def send_prefix(self, cursor) -> None:
        """Send `take_prefix()` on its own, when the next statement cannot carry it."""
        before = self.take_prefix()
        if before:
            with self.mapped_errors():
                cursor.execute("; ".join(before))
                for _ in before[1:]:
                    cursor.nextset()

    def mapped_errors(self):
        return _MappedErrors()

    def _set_autocommit(self, autocommit):
        if not autocommit:
            # Django turns autocommit off only to begin a transaction: begin it lazily
            # (once: turning it off again inside one changes nothing, as on the server).
            if not self.began:
                self.begin_pending = True
            return
        if self.began or self.deferred:
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
        if how == "commit" and self.deferred:
            # The deferred writes and the COMMIT in one query.
            with (
                debug_transaction(self, "COMMIT"),
                self.wrap_database_errors,
                self.connection.cursor() as cursor,
            ):
                before = self.take_prefix()
                with self.mapped_errors():
                    cursor.execute("; ".join([*before, "COMMIT"]))
                    for _ in before:
                        cursor.nextset()
            self.began = False
        elif self.began:
            # Still open if this raises: Django's rollback after a failed commit is sent.
            (super()._commit if how == "commit" else super()._rollback)()
            self.began = False
        self.deferred = []
        self.transaction_serial += 1
        # Still in Django's transaction mode (commit() inside set_autocommit(False)):
        # the next statement begins the next transaction.
        self.begin_pending = not self.get_autocommit()

    def _close(self):
        self._forget_transaction()
        return super()._close()

    def _forget_transaction(self):
        self.begin_pending = self.began = False
        self.deferred = []
        self.transaction_serial += 1


class _MappedErrors:
    """The errors Django's CursorWrapper maps, mapped alike (CHECK -> IntegrityError)."""

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        codes = base.CursorWrapper.codes_for_integrityerror
        if isinstance(exc, base.Database.OperationalError) and exc.args and exc.args[0] in codes:
            raise base.IntegrityError(*tuple(exc.args)) from exc
        return False
