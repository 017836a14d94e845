"""The order path's SQL without the query compiler: row writes as ``Model.save()`` does
them, and the reads that lock or load whole rows.

An order writes seven rows or batches of rows in one transaction and reads four. Through the
ORM, each statement was built by Django's query compiler (a batch by ``bulk_create``'s
``UNNEST`` arrays, dumped value by value) on every order: on the benchmark machine, a third
of the order's CPU. Here the SQL text of each model, column list and condition is built once
per process from the model's options; the values still go through the model's fields
(``pre_save`` for ``auto_now``/``auto_now_add``, ``get_db_prep_save`` for the backend's
adaptation) and the rows read come back through ``Model.from_db``, so what is stored and
loaded is what the ORM would store and load, on PostgreSQL and SQLite alike.

What ``save()`` does and this does not: send ``pre_save``/``post_save`` signals (no model
written here has receivers), save through multi-table inheritance (none of these models
uses it) and check unsaved related objects. Use it for plain models, on rows the caller
built or loaded whole.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import cache

from django.db import DatabaseError, connections, router
from django.db.models import Model

__all__ = ["insert", "loaded", "save", "select", "update"]


def insert(objs: Sequence[Model]) -> None:
    """INSERT ``objs`` (of one model) in one statement, like ``save(force_insert=True)`` of
    each: ``auto_now_add``/``auto_now`` fields are stamped, an auto-increment primary key is
    read back and set, and the objects are marked as saved."""
    if not objs:
        return
    model = type(objs[0])
    using = router.db_for_write(model)
    connection = connections[using]
    pk_generated = objs[0].pk is None
    fields, returning = _insert_fields(model, pk_generated)
    params = []
    for obj in objs:
        for field in fields:
            params.append(field.get_db_prep_save(field.pre_save(obj, True), connection))
    sql = _insert_sql(model, using, len(objs), pk_generated)
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        rows = cursor.fetchall() if returning is not None else ()
    for obj, (value,) in zip(objs, rows, strict=False):
        obj.pk = loaded(returning, value, using)
    for obj in objs:
        obj._state.adding = False
        obj._state.db = using


def update(obj: Model, fields: Sequence[str] | None = None) -> None:
    """UPDATE ``obj``'s row, like ``save(update_fields=fields)`` (all its fields when
    ``fields`` is None). An ``auto_now`` field is stamped when it is written. Raises
    ``DatabaseError`` if no row was updated, as ``save(update_fields=…)`` does."""
    model = type(obj)
    using = router.db_for_write(model)
    connection = connections[using]
    names = tuple(fields) if fields is not None else None
    columns = _update_fields(model, names)
    params = [field.get_db_prep_save(field.pre_save(obj, False), connection) for field in columns]
    params.append(model._meta.pk.get_db_prep_value(obj.pk, connection))
    with connection.cursor() as cursor:
        cursor.execute(_update_sql(model, using, names), params)
        updated = cursor.rowcount
    if updated != 1:
        raise DatabaseError(f"{model._meta.label} {obj.pk}: the update changed {updated} rows.")
    obj._state.adding = False
    obj._state.db = using


def select[M: Model](model: type[M], *, lock: bool = False, **conditions) -> list[M]:
    """The ``model`` rows matching every condition, whole, loaded as the ORM loads them
    (``Model.from_db`` after the fields' converters). A condition is ``field=value`` (a
    field's name or attname) or ``field__in=values`` (no rows for no values). ``lock``:
    ``SELECT … FOR UPDATE`` on a database that supports it (in ``transaction.atomic``)."""
    using = router.db_for_read(model)
    connection = connections[using]
    shape, params = [], []
    for key, value in conditions.items():
        name, _, lookup = key.partition("__")
        field = model._meta.get_field(name)
        values = list(value) if lookup == "in" else [value]
        if not values:
            return []
        shape.append((name, len(values) if lookup == "in" else None))
        params += [field.get_db_prep_value(v, connection) for v in values]
    lock = lock and connection.features.has_select_for_update
    sql = _select_sql(model, using, tuple(shape), lock)
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        rows = cursor.fetchall()
    names = _attnames(model)
    converting = _converters(model, using)
    objs = []
    for row in rows:
        if converting:
            row = list(row)
            for index, column, converters in converting:
                for converter in converters:
                    row[index] = converter(row[index], column, connection)
        objs.append(model.from_db(using, names, row))
    return objs


def loaded(field, value, using: str = "default"):
    """``value`` read from ``field``'s column, converted as the ORM converts what it loads
    (for a column read outside a model's own ``SELECT``)."""
    connection = connections[using]
    column, converters = _field_converters(field, using)
    for converter in converters:
        value = converter(value, column, connection)
    return value


def save(obj: Model) -> None:
    """``obj.save()`` of a new object (INSERT) or of one loaded whole (UPDATE of every
    field)."""
    if obj._state.adding:
        insert([obj])
    else:
        update(obj)


@cache
def _insert_fields(model: type[Model], pk_generated: bool):
    """The fields an INSERT writes, and the primary key to read back when the database
    generates it (else None)."""
    opts = model._meta
    returning = opts.pk if pk_generated and opts.pk in opts.db_returning_fields else None
    fields = tuple(f for f in opts.local_concrete_fields if f is not returning)
    return fields, returning


@cache
def _update_fields(model: type[Model], names: tuple[str, ...] | None):
    opts = model._meta
    if names is None:
        return tuple(f for f in opts.local_concrete_fields if not f.primary_key)
    return tuple(opts.get_field(name) for name in names)


@cache
def _insert_sql(model: type[Model], using: str, rows: int, pk_generated: bool) -> str:
    quote = connections[using].ops.quote_name
    opts = model._meta
    fields, returning = _insert_fields(model, pk_generated)
    row = f"({_marks(len(fields))})"
    # Identifiers from the model's options, quoted by the backend; values are parameters.
    columns = ", ".join(quote(f.column) for f in fields)
    values = ", ".join([row] * rows)
    sql = f"INSERT INTO {quote(opts.db_table)} ({columns}) VALUES {values}"  # noqa: S608
    if returning is not None:
        sql += f" RETURNING {quote(returning.column)}"
    return sql


@cache
def _attnames(model: type[Model]) -> tuple[str, ...]:
    return tuple(f.attname for f in model._meta.concrete_fields)


@cache
def _field_converters(field, using: str):
    """The column expression of ``field`` and the converters the ORM applies to its values
    (the backend's, then the field's ``from_db_value``)."""
    connection = connections[using]
    column = field.get_col(field.model._meta.db_table)
    converters = connection.ops.get_db_converters(column) + field.get_db_converters(connection)
    return column, tuple(converters)


@cache
def _converters(model: type[Model], using: str):
    """(index, column, converters) of each concrete field that has converters."""
    converting = []
    for index, field in enumerate(model._meta.concrete_fields):
        column, converters = _field_converters(field, using)
        if converters:
            converting.append((index, column, converters))
    return tuple(converting)


@cache
def _select_sql(model: type[Model], using: str, shape: tuple, lock: bool) -> str:
    """``shape``: (field name, number of ``IN`` values or None for ``=``) per condition."""
    quote = connections[using].ops.quote_name
    opts = model._meta
    columns = ", ".join(quote(f.column) for f in opts.concrete_fields)
    where = []
    for name, count in shape:
        column = quote(opts.get_field(name).column)
        where.append(f"{column} = %s" if count is None else f"{column} IN ({_marks(count)})")
    sql = f"SELECT {columns} FROM {quote(opts.db_table)} WHERE {' AND '.join(where)}"  # noqa: S608
    return sql + " FOR UPDATE" if lock else sql


def _marks(count: int) -> str:
    return ", ".join(["%s"] * count)


@cache
def _update_sql(model: type[Model], using: str, names: tuple[str, ...] | None) -> str:
    quote = connections[using].ops.quote_name
    opts = model._meta
    assignments = ", ".join(f"{quote(f.column)} = %s" for f in _update_fields(model, names))
    table, pk = quote(opts.db_table), quote(opts.pk.column)
    return f"UPDATE {table} SET {assignments} WHERE {pk} = %s"  # noqa: S608
