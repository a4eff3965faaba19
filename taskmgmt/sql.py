"""The fence: every use of a private API of Django or a library, and every SQL
statement written by hand, lives here with its case in tests/test_sql.py
(docs/architecture.md, Fast paths); everywhere else reads like plain Django.

Reads that keep the database driver's own values: Django's per-value converters
(a UUID object per id, an aware datetime per date) were a large part of a list
page's CPU. Plain SELECTs for hot rows: building and compiling an ORM query for
one row by primary key cost several times running it (docs/performance.md).
`driver_rows` runs an ORM query without the converters; `select_one`, `get_one`,
`count_rows`, `page_rows`, `update_rows`, `update_saved`, `update_then_select`,
`update_to_later` and `insert_rows` send the SQL the ORM would, built once per process, with
parameters adapted by the model's own fields; `with_ids` and `insert_select` serve
the sweep's batches; `rate_window` and `ratelimit_key` are django-ratelimit's
counting, for DRF throttles.
"""

from datetime import datetime
from functools import cache
from typing import NamedTuple
from uuid import UUID

from django.core.exceptions import EmptyResultSet
from django.db import DEFAULT_DB_ALIAS, connection, connections, transaction
from django.db.models import BooleanField, CharField, DateTimeField, TextField, UUIDField
from django.db.models.query import BaseIterable
from django.db.models.sql.constants import MULTI
from django.db.models.utils import create_namedtuple_class
from django_ratelimit import ALL
from django_ratelimit.core import (
    _SIMPLE_KEYS,
    EXPIRATION_FUDGE,
    _get_window,
    _make_cache_key,
    _split_rate,
)


class _DriverRows(BaseIterable):
    """Named rows of a `values_list()`, holding the values the driver returned."""

    def __iter__(self):
        queryset = self.queryset
        row = create_namedtuple_class(*queryset._fields)
        compiler = queryset.query.get_compiler(queryset.db)
        index = getattr(queryset.query, "force_index", None)
        if index and connection.vendor == "mysql":
            yield from map(row._make, _rows_through(compiler, index))
            return
        chunks = compiler.execute_sql(
            MULTI, chunked_fetch=self.chunked_fetch, chunk_size=self.chunk_size
        )
        for chunk in chunks:
            yield from map(row._make, chunk)


def _table(model, index: str | None) -> str:
    """The model's table for a FROM clause: read through `index`, where one is named,
    on MariaDB/MySQL (FORCE INDEX; SQLite's planner needs no hint)."""
    quote = connection.ops.quote_name
    table = quote(model._meta.db_table)
    if index and connection.vendor == "mysql":
        return f"{table} FORCE INDEX ({quote(index)})"
    return table


def _rows_through(compiler, index: str) -> list:
    """The compiled query's rows, read through `index` (MariaDB/MySQL's FORCE INDEX)."""
    try:
        sql, params = compiler.as_sql()
    except EmptyResultSet:
        return []
    model = compiler.query.model
    table = connection.ops.quote_name(model._meta.db_table)
    sql = sql.replace(f"FROM {table}", f"FROM {_table(model, index)}", 1)
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        return cursor.fetchall()


def driver_rows(queryset, *fields, index: str | None = None):
    """`queryset.values_list(*fields, named=True)` with the driver's values, unconverted.

    Still a queryset (filter, order and slice it before it runs); ids come
    as text (hex on SQLite), datetimes as naive UTC (`USE_TZ`). `index`: the
    index MariaDB/MySQL must read, for a query its planner misjudges.
    """
    rows = queryset.values_list(*fields)
    rows._iterable_class = _DriverRows
    # On the query, which every later filter, order and slice copies.
    rows.query.force_index = index
    return rows


# The lookups `where` arguments may end in, as the ORM spells them.
_OPERATORS = {"gt": ">", "lt": "<"}


def _condition(model, lookup: str) -> str:
    """`lookup` (a field name, or one with a `__gt`/`__lt` suffix) as SQL with one %s."""
    name, _, operator = lookup.partition("__")
    column = connection.ops.quote_name(model._meta.get_field(name).column)
    return f"{column} {_OPERATORS[operator] if operator else '='} %s"


