"""Catalog tables stored as Delta at `warehouse/<catalog>/<schema>/<table>` (deltalake, local disk).

`DeltaStore` keeps one open `DeltaTable` handle per table: reopening costs about a millisecond
and every commit through a fresh handle replays the log, while `update_incremental()` on a kept
handle costs about 0.25 ms (FACTS.md). A handle is not safe to share across threads, so each one
has its own lock; the pyarrow datasets handed out are independent snapshots, free to use unlocked.
"""

from __future__ import annotations

import json
import shutil
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import pyarrow as pa
import pyarrow.dataset as pads
from deltalake import DeltaTable, write_deltalake
from deltalake.exceptions import TableNotFoundError

from agentdeploy.errors import AlreadyExists, InvalidParameterValue, NotFound
from agentdeploy.workspace.names import check_full_name

__all__ = ["DeltaStore", "WriteMode", "uc_columns", "uc_type", "table_parts"]

WriteMode = Literal["error", "append", "overwrite"]


def table_parts(full_name: str, *, field: str = "full_name") -> tuple[str, str, str]:
    """`catalog.schema.table`, checked and lower-cased (Unity Catalog names are case-insensitive)."""
    catalog, schema, table = check_full_name(field, full_name, parts=3)
    return catalog.lower(), schema.lower(), table.lower()


def uc_type(data_type: pa.DataType) -> tuple[str, str]:
    """(type_name, type_text) of an Arrow type as Unity Catalog names them (`LONG`, `bigint`)."""
    t = data_type
    if pa.types.is_boolean(t):
        return "BOOLEAN", "boolean"
    if pa.types.is_int8(t) or pa.types.is_uint8(t):
        return "BYTE", "tinyint"
    if pa.types.is_int16(t) or pa.types.is_uint16(t):
        return "SHORT", "smallint"
    if pa.types.is_int32(t) or pa.types.is_uint32(t):
        return "INT", "int"
    if pa.types.is_integer(t):
        return "LONG", "bigint"
    if pa.types.is_float16(t) or pa.types.is_float32(t):
        return "FLOAT", "float"
    if pa.types.is_floating(t):
        return "DOUBLE", "double"
    if pa.types.is_decimal(t):
        return "DECIMAL", f"decimal({t.precision},{t.scale})"
    if pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_string_view(t):
        return "STRING", "string"
    if pa.types.is_binary(t) or pa.types.is_large_binary(t) or pa.types.is_fixed_size_binary(t):
        return "BINARY", "binary"
    if pa.types.is_date(t):
        return "DATE", "date"
    if pa.types.is_timestamp(t):
        return "TIMESTAMP", "timestamp" if t.tz else "timestamp_ntz"
    if pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_fixed_size_list(t):
        return "ARRAY", f"array<{uc_type(t.value_type)[1]}>"
    if pa.types.is_map(t):
        return "MAP", f"map<{uc_type(t.key_type)[1]},{uc_type(t.item_type)[1]}>"
    if pa.types.is_struct(t):
        fields = ",".join(f"{t.field(i).name}:{uc_type(t.field(i).type)[1]}" for i in range(t.num_fields))
        return "STRUCT", f"struct<{fields}>"
    if pa.types.is_null(t):
        return "NULL", "void"
    return "STRING", str(t)


def uc_columns(schema: pa.Schema) -> list[dict[str, Any]]:
    """The `columns` list of a Unity Catalog TableInfo for an Arrow schema."""
    columns = []
    for position, f in enumerate(schema):
        type_name, type_text = uc_type(f.type)
        columns.append(
            {
                "name": f.name,
                "type_name": type_name,
                "type_text": type_text,
                "type_json": json.dumps(
                    {"name": f.name, "type": type_text, "nullable": f.nullable, "metadata": {}}
                ),
                "position": position,
                "nullable": f.nullable,
            }
        )
    return columns


