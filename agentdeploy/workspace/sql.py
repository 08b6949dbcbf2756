"""SQL statements: read-only Databricks SQL run by DuckDB over the catalog's Delta tables.

    prepared = translate(sql, catalog="main", schema="docs", parameters=[...])   # 400 if refused
    response = statement_service(ws).execute(caller, warehouse_id=wid, statement=sql)  # Databricks shape

A statement is parsed with sqlglot as Databricks SQL and refused (400, `InvalidParameterValue`)
unless it is exactly one query: no DDL, DML, COPY, ATTACH, INSTALL, LOAD, SET, PRAGMA, no table
functions such as `read_csv(...)`, no positional `?`. Every table it reads is resolved to a
three-part name (the request's catalog and schema fill missing parts), authorized (SELECT with the
USE_CATALOG/USE_SCHEMA rule, by the one authorization function), and replaced by a hidden name
under which its Delta snapshot is registered as a pyarrow dataset. DuckDB reserves the catalog
name `main`, which is why names are rewritten rather than attached. `:name` parameters become
`CAST($name AS <type>)`, so values never meet the SQL text.

DuckDB itself is locked as a second wall: no file or network access, no extension loading, no
replacement scans of Python objects, configuration locked. A cursor of one locked in-memory
database per statement isolates registrations and costs microseconds, where a new connection
costs about 30 ms (measured here; a whole statement through a cursor took about a fifteenth of
one through a fresh database), which matters because agents query per request. Results are
formatted by `sql_results.py`; `system.access.audit` comes from `system_tables.py`.
"""

from __future__ import annotations

import functools
import re
import threading
import uuid
import weakref
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeAlias

import duckdb
import pyarrow as pa
import pyarrow.dataset as pads
import sqlglot
from sqlglot import exp
from sqlglot.errors import ParseError, SqlglotError
from sqlglot.optimizer.scope import Scope, traverse_scope

from agentdeploy.errors import InvalidParameterValue, NotFound, PermissionDenied
from agentdeploy.tables.delta import DeltaStore
from agentdeploy.workspace.context import Workspace
from agentdeploy.workspace.grants import denial_message
from agentdeploy.workspace.identity import Identity
from agentdeploy.workspace.names import MAX_NAME_LENGTH
from agentdeploy.workspace.sql_results import duckdb_column, json_cell
from agentdeploy.workspace.system_tables import AUDIT_TABLE, audit_log_table

__all__ = [
    "StatementParameter",
    "TableReference",
    "PreparedStatement",
    "translate",
    "locked_database",
    "StatementResult",
    "run_prepared",
    "StatementStore",
    "StatementService",
    "statement_service",
    "DEFAULT_CATALOG",
    "DEFAULT_SCHEMA",
    "MAX_INLINE_ROWS",
    "STATEMENT_TIMEOUT_S",
]

DEFAULT_CATALOG = "main"
DEFAULT_SCHEMA = "default"
MAX_INLINE_ROWS = 100_000  # INLINE results stay small (Databricks caps them at 25 MiB)
STATEMENT_TIMEOUT_S = 60.0
MAX_STATEMENT_CHARS = 100_000
_HIDDEN_PREFIX = "__agentdeploy_t"
_CACHED_STATEMENT_CHARS = 8192  # longer statements are translated every time (bounded memory)

# Statement kinds named in refusals, by sqlglot node (the rest are named by their keyword).
_KIND_NAMES: dict[type[exp.Expr], str] = {
    exp.Insert: "INSERT",
    exp.Update: "UPDATE",
    exp.Delete: "DELETE",
    exp.Merge: "MERGE",
    exp.Create: "CREATE",
    exp.Drop: "DROP",
    exp.Alter: "ALTER",
    exp.Copy: "COPY",
    exp.Set: "SET",
    exp.Pragma: "PRAGMA",
    exp.Use: "USE",
    exp.Describe: "DESCRIBE",
    exp.Values: "VALUES",
    exp.Transaction: "BEGIN",
    exp.Commit: "COMMIT",
    exp.Rollback: "ROLLBACK",
    exp.Cache: "CACHE",
}
_FORBIDDEN_NODES: tuple[type[exp.Expr], ...] = (
    exp.Insert,
    exp.Update,
    exp.Delete,
    exp.Merge,
    exp.Create,
    exp.Drop,
    exp.Alter,
    exp.Copy,
    exp.Set,
    exp.Pragma,
    exp.Use,
    exp.Command,
    exp.Into,
)