def _params(model, where: dict, conn) -> list:
    """`where`'s values as `get_db_prep_value` adapts them for `conn` (the connection
    itself, not the `connection` proxy, which looked itself up per use)."""
    preparers = _preparers(model, tuple(where))
    return [prepare(value, conn) for prepare, value in zip(preparers, where.values(), strict=True)]


@cache
def _preparers(model, lookups: tuple[str, ...]) -> tuple:
    return tuple(_preparer(model._meta.get_field(lookup.partition("__")[0])) for lookup in lookups)


def _preparer(field):
    """`field.get_db_prep_value`, with the work skipped for the values the hot statements
    send (ids, text, flags, aware UTC datetimes) where Django's answer is known: the
    per-value field and backend calls were a measurable share of a heartbeat (see
    docs/performance.md); tests/test_sql.py compares every shortcut with Django's answer."""
    while field.remote_field is not None and field.is_relation:  # a foreign key: its target's
        field = field.target_field
    generic = field.get_db_prep_value
    kind = type(field)
    if kind is UUIDField:

        def prepare(value, conn):
            if type(value) is UUID and not conn.features.has_native_uuid_field:
                return value.hex
            return generic(value, conn)

    elif kind in (CharField, TextField, BooleanField):
        plain = bool if kind is BooleanField else str

        def prepare(value, conn):
            return value if type(value) is plain else generic(value, conn)

    elif kind is DateTimeField:

        def prepare(value, conn):
            # Aware in the connection's own zone (UTC): make_naive is replace(tzinfo=None).
            if (
                type(value) is datetime
                and value.tzinfo is conn.timezone
                and conn.vendor
                in (
                    "mysql",
                    "sqlite",
                )
            ):
                return str(value.replace(tzinfo=None))
            return generic(value, conn)

    else:
        prepare = generic
    return prepare


@cache
def _select_sql(
    model,
    columns: tuple[str, ...],
    where: tuple[str, ...],
    lock: str,
    order_by: tuple[str, ...],
    index: str | None,
    unless: tuple = (),
) -> str:
    quote = connection.ops.quote_name
    meta = model._meta
    selected = ", ".join(quote(meta.get_field(column).column) for column in columns)
    matched = " AND ".join(_condition(model, lookup) for lookup in where)
    for other, other_where in unless:
        conditions = " AND ".join(_condition(other, lookup) for lookup in other_where)
        table = quote(other._meta.db_table)
        matched += f" AND NOT EXISTS (SELECT 1 FROM {table} WHERE {conditions})"
    sql = f"SELECT {selected} FROM {_table(model, index)} WHERE {matched}"
    if order_by:
        ordered = ", ".join(
            quote(meta.get_field(column.lstrip("-")).column)
            + (" DESC" if column.startswith("-") else "")
            for column in order_by
        )
        sql = f"{sql} ORDER BY {ordered} LIMIT 1"
    return f"{sql} {lock}" if lock else sql


def select_one(
    model,
    columns: tuple[str, ...],
    *,
    for_update=False,
    skip_locked=False,
    order_by: tuple[str, ...] = (),
    index: str | None = None,
    unless: tuple = (),
    **where,
) -> tuple | None:
    """`columns` (field names or attnames) of the row matching `where`, or None; with
    `order_by` (fields, "-" for descending), the first such row, as `.order_by(...).first()`.

    Values are the database driver's own (ids as text, datetimes naive UTC).
    `for_update` locks the row until the transaction ends, as
    `select_for_update(skip_locked=...)` does (SQLite: its transactions already run
    one at a time). `index`: the index MariaDB/MySQL must read (as `driver_rows`).
    `unless`: `(other model, where)` pairs, each a NOT EXISTS on that model's rows
    matching `where`, as `.exclude(Exists(...))` would add.
    """
    conn = connections[DEFAULT_DB_ALIAS]
    lock = ""
    if for_update and conn.features.has_select_for_update:
        lock = conn.ops.for_update_sql(skip_locked=skip_locked)
    shape = tuple((other, tuple(other_where)) for other, other_where in unless) if unless else ()
    sql = _select_sql(model, columns, tuple(where), lock, order_by, index, shape)
    params = _params(model, where, conn)
    for other, other_where in unless:
        params += _params(other, other_where, conn)
    with conn.cursor() as cursor:
        cursor.execute(sql, params)
        return cursor.fetchone()


