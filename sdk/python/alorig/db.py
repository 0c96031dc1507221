"""PostgreSQL through ``alorig:host/postgres``: the host holds the connections
(the app's own role and database, from the manifest's ``[postgres]``); the app
sends SQL with ``$1, $2`` placeholders and plain Python values.

    rows = db.query("SELECT id, name FROM school WHERE branch_id = $1", branch_id)
    rows[0]["name"]            # rows are dicts, column name -> Python value
    db.execute("UPDATE school SET name = $1 WHERE id = $2", name, pk)   # -> rows affected
    with db.transaction() as tx:   # commits at the end, rolls back on an exception
        tx.execute(...)

Python -> SQL: None, bool, int, float, str, bytes, Decimal, date, datetime
(naive -> timestamp, aware -> timestamptz), UUID, dict (jsonb), lists of
int/float/str/bool/UUID (arrays). The host encodes each for the type the server
inferred, so an ``int`` fits an ``int4`` column. SQL -> Python: the same types back
(json/jsonb parsed, numeric as Decimal).
"""

import datetime as _dt
import decimal as _decimal
import json as _json
import uuid as _uuid

from componentize_py_types import Err

from . import errors

_EPOCH = _dt.datetime(1970, 1, 1)
_EPOCH_UTC = _dt.datetime(1970, 1, 1, tzinfo=_dt.timezone.utc)
_EPOCH_DATE = _dt.date(1970, 1, 1)


# Imported when the component is built (componentize-py snapshots the
# interpreter then; a module first imported at run time is not found).
try:
    from wit_world.imports import postgres as _postgres
except ImportError:  # the world has no postgres: the manifest does not grant it
    _postgres = None


def _pg():
    if _postgres is None:
        raise errors.AlorigError("not-granted", "this component was built without alorig:host/postgres: add [postgres] to the manifest and rebuild")
    return _postgres


def _micros(delta):
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def to_value(v):
    """One Python value as a WIT ``postgres.value``."""
    p = _pg()
    if v is None:
        return p.Value_Null()
    if isinstance(v, bool):
        return p.Value_Boolean(v)
    if isinstance(v, int):
        return p.Value_Int64(v)
    if isinstance(v, float):
        return p.Value_Float64(v)
    if isinstance(v, str):
        return p.Value_Text(v)
    if isinstance(v, (bytes, bytearray, memoryview)):
        return p.Value_Bytea(bytes(v))
    if isinstance(v, _decimal.Decimal):
        return p.Value_Numeric(str(v))
    if isinstance(v, _uuid.UUID):
        return p.Value_Uuid(str(v))
    if isinstance(v, _dt.datetime):
        if v.tzinfo is None:
            return p.Value_Timestamp(_micros(v - _EPOCH))
        return p.Value_Timestamptz(_micros(v - _EPOCH_UTC))
    if isinstance(v, _dt.date):
        return p.Value_Date((v - _EPOCH_DATE).days)
    if isinstance(v, dict):
        return p.Value_Jsonb(_json.dumps(v))
    if isinstance(v, (list, tuple)):
        items = list(v)
        kinds = {type(i) for i in items if i is not None}
        if kinds <= {bool} and kinds:
            return p.Value_BooleanArray(items)
        if kinds <= {int}:
            return p.Value_Int64Array(items)
        if kinds <= {float, int}:
            return p.Value_Float64Array([None if i is None else float(i) for i in items])
        if kinds <= {str}:
            return p.Value_TextArray(items)
        if kinds <= {_uuid.UUID}:
            return p.Value_UuidArray([None if i is None else str(i) for i in items])
        return p.Value_Jsonb(_json.dumps(items))
    raise TypeError(f"cannot send a {type(v).__name__} to PostgreSQL (use str, int, float, bool, bytes, Decimal, date, datetime, UUID, dict or list)")


def from_value(v):
    """One WIT ``postgres.value`` as a Python value."""
    name = type(v).__name__
    if name == "Value_Null":
        return None
    x = v.value
    if name in ("Value_Numeric",):
        return _decimal.Decimal(x)
    if name in ("Value_Json", "Value_Jsonb"):
        return _json.loads(x)
    if name == "Value_Uuid":
        return _uuid.UUID(x)
    if name == "Value_UuidArray":
        return [None if i is None else _uuid.UUID(i) for i in x]
    if name == "Value_Date":
        return _EPOCH_DATE + _dt.timedelta(days=x)
    if name == "Value_Timestamp":
        return _EPOCH + _dt.timedelta(microseconds=x)
    if name == "Value_Timestamptz":
        return _EPOCH_UTC + _dt.timedelta(microseconds=x)
    if name == "Value_Bytea":
        return bytes(x)
    return x


def _error(variant):
    kind = errors.kebab(variant)
    info = variant.value
    message, sqlstate = info.message, info.sqlstate
    if kind == "constraint-violation":
        return errors.IntegrityError(kind, message, variant, sqlstate, info.constraint)
    if kind == "unavailable":
        return errors.DatabaseUnavailable(kind, message, variant, sqlstate)
    if kind == "timeout":
        return errors.DatabaseTimeout(kind, message, variant, sqlstate)
    return errors.DatabaseError(kind, message, variant, sqlstate)


def _rows(rowset):
    names = [c.name for c in rowset.columns]
    return [dict(zip(names, (from_value(v) for v in row))) for row in rowset.rows]


def _call(fn, sql, params):
    try:
        return fn(sql, [to_value(p) for p in params])
    except Err as e:
        raise _error(e.value) from None


def query(sql, *params):
    """All rows, each a dict of column name -> value."""
    return _rows(_call(_pg().query, sql, params))


def query_one(sql, *params):
    """The first row, or None."""
    rows = query(sql, *params)
    return rows[0] if rows else None


def query_value(sql, *params):
    """The first column of the first row, or None."""
    rowset = _call(_pg().query, sql, params)
    return from_value(rowset.rows[0][0]) if rowset.rows and rowset.rows[0] else None


def execute(sql, *params):
    """Runs a statement; the number of rows it affected."""
    return _call(_pg().execute, sql, params)


class Transaction:
    """``with db.transaction() as tx:`` commits when the block ends, rolls back
    when it raises. ``tx.query``/``tx.execute`` as the module's functions."""

    def __init__(self):
        self._tx = None

    def __enter__(self):
        try:
            self._tx = _pg().begin()
        except Err as e:
            raise _error(e.value) from None
        return self

    def query(self, sql, *params):
        return _rows(_call(self._tx.query, sql, params))

    def query_one(self, sql, *params):
        rows = self.query(sql, *params)
        return rows[0] if rows else None

    def execute(self, sql, *params):
        return _call(self._tx.execute, sql, params)

    def __exit__(self, exc_type, exc, tb):
        tx, self._tx = self._tx, None
        cls = type(tx)
        try:
            if exc_type is None:
                cls.commit(tx)
            else:
                cls.rollback(tx)
        except Err as e:
            if exc_type is None:
                raise _error(e.value) from None
        return False


def transaction():
    return Transaction()