@dataclass(frozen=True, slots=True)
class StatementParameter:
    """One `:name` parameter: its value as a string (or None for NULL) and its SQL type."""

    name: str
    value: str | None = None
    type: str = "STRING"


@dataclass(frozen=True, slots=True)
class TableReference:
    catalog: str
    schema: str
    name: str

    @property
    def full_name(self) -> str:
        return f"{self.catalog}.{self.schema}.{self.name}"


@dataclass(frozen=True, slots=True)
class PreparedStatement:
    """A statement checked and translated: DuckDB SQL over hidden names, and what it reads."""

    duckdb_sql: str
    tables: dict[str, TableReference]  # hidden name -> table it stands for
    parameters: dict[str, str | None]

    @property
    def table_names(self) -> list[str]:
        return sorted({t.full_name for t in self.tables.values()})


def _refuse(message: str) -> InvalidParameterValue:
    return InvalidParameterValue(f"'statement' refused: {message}")


def _kind_of(node: exp.Expr) -> str:
    for cls, name in _KIND_NAMES.items():
        if isinstance(node, cls):
            return name
    if isinstance(node, exp.Command):
        return str(node.this).upper()
    if isinstance(node, exp.Alias) and isinstance(node.this, exp.Column):  # `INSTALL x` parses so
        return str(node.this.name).upper()
    if isinstance(node, exp.Column):  # a bare keyword such as `CHECKPOINT`
        return str(node.name).upper()
    return node.key.upper()


# Statements refused by their first keyword, before parsing: a clearer message than a parse error
# for DuckDB-only commands that are not Databricks SQL at all.
_FORBIDDEN_KEYWORDS = frozenset(
    {
        "ATTACH",
        "DETACH",
        "COPY",
        "INSTALL",
        "LOAD",
        "SET",
        "RESET",
        "PRAGMA",
        "EXPORT",
        "IMPORT",
        "CALL",
        "CHECKPOINT",
        "VACUUM",
        "CREATE",
        "DROP",
        "ALTER",
        "INSERT",
        "UPDATE",
        "DELETE",
        "MERGE",
        "TRUNCATE",
        "USE",
        "GRANT",
        "REVOKE",
        "OPTIMIZE",
        "REFRESH",
        "CACHE",
        "UNCACHE",
        "MSCK",
        "ANALYZE",
    }
)


_FILE_FUNCTION = re.compile(r"\b(glob|read_\w+|sniff_csv|parquet_\w+|iceberg_\w+|delta_scan)\s*\(", re.I)


def _first_keyword(statement: str) -> str:
    try:
        tokens = sqlglot.tokenize(statement, read="databricks")
    except SqlglotError:
        return ""
    return tokens[0].text.upper() if tokens else ""


def _identifier_part(field: str, value: str) -> str:
    part = value.lower()
    if not part or len(part) > MAX_NAME_LENGTH or not all(c.isalnum() or c in "_-" for c in part):
        raise _refuse(f"{field} {value[:80]!r} is not a valid name (letters, digits, '_' or '-').")
    return part