class Read(NamedTuple):
    """A SELECT and its parameters, to be sent with others (`read_together`)."""

    sql: str
    params: list


def read_together(*reads: Read) -> list[list[tuple]]:
    """Each read's rows. On MariaDB all go in one query, one round trip (mysqlclient
    allows several statements per query); elsewhere one after the other."""
    conn = connections[DEFAULT_DB_ALIAS]
    with conn.cursor() as cursor:
        if conn.vendor != "mysql":
            results = []
            for read in reads:
                cursor.execute(read.sql, read.params)
                results.append(cursor.fetchall())
            return results
        cursor.execute("; ".join(read.sql for read in reads), [p for r in reads for p in r.params])
        results = [cursor.fetchall()]
        for _ in reads[1:]:
            cursor.nextset()
            results.append(cursor.fetchall())
        return results


def select_one_read(model, columns: tuple[str, ...], **where) -> Read:
    """`select_one(model, columns, **where)`'s statement (no lock, no order), to send with
    others (`read_together`): its rows hold the row, or none."""
    sql = _select_sql(model, columns, tuple(where), "", (), None)
    return Read(sql, _params(model, where, connections[DEFAULT_DB_ALIAS]))


@cache
def _page_sql(
    model, columns: tuple[str, ...], where: tuple[str, ...], after: bool, limited: bool, index
) -> str:
    quote = connection.ops.quote_name
    meta = model._meta
    selected = ", ".join(quote(meta.get_field(column).column) for column in columns)
    conditions = [_condition(model, lookup) for lookup in where]
    created, pk = quote(meta.get_field("created_at").column), quote(meta.pk.column)
    if after:
        conditions.append(f"({created} < %s OR ({created} = %s AND {pk} < %s))")
    sql = f"SELECT {selected} FROM {_table(model, index)}"
    if conditions:
        sql = f"{sql} WHERE {' AND '.join(conditions)}"
    sql = f"{sql} ORDER BY {created} DESC, {pk} DESC"
    # The limit is a parameter, not part of the text: one cached statement per shape,
    # whatever limit a client asks for.
    return f"{sql} LIMIT %s" if limited else sql


def page_rows(
    model,
    columns: tuple[str, ...],
    *,
    after: tuple | None = None,
    limit: int | None = None,
    index: str | None = None,
    **where,
) -> list[tuple]:
    """A newest-first keyset page: `columns` of the rows matching `where`, ordered by
    (created_at, id) descending, those before `after` (a (created_at, id) position)
    only, at most `limit` of them, as driver values (as `driver_rows`).

    The statement of `queryset.filter(Q(created_at__lt=…) | Q(created_at=…, id__lt=…))
    .order_by("-created_at", "-id")[:limit]`, built once per shape: the ORM built and
    compiled it for every list page, a fifth of the page's CPU (docs/performance.md).
    """
    conn = connections[DEFAULT_DB_ALIAS]
    sql = _page_sql(model, columns, tuple(where), after is not None, limit is not None, index)
    params = _params(model, where, conn)
    if after is not None:
        created_at, pk = after
        prepare_time, prepare_pk = _preparers(model, ("created_at", model._meta.pk.name))
        params += [prepare_time(created_at, conn), prepare_time(created_at, conn)]
        params.append(prepare_pk(pk, conn))
    if limit is not None:
        params.append(int(limit))
    with conn.cursor() as cursor:
        cursor.execute(sql, params)
        return cursor.fetchall()


@cache
def _count_sql(model, where: tuple[str, ...], index: str | None) -> str:
    matched = " AND ".join(_condition(model, lookup) for lookup in where)
    return f"SELECT COUNT(*) FROM {_table(model, index)} WHERE {matched}"