def _delta_ready(data: pa.Table) -> pa.Table:
    """Delta has no unsigned or null-typed columns: widen them so any Parquet/CSV can be stored."""
    widen = {
        pa.uint8(): pa.int16(),
        pa.uint16(): pa.int32(),
        pa.uint32(): pa.int64(),
        pa.uint64(): pa.int64(),
    }
    fields = []
    for f in data.schema:
        if f.type in widen:
            f = f.with_type(widen[f.type])
        elif pa.types.is_null(f.type):
            f = f.with_type(pa.string())
        elif pa.types.is_large_string(f.type) or pa.types.is_string_view(f.type):
            f = f.with_type(pa.string())
        fields.append(f)
    schema = pa.schema(fields)
    return data if schema.equals(data.schema) else data.cast(schema)


@dataclass
class _Handle:
    table: DeltaTable
    lock: threading.Lock


class DeltaStore:
    """The Delta tables under one warehouse directory, with cached handles."""

    def __init__(self, warehouse_dir: Path) -> None:
        self.warehouse_dir = warehouse_dir
        self._handles: dict[tuple[str, str, str], _Handle] = {}
        self._lock = threading.Lock()

    def path(self, full_name: str) -> Path:
        catalog, schema, table = table_parts(full_name)
        return self.warehouse_dir / catalog / schema / table

    def exists(self, full_name: str) -> bool:
        return (self.path(full_name) / "_delta_log").is_dir()

    def write(self, full_name: str, data: pa.Table, *, mode: WriteMode = "error") -> DeltaTable:
        """Create (mode `error`), replace (`overwrite`) or add to (`append`) a table from Arrow data."""
        if data.num_columns == 0:
            raise InvalidParameterValue("The data has no columns; a table needs at least one.")
        path = self.path(full_name)
        if mode == "error" and self.exists(full_name):
            raise AlreadyExists(f"Table {full_name!r} already holds data; replace it or append to it.")
        if mode == "append" and not self.exists(full_name):
            raise NotFound(f"Table {full_name!r} has no data to append to; create it first.")
        path.mkdir(parents=True, exist_ok=True)
        key = table_parts(full_name)
        handle = self._cached(key)
        target: str | DeltaTable = handle.table if handle is not None else str(path)
        lock = handle.lock if handle is not None else threading.Lock()
        with lock:
            try:
                write_deltalake(
                    target,
                    _delta_ready(data),
                    mode=mode,
                    schema_mode="overwrite" if mode == "overwrite" else None,
                )
            except Exception as exc:  # schema mismatch on append and the like: the user's data
                if mode == "error" and not self.exists(full_name):
                    shutil.rmtree(path, ignore_errors=True)  # leave no empty table directory
                raise InvalidParameterValue(f"Cannot write table {full_name!r}: {exc}") from None
            if handle is not None:
                handle.table.update_incremental()
                return handle.table
        return self.open(full_name)

    def _cached(self, key: tuple[str, str, str]) -> _Handle | None:
        with self._lock:
            return self._handles.get(key)

    def open(self, full_name: str) -> DeltaTable:
        """The cached handle of a table, brought up to its newest version."""
        return self._open(full_name)[0]

    def _open(self, full_name: str) -> tuple[DeltaTable, threading.Lock]:
        key = table_parts(full_name)
        handle = self._cached(key)
        if handle is None:
            try:
                table = DeltaTable(str(self.path(full_name)))
            except TableNotFoundError:
                raise NotFound(
                    f"Table {full_name!r} has no data: create it with "
                    f"'agentdeploy tables create {full_name} --from FILE'."
                ) from None
            with self._lock:
                handle = self._handles.setdefault(key, _Handle(table, threading.Lock()))
            return handle.table, handle.lock
        with handle.lock:
            handle.table.update_incremental()  # other processes (the log writer) commit too
        return handle.table, handle.lock

    def dataset(self, full_name: str) -> pads.Dataset:
        """A snapshot of the table's newest version as a pyarrow dataset (scans push filters down)."""
        table, lock = self._open(full_name)
        with lock:
            return table.to_pyarrow_dataset()

    def schema(self, full_name: str) -> pa.Schema:
        return self.dataset(full_name).schema

    def columns(self, full_name: str) -> list[dict[str, Any]]:
        return uc_columns(self.schema(full_name))

    def drop(self, full_name: str) -> None:
        """Forget the handle and delete the table's files (for a table being deleted)."""
        key = table_parts(full_name)
        with self._lock:
            self._handles.pop(key, None)
        shutil.rmtree(self.path(full_name), ignore_errors=True)