def _parse(statement: str) -> exp.Expr:
    if not isinstance(statement, str) or not statement.strip():
        raise InvalidParameterValue("'statement' must be a non-empty SQL string.")
    if len(statement) > MAX_STATEMENT_CHARS:
        raise InvalidParameterValue(
            f"'statement' is {len(statement)} characters long; the limit is {MAX_STATEMENT_CHARS}."
        )
    keyword = _first_keyword(statement)
    if keyword in _FORBIDDEN_KEYWORDS:
        raise _refuse(
            f"only a read-only query (SELECT ...) may run; got {keyword}. "
            "DDL, DML, COPY, ATTACH, INSTALL, LOAD, SET and PRAGMA are not allowed."
        )
    try:
        parsed = [
            p
            for p in sqlglot.parse(statement, read="databricks")
            if p is not None and not isinstance(p, exp.Semicolon)
        ]
    except ParseError as exc:
        function = _FILE_FUNCTION.search(statement)
        if function:  # DuckDB-only file functions (glob) do not even parse as Databricks SQL
            raise _refuse(
                f"file functions such as {function.group(1).lower()}(...) are not allowed; "
                "read catalog tables by name (catalog.schema.table)."
            ) from None
        first = exc.errors[0] if exc.errors else {}
        detail = first.get("description") or str(exc).splitlines()[0]
        where = f" (line {first['line']}, column {first['col']})" if "line" in first else ""
        raise _refuse(f"it is not valid Databricks SQL: {detail}{where}.") from None
    except SqlglotError as exc:
        raise _refuse(f"it is not valid Databricks SQL: {str(exc).splitlines()[0]}.") from None
    if not parsed:
        raise InvalidParameterValue("'statement' must hold a SQL query.")
    if len(parsed) > 1:
        raise _refuse(f"it holds {len(parsed)} statements; send exactly one query.")
    root: exp.Expr = parsed[0]
    return root


def _check_read_only(root: exp.Expr) -> None:
    if not isinstance(root, exp.Query):
        raise _refuse(
            f"only a read-only query (SELECT ...) may run; got {_kind_of(root)}. "
            "DDL, DML, COPY, ATTACH, INSTALL, LOAD, SET and PRAGMA are not allowed."
        )
    for node in root.walk():
        if isinstance(node, _FORBIDDEN_NODES):
            raise _refuse(f"{_kind_of(node)} is not allowed inside a query.")
        if isinstance(node, exp.Placeholder) and not node.this:
            raise _refuse("positional '?' parameters are not supported; use named ':name' parameters.")


def _cte_references(root: exp.Expr) -> set[int]:
    """Ids of the table nodes that name a CTE in scope (these are not catalog tables)."""
    try:
        scopes = traverse_scope(root)
    except SqlglotError as exc:
        raise _refuse(f"{str(exc).splitlines()[0]}.") from None
    refs: set[int] = set()
    for scope in scopes:
        for table in scope.tables:
            if not table.db and isinstance(scope.sources.get(table.alias_or_name), Scope):
                refs.add(id(table))
    return refs


def translate(
    statement: str,
    *,
    catalog: str | None = None,
    schema: str | None = None,
    parameters: Sequence[StatementParameter] = (),
) -> PreparedStatement:
    """Check a Databricks SQL statement and translate it to DuckDB over hidden table names."""
    types = tuple((p.name, p.type or "STRING") for p in parameters)
    translated = _translate if len(statement) <= _CACHED_STATEMENT_CHARS else _translate.__wrapped__
    duckdb_sql, tables, used = translated(statement, catalog, schema, types)
    values = {p.name: p.value for p in parameters}
    return PreparedStatement(
        duckdb_sql=duckdb_sql, tables=dict(tables), parameters={name: values[name] for name in used}
    )