def count_rows(model, *, index: str | None = None, **where) -> int:
    """How many rows match `where` (`field=value`, `field__gt=value`, `field__lt=value`),
    read through `index` on MariaDB/MySQL where one is named."""
    conn = connections[DEFAULT_DB_ALIAS]
    with conn.cursor() as cursor:
        cursor.execute(_count_sql(model, tuple(where), index), _params(model, where, conn))
        return cursor.fetchone()[0]


# One part of `tagged_rows`: (model, a field name or "COUNT(*)", where, index or None).
Part = tuple


@cache
def _tagged_sql(parts: tuple) -> str:
    quote = connection.ops.quote_name
    selects = []
    for tag, (model, column, where, index) in enumerate(parts):
        value = column if column == "COUNT(*)" else quote(model._meta.get_field(column).column)
        matched = " AND ".join(_condition(model, lookup) for lookup in where)
        # One column for every part, as text: MariaDB refuses a UNION of a count and a UUID.
        selects.append(
            f"SELECT {tag}, CAST({value} AS CHAR) FROM {_table(model, index)} WHERE {matched}"
        )
    return " UNION ALL ".join(selects)


def tagged_rows(*parts: Part) -> list[list]:
    """Several small reads in one statement (a UNION ALL): for each part
    `(model, column, where, index)`, the values of `column` (a field name, or
    "COUNT(*)") in the rows matching `where`, as text (None for NULL). The heartbeat
    answers its pending count, its cancel requests and its node's cordon with one
    round trip on the hottest request."""
    (rows,) = read_together(tagged_read(*parts))
    return tagged_values(len(parts), rows)


def tagged_read(*parts: Part) -> Read:
    """`tagged_rows`' statement, to send with others; `tagged_values` reads its rows."""
    sql = _tagged_sql(
        tuple((model, column, tuple(where), index) for model, column, where, index in parts)
    )
    conn = connections[DEFAULT_DB_ALIAS]
    params = [param for model, _, where, _ in parts for param in _params(model, where, conn)]
    return Read(sql, params)


def tagged_values(parts: int, rows) -> list[list]:
    values = [[] for _ in range(parts)]
    for tag, value in rows:
        values[int(tag)].append(value)
    return values


@cache
def _update_sql(model, columns: tuple[str, ...], where: tuple[str, ...]) -> str:
    quote = connection.ops.quote_name
    meta = model._meta
    assigned = ", ".join(f"{quote(meta.get_field(column).column)} = %s" for column in columns)
    matched = " AND ".join(_condition(model, lookup) for lookup in where)
    # MariaDB's single-table UPDATE weighs every index a condition could use before it
    # reads a row, even when the primary key pins that row: with the guard columns of
    # a progress report (node, status, active) that was most of the statement's cost.
    index = "PRIMARY" if meta.pk.name in where else None
    return f"UPDATE {_table(model, index)} SET {assigned} WHERE {matched}"


def update_rows(model, values: dict, **where) -> int:
    """`UPDATE … SET values WHERE where`, as `QuerySet.update` would send it; the row count.

    No signals and no `auto_now`: for writes that want neither (a heartbeat's stamp).
    """
    conn = connections[DEFAULT_DB_ALIAS]
    with conn.cursor() as cursor:
        cursor.execute(*_update_statement(model, values, where, conn))
        return cursor.rowcount


def _update_statement(model, values: dict, where: dict, conn) -> tuple[str, list]:
    """`update_rows`'s SQL and its parameters, adapted as the model's fields adapt them."""
    meta = model._meta
    assigned = [
        meta.get_field(name).get_db_prep_save(value, conn) for name, value in values.items()
    ]
    return _update_sql(model, tuple(values), tuple(where)), assigned + _params(model, where, conn)


def update_saved(model, using: str, pk, values: list, *, locked=False) -> int | None:
    """The UPDATE `Model._do_update` sends for a save of an existing row, with the SQL
    built once per set of columns; the rows matched, or None where Django must build it
    (an expression among the values, a field with its own placeholder, another database).

    `values` is the save's `(field, model, value)` triples, each value its field's
    `pre_save`; each is adapted by `get_db_prep_save`, as Django's update compiler does.
    `locked`: the row is held locked by the open transaction, so it exists and the
    UPDATE matches it: it may go with the transaction's next statement (`_deferred`).
    """
    if using != DEFAULT_DB_ALIAS:
        return None
    conn = connections[using]
    params = []
    for field, _, value in values:
        if (
            hasattr(value, "resolve_expression")
            or hasattr(value, "prepare_database_save")
            or hasattr(field, "get_placeholder")
        ):
            return None
        params.append(field.get_db_prep_save(value, conn))
    pk_name = model._meta.pk.name
    columns = tuple(field.name for field, _, _ in values)
    params += _params(model, {pk_name: pk}, conn)
    sql = _update_sql(model, columns, (pk_name,))
    if locked and _deferred(conn, sql, params):
        return 1
    with conn.cursor() as cursor:
        cursor.execute(sql, params)
        return cursor.rowcount


def _deferred(conn, sql: str, params) -> bool:
    """Whether `conn` took the write to send with its transaction's next statement or
    COMMIT (taskmgmt.mariadb's `defer`); False: send it now."""
    defer = getattr(conn, "defer", None)
    return bool(defer and defer(sql, params))


def update_then_select(
    model, values: dict, columns: tuple[str, ...], *, select_where: dict, **where
) -> tuple[int, tuple | None]:
    """`update_rows(model, values, **where)`, then `select_one(model, columns,
    **select_where)`: (the rows updated, the row read, or None).

    On MariaDB both statements go in one query, one round trip (mysqlclient allows
    several statements per query, and Django's connection keeps its default); the
    SELECT runs after the UPDATE on the same connection, so it reads the change.
    Elsewhere they are sent one after the other. For a write whose answer is the row
    it wrote (a progress report): a second round trip was a share of its cost.
    """
    conn = connections[DEFAULT_DB_ALIAS]
    update_sql, update_params = _update_statement(model, values, where, conn)
    select_sql = _select_sql(model, columns, tuple(select_where), "", (), None)
    select_params = _params(model, select_where, conn)
    with conn.cursor() as cursor:
        if conn.vendor == "mysql":
            cursor.execute(f"{update_sql}; {select_sql}", update_params + select_params)
            updated = cursor.rowcount
            cursor.nextset()
        else:
            cursor.execute(update_sql, update_params)
            updated = cursor.rowcount
            cursor.execute(select_sql, select_params)
        return updated, cursor.fetchone()


# Rows per statement of `update_to_later`: a CASE costs the database its rows
# squared, so a few short statements beat one long one (docs/performance.md).
LATER_ROWS = 100


@cache
def _ids_sql(model, rows: int, skip_locked: bool) -> str:
    """The SELECT of which of `rows` primary keys exist; with `skip_locked`, it locks
    those no other transaction holds and returns only them."""
    quote = connection.ops.quote_name
    meta = model._meta
    pk = quote(meta.pk.column)
    sql = f"SELECT {pk} FROM {quote(meta.db_table)} WHERE {pk} IN ({', '.join(['%s'] * rows)})"
    if skip_locked and connection.features.has_select_for_update_skip_locked:
        sql = f"{sql} {connection.ops.for_update_sql(skip_locked=True)}"
    return sql


@cache
def _later_sql(model, field: str, rows: int) -> str:
    quote = connection.ops.quote_name
    meta = model._meta
    table, pk = quote(meta.db_table), quote(meta.pk.column)
    column = quote(meta.get_field(field).column)
    ids = ", ".join(["%s"] * rows)
    value = f"CASE {pk} {' '.join(['WHEN %s THEN %s'] * rows)} END"
    return (
        f"UPDATE {table} SET {column} = {value} "
        f"WHERE {pk} IN ({ids}) AND ({column} IS NULL OR {column} < {value})"
    )