# Agents send the same few statements again and again: parsing is the costly part, so the
# translation (which depends on the text, the defaults and the parameter types, not the values)
# is kept. Refusals raise, and lru_cache keeps no exceptions.
@functools.lru_cache(maxsize=1024)
def _translate(
    statement: str, catalog: str | None, schema: str | None, types: tuple[tuple[str, str], ...]
) -> tuple[str, tuple[tuple[str, TableReference], ...], tuple[str, ...]]:
    default_catalog = _identifier_part("catalog", catalog) if catalog else DEFAULT_CATALOG
    default_schema = _identifier_part("schema", schema) if schema else DEFAULT_SCHEMA
    root = _parse(statement)
    _check_read_only(root)
    ctes = _cte_references(root)

    tables: dict[str, TableReference] = {}
    hidden_by_name: dict[str, str] = {}
    for table in list(root.find_all(exp.Table)):
        if id(table) in ctes:
            continue
        if not isinstance(table.this, exp.Identifier):
            if isinstance(table.this, exp.Dot):
                raise _refuse("table names have at most three parts (catalog.schema.table).")
            if isinstance(table.this, exp.Anonymous):
                function = str(table.this.name)
            else:
                function = table.this.sql_name() if isinstance(table.this, exp.Func) else table.this.key
            raise _refuse(
                f"table functions such as {function.lower()}(...) are not allowed; "
                "read catalog tables by name (catalog.schema.table)."
            )
        if table.args.get("version") is not None:
            raise _refuse("time travel (VERSION/TIMESTAMP AS OF) is not supported.")
        parts = [p for p in (table.catalog, table.db, table.name) if p]
        if len(parts) == 3:
            ref = TableReference(*(_identifier_part("table name", p) for p in parts))
        elif len(parts) == 2:
            ref = TableReference(
                default_catalog, _identifier_part("schema", parts[0]), _identifier_part("table", parts[1])
            )
        else:
            ref = TableReference(default_catalog, default_schema, _identifier_part("table", parts[0]))
        hidden = hidden_by_name.setdefault(ref.full_name, f"{_HIDDEN_PREFIX}{len(hidden_by_name)}")
        tables[hidden] = ref
        alias = table.args.get("alias")
        replacement = exp.Table(
            this=exp.to_identifier(hidden, quoted=True),
            alias=alias.copy() if alias else exp.TableAlias(this=exp.to_identifier(ref.name)),
        )
        table.replace(replacement)

    # `main.docs.faq.question`: keep only the table qualifier, which the alias now answers to.
    for column in root.find_all(exp.Column):
        if column.args.get("db") or column.args.get("catalog"):
            column.set("db", None)
            column.set("catalog", None)

    given = dict(types)
    used: list[str] = []
    for placeholder in list(root.find_all(exp.Placeholder)):
        name = str(placeholder.this)
        param_type = given.get(name)
        if param_type is None:
            raise InvalidParameterValue(
                f"'parameters': the statement uses :{name} but no parameter named {name!r} was given."
            )
        try:
            data_type = exp.DataType.build(param_type, dialect="databricks")
        except (SqlglotError, ValueError):
            raise InvalidParameterValue(
                f"'parameters': {param_type[:40]!r} (of :{name}) is not a SQL "
                "type such as STRING, INT, BIGINT, DOUBLE, DATE or TIMESTAMP."
            ) from None
        if name not in used:
            used.append(name)
        placeholder.replace(exp.Cast(this=exp.Placeholder(this=name), to=data_type))
    try:
        duckdb_sql = root.sql(dialect="duckdb")
    except SqlglotError as exc:
        raise _refuse(f"it cannot be translated: {str(exc).splitlines()[0]}.") from None
    return duckdb_sql, tuple(tables.items()), tuple(used)


# Execution -------------------------------------------------------------------------------------


def locked_database(*, threads: int = 2, memory_limit: str = "1GB") -> duckdb.DuckDBPyConnection:
    """An in-memory DuckDB that cannot reach files, the network, extensions or Python objects."""
    con = duckdb.connect(
        ":memory:",
        config={
            "enable_external_access": False,
            "autoinstall_known_extensions": False,
            "autoload_known_extensions": False,
            "allow_community_extensions": False,
            "python_enable_replacements": False,
            "threads": threads,
            "memory_limit": memory_limit,
        },
    )
    con.execute("SET TimeZone = 'UTC'")
    con.execute("SET lock_configuration = true")
    return con


@dataclass
class StatementResult:
    columns: list[dict[str, Any]]
    rows: list[list[str | None]]
    truncated: bool


Source: TypeAlias = pads.Dataset | pa.Table


def run_prepared(
    database: duckdb.DuckDBPyConnection,
    prepared: PreparedStatement,
    sources: Mapping[str, Source],
    *,
    row_limit: int | None = None,
    timeout_s: float = STATEMENT_TIMEOUT_S,
) -> StatementResult:
    """Run a prepared statement on a fresh cursor of the locked database with its tables registered.

    DuckDB errors (unknown column, bad cast) are raised as `duckdb.Error` for the caller to report
    as a FAILED statement; a statement running past `timeout_s` is interrupted.
    """
    limit = min(row_limit or MAX_INLINE_ROWS, MAX_INLINE_ROWS)
    cursor = database.cursor()

    def interrupt() -> None:
        try:
            cursor.interrupt()
        except duckdb.Error:  # finished and closed meanwhile
            pass

    timer = threading.Timer(timeout_s, interrupt)
    try:
        for hidden, source in sources.items():
            cursor.register(hidden, source)
        timer.start()
        cursor.execute(prepared.duckdb_sql, prepared.parameters or None)
        description = cursor.description or []
        fetched = cursor.fetchmany(limit + 1)
    finally:
        timer.cancel()
        cursor.close()
    truncated = len(fetched) > limit
    columns = [duckdb_column(d[0], d[1], i) for i, d in enumerate(description)]
    rows = [[json_cell(v) for v in row] for row in fetched[:limit]]
    return StatementResult(columns=columns, rows=rows, truncated=truncated)


# Recent results, for GET /api/2.0/sql/statements/{id} ------------------------------------------


@dataclass
class _Stored:
    owner_id: int
    response: dict[str, Any]