def update_to_later(model, field: str, values: dict) -> set:
    """Set `field` of each row whose primary key is in `values` to its value there,
    unless the row holds a later one. Returns the keys of the rows it skipped
    because another transaction held them, for the caller to try again later
    (a key with no row is neither written nor returned).

    So two writers' batches may commit in either order (heartbeat stamps).
    LATER_ROWS rows per transaction, each locked with SKIP LOCKED before its
    UPDATE: the writer never waits for a lock, so it is never part of a
    deadlock (a sweep batch share-locks the nodes of its tasks).
    """
    meta = model._meta
    key_of = meta.pk.to_python  # from the driver's value (text, hex or a UUID) or ours
    prep_pk, prep_value = meta.pk.get_db_prep_value, meta.get_field(field).get_db_prep_value
    rows = [
        (key_of(pk), prep_pk(pk, connection), prep_value(v, connection)) for pk, v in values.items()
    ]
    skipped = set()
    for start in range(0, len(rows), LATER_ROWS):
        chunk = rows[start : start + LATER_ROWS]
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.execute(_ids_sql(model, len(chunk), True), [pk for _, pk, _ in chunk])
            free = {key_of(pk) for (pk,) in cursor.fetchall()}
            held = [row for row in chunk if row[0] not in free]
            if held:
                cursor.execute(_ids_sql(model, len(held), False), [pk for _, pk, _ in held])
                skipped.update(key_of(pk) for (pk,) in cursor.fetchall())
            chunk = [row for row in chunk if row[0] in free]
            if chunk:
                cases = [param for _, pk, value in chunk for param in (pk, value)]
                sql = _later_sql(model, field, len(chunk))
                cursor.execute(sql, [*cases, *(pk for _, pk, _ in chunk), *cases])
    return skipped


def get_one(
    model,
    columns: tuple[str, ...] | None = None,
    *,
    for_update=False,
    skip_locked=False,
    order_by: tuple[str, ...] = (),
    index: str | None = None,
    unless: tuple = (),
    **where,
):
    """The model instance `select_one` finds, or None; `columns` default to every field.

    Values go through the converters the ORM applies (UUIDs, aware datetimes);
    fields not in `columns` load on first access.
    """
    fields = _fields(model, columns)
    attnames = tuple(field.attname for field in fields)
    row = select_one(
        model,
        attnames,
        for_update=for_update,
        skip_locked=skip_locked,
        order_by=order_by,
        index=index,
        unless=unless,
        **where,
    )
    instance = _instance(model, fields, row)
    if instance is not None and for_update:
        instance.locked_in = lock_token(connections[DEFAULT_DB_ALIAS])
    return instance


def get_one_and(model, columns: tuple[str, ...], also: Read, **where) -> tuple:
    """`get_one(model, columns, **where)` and the rows of `also`, read in one round trip
    on MariaDB (`read_together`): (the instance or None, the rows)."""
    fields = _fields(model, columns)
    attnames = tuple(field.attname for field in fields)
    found, rows = read_together(select_one_read(model, attnames, **where), also)
    return _instance(model, fields, found[0] if found else None), rows


@cache
def _fields(model, columns: tuple[str, ...] | None) -> list:
    return [
        field
        for field in model._meta.concrete_fields
        if columns is None or field.attname in columns or field.name in columns
    ]


def _instance(model, fields, row):
    """The instance `row` (the driver's values of `fields`) makes, as the ORM makes it."""
    if row is None:
        return None
    conn = connections[DEFAULT_DB_ALIAS]
    values = [_converted(field, value, conn) for field, value in zip(fields, row, strict=True)]
    return model.from_db(conn.alias, tuple(field.attname for field in fields), values)


def lock_token(conn) -> int | None:
    """The transaction open on `conn` (taskmgmt.mariadb's `lock_token`); None outside
    one, or where the backend cannot tell: a row read FOR UPDATE under a token is held
    while this still returns it."""
    token = getattr(conn, "lock_token", None)
    return token() if token else None