@dataclass
class StatementStore:
    """The most recent statement responses (statements finish synchronously), per owner."""

    capacity: int = 256
    _items: OrderedDict[str, _Stored] = field(default_factory=OrderedDict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @staticmethod
    def new_id() -> str:
        return str(uuid.uuid4())

    def put(self, owner_id: int, response: dict[str, Any]) -> None:
        with self._lock:
            self._items[response["statement_id"]] = _Stored(owner_id, response)
            while len(self._items) > self.capacity:
                self._items.popitem(last=False)

    def get(self, owner_id: int, statement_id: str) -> dict[str, Any]:
        with self._lock:
            stored = self._items.get(statement_id)
        if stored is None or stored.owner_id != owner_id:  # another caller's statement: not yours
            raise NotFound(
                f"No statement {statement_id[:80]!r}: results are kept for the most recent "
                f"{self.capacity} statements of the caller who ran them."
            )
        return stored.response


# The service behind /api/2.0/sql/statements ----------------------------------------------------


class StatementService:
    """Runs statements for callers: authorization, translation, Delta snapshots, DuckDB, results."""

    def __init__(self, ws: Workspace, *, tables: DeltaStore | None = None) -> None:
        self.ws = ws
        self.tables = tables or DeltaStore(ws.settings.warehouse_dir)
        self.database = locked_database()
        self.results = StatementStore()

    def warehouse_name(self, warehouse_id: str) -> str:
        """The name of the warehouse with this id (its name is accepted too), or 404."""
        if not isinstance(warehouse_id, str) or not warehouse_id:
            raise InvalidParameterValue("'warehouse_id' must be the id of a SQL warehouse.")
        access = self.ws.access
        ref = access.by_object_id.get(("sql_warehouse", warehouse_id)) or access.find(
            "sql_warehouse", warehouse_id
        )
        if ref is None:
            raise NotFound(
                f"'warehouse_id': no SQL warehouse with id {warehouse_id[:80]!r}; list them with "
                "GET /api/2.0/sql/warehouses."
            )
        return ref.full_name

    def _registered_name(self, name: str) -> str:
        """The table's name as registered (SQL names are case-insensitive), or 404."""
        access = self.ws.access
        if access.find("table", name) is not None:
            return name
        for securable_type, full_name in list(access.by_name):
            if securable_type == "table" and full_name.lower() == name:
                return full_name
        raise NotFound(f"Table '{name}' does not exist (TABLE_OR_VIEW_NOT_FOUND).")

    def _authorize_tables(self, caller: Identity, prepared: PreparedStatement) -> None:
        """SELECT (with USE_CATALOG/USE_SCHEMA) on every table, all missing privileges in one 403."""
        checks = []
        for name in prepared.table_names:
            if name == AUDIT_TABLE:
                if not caller.is_admin:
                    raise PermissionDenied(f"Table '{AUDIT_TABLE}' is readable only by members of 'admins'.")
                continue
            checks.append(("table", self._registered_name(name), "SELECT"))
        missing = self.ws.missing_privileges(caller, checks) if checks else []
        if missing:
            raise PermissionDenied(denial_message(caller, missing))

    def _sources(self, prepared: PreparedStatement) -> dict[str, Source]:
        sources: dict[str, Source] = {}
        for hidden, ref in prepared.tables.items():
            if ref.full_name == AUDIT_TABLE:
                with self.ws.read() as session:
                    sources[hidden] = audit_log_table(session)
            else:
                sources[hidden] = self.tables.dataset(self._registered_name(ref.full_name))
        return sources

    def execute(
        self,
        caller: Identity,
        *,
        warehouse_id: str,
        statement: str,
        catalog: str | None = None,
        schema: str | None = None,
        parameters: Sequence[StatementParameter] = (),
        row_limit: int | None = None,
    ) -> dict[str, Any]:
        """Run one statement and answer in the Databricks `StatementResponse` shape.

        Refusals are errors (400 bad SQL, 403 missing privilege, 404 unknown warehouse or table);
        a statement DuckDB rejects while running (unknown column, bad cast) is a FAILED response."""
        warehouse = self.warehouse_name(warehouse_id)
        self.ws.authorize(caller, "sql_warehouse", warehouse, "CAN_USE")
        prepared = translate(statement, catalog=catalog, schema=schema, parameters=parameters)
        self._authorize_tables(caller, prepared)
        sources = self._sources(prepared)
        statement_id = self.results.new_id()
        try:
            result = run_prepared(self.database, prepared, sources, row_limit=row_limit)
        except duckdb.InterruptException:
            response = _failed(
                statement_id,
                "DEADLINE_EXCEEDED",
                f"The statement ran longer than {STATEMENT_TIMEOUT_S:.0f} s and was cancelled.",
            )
        except duckdb.PermissionException as exc:  # the lock-down caught what the checks did not
            raise _refuse(str(exc).splitlines()[0]) from None
        except duckdb.Error as exc:
            response = _failed(statement_id, "BAD_REQUEST", _duckdb_message(str(exc), prepared))
        else:
            response = _succeeded(statement_id, result)
        self.results.put(caller.id, response)
        return response

    def get(self, caller: Identity, statement_id: str) -> dict[str, Any]:
        return self.results.get(caller.id, statement_id)

    def close(self) -> None:
        self.database.close()


def _duckdb_message(message: str, prepared: PreparedStatement) -> str:
    """DuckDB's error with hidden table names put back as the user wrote them."""
    first = message.split("\n\nLINE")[0].strip()
    for hidden, ref in prepared.tables.items():
        first = first.replace(hidden, ref.full_name)
    return first


def _failed(statement_id: str, code: str, message: str) -> dict[str, Any]:
    return {
        "statement_id": statement_id,
        "status": {"state": "FAILED", "error": {"error_code": code, "message": message}},
    }


def _succeeded(statement_id: str, result: StatementResult) -> dict[str, Any]:
    rows = len(result.rows)
    return {
        "statement_id": statement_id,
        "status": {"state": "SUCCEEDED"},
        "manifest": {
            "format": "JSON_ARRAY",
            "schema": {"column_count": len(result.columns), "columns": result.columns},
            "total_row_count": rows,
            "total_chunk_count": 1,
            "chunks": [{"chunk_index": 0, "row_offset": 0, "row_count": rows}],
            "truncated": result.truncated,
        },
        "result": {"chunk_index": 0, "row_offset": 0, "row_count": rows, "data_array": result.rows},
    }


_services: weakref.WeakKeyDictionary[Workspace, StatementService] = weakref.WeakKeyDictionary()
_services_lock = threading.Lock()


def statement_service(ws: Workspace) -> StatementService:
    """The one StatementService of a workspace (one locked DuckDB, one Delta handle cache)."""
    with _services_lock:
        service = _services.get(ws)
        if service is None:
            service = _services[ws] = StatementService(ws)
        return service