@cache
def _converters(field) -> tuple:
    """The field's column and what the ORM's compiler applies to it, backend's first.

    `get_col`, not `cached_col`: a foreign key's column converts as its target (a UUID).
    """
    column = field.get_col(field.model._meta.db_table)
    return column, connection.ops.get_db_converters(column) + column.get_db_converters(connection)


def _converted(field, value, conn):
    column, converters = _converters(field)
    for converter in converters:
        value = converter(value, column, conn)
    return value


def _inserted_fields(model) -> list:
    """Every concrete field but an auto-incremented id, which the database assigns."""
    return [field for field in model._meta.concrete_fields if field is not model._meta.auto_field]


@cache
def _insert_sql(model, count: int) -> str:
    quote = connection.ops.quote_name
    fields = _inserted_fields(model)
    columns = ", ".join(quote(field.column) for field in fields)
    row = f"({', '.join(['%s'] * len(fields))})"
    return (
        f"INSERT INTO {quote(model._meta.db_table)} ({columns}) VALUES {', '.join([row] * count)}"
    )


def insert_rows(model, instances: list, *, defer=False) -> None:
    """`bulk_create(instances)` for rows whose id the database assigns, in one INSERT.

    The values are the ones bulk_create writes (each field's `pre_save`, adapted for
    the database); like it, no signals, and the instances' ids stay unset. `defer`:
    inside a transaction the INSERT may go with its next statement or COMMIT.
    """
    if not instances:
        return
    fields = _inserted_fields(model)
    params = [
        field.get_db_prep_save(field.pre_save(instance, True), connection)
        for instance in instances
        for field in fields
    ]
    sql = _insert_sql(model, len(instances))
    if defer and _deferred(connection, sql, params):
        return
    with connection.cursor() as cursor:
        cursor.execute(sql, params)


def with_ids(queryset, ids: list):
    """`queryset` narrowed to the rows whose primary key is one of `ids`, values as the
    driver sent them (`driver_rows`): `pk__in` would convert each one back first.

    The ORM has no lookup taking driver values, so this is `.extra()`, here alone.
    `ids` must not be empty (`IN ()` is no SQL).
    """
    model = queryset.model
    quote = connection.ops.quote_name
    pk = f"{quote(model._meta.db_table)}.{quote(model._meta.pk.column)}"
    placeholders = ", ".join(["%s"] * len(ids))
    return queryset.extra(where=[f"{pk} IN ({placeholders})"], params=ids)


def insert_select(model, fields: tuple[str, ...], rows) -> None:
    """INSERT INTO `model` (`fields`) SELECT `rows`: a `values_list()` with one value per
    field, in their order. One statement whatever the count, where Django would build
    and save an instance per row; the SELECT is the ORM's own, compiled."""
    select_sql, params = rows.query.get_compiler(connection=connection).as_sql()
    quote = connection.ops.quote_name
    columns = ", ".join(quote(model._meta.get_field(name).column) for name in fields)
    with connection.cursor() as cursor:
        cursor.execute(
            f"INSERT INTO {quote(model._meta.db_table)} ({columns}) {select_sql}", params
        )


# --- django-ratelimit's counting, from its private helpers --------------------------


class RateWindow(NamedTuple):
    limit: int
    cache_key: str
    timeout: int  # how long the count is kept
    ends_at: int  # Unix time


def rate_window(group: str, rate: str, value: str) -> RateWindow:
    """django-ratelimit's window for `value` under `rate` ("10/m"): the cache key its
    own decorator counts under (so both count alike), and when the window ends.

    Its public API counts only inside its decorator or `is_ratelimited`, which also
    `add`s on every call (taskmgmt.throttling.count_request saves that).
    """
    limit, period = _split_rate(rate)
    window = _get_window(value, period)
    return RateWindow(
        limit=limit,
        cache_key=_make_cache_key(group, window, rate, value, ALL),
        timeout=period + EXPIRATION_FUDGE,
        ends_at=window,
    )


def ratelimit_key(name: str, request) -> str:
    """django-ratelimit's value for one of its named keys ("ip", "user", ...)."""
    return _SIMPLE_KEYS[name](request)
