"""SQL results in the Databricks shape: `ColumnInfo` for DuckDB column types, and JSON_ARRAY cells
(every value a string, NULL as null, structs, maps and arrays as JSON text)."""

from __future__ import annotations

import base64
import datetime as dt
import decimal
import json
import math
from typing import Any

__all__ = ["duckdb_column", "json_cell"]

_TYPE_NAMES = {
    "boolean": ("BOOLEAN", "BOOLEAN"),
    "tinyint": ("BYTE", "TINYINT"),
    "smallint": ("SHORT", "SMALLINT"),
    "integer": ("INT", "INT"),
    "bigint": ("LONG", "BIGINT"),
    "utinyint": ("SHORT", "SMALLINT"),
    "usmallint": ("INT", "INT"),
    "uinteger": ("LONG", "BIGINT"),
    "ubigint": ("DECIMAL", "DECIMAL(20,0)"),
    "hugeint": ("DECIMAL", "DECIMAL(38,0)"),
    "uhugeint": ("DECIMAL", "DECIMAL(38,0)"),
    "float": ("FLOAT", "FLOAT"),
    "double": ("DOUBLE", "DOUBLE"),
    "varchar": ("STRING", "STRING"),
    "blob": ("BINARY", "BINARY"),
    "date": ("DATE", "DATE"),
    "timestamp": ("TIMESTAMP", "TIMESTAMP_NTZ"),
    "timestamp with time zone": ("TIMESTAMP", "TIMESTAMP"),
    "timestamp_ms": ("TIMESTAMP", "TIMESTAMP_NTZ"),
    "timestamp_ns": ("TIMESTAMP", "TIMESTAMP_NTZ"),
    "timestamp_s": ("TIMESTAMP", "TIMESTAMP_NTZ"),
    "interval": ("INTERVAL", "INTERVAL"),
    "null": ("NULL", "VOID"),
    "uuid": ("STRING", "STRING"),
    "time": ("STRING", "STRING"),
    "json": ("STRING", "STRING"),
}


def _type_text(t: Any) -> tuple[str, str]:
    kind = t.id
    if kind == "decimal":
        p, s = (v for _, v in t.children)
        return "DECIMAL", f"DECIMAL({p},{s})"
    if kind in ("list", "array"):
        return "ARRAY", f"ARRAY<{_type_text(t.children[0][1])[1]}>"
    if kind == "map":
        return "MAP", f"MAP<{_type_text(t.children[0][1])[1]}, {_type_text(t.children[1][1])[1]}>"
    if kind == "struct":
        inner = ", ".join(f"{name}: {_type_text(child)[1]}" for name, child in t.children)
        return "STRUCT", f"STRUCT<{inner}>"
    return _TYPE_NAMES.get(kind, ("STRING", "STRING"))


def duckdb_column(name: str, duck_type: Any, position: int) -> dict[str, Any]:
    """A Databricks `ColumnInfo` for a DuckDB result column."""
    type_name, type_text = _type_text(duck_type)
    column: dict[str, Any] = {
        "name": name,
        "type_name": type_name,
        "type_text": type_text,
        "position": position,
    }
    if type_name == "DECIMAL" and duck_type.id == "decimal":
        column["type_precision"], column["type_scale"] = (v for _, v in duck_type.children)
    return column


def _json_value(value: Any) -> Any:
    """A nested value as Databricks writes it inside a JSON_ARRAY cell holding a struct/map/array."""
    if isinstance(value, dict):
        return {str(k): _json_value(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_value(v) for v in value]
    if isinstance(value, bool | int | str) or value is None:
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    return json_cell(value)


def json_cell(value: Any) -> str | None:
    """One cell of a JSON_ARRAY result: every value is a string, NULL is null."""
    if value is None:
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | str):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "NaN"
        if math.isinf(value):
            return "Infinity" if value > 0 else "-Infinity"
        return repr(value)
    if isinstance(value, decimal.Decimal):
        return str(value)
    if isinstance(value, dt.datetime):
        if value.tzinfo is not None:
            return value.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"
        return value.strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3]
    if isinstance(value, dt.date | dt.time):
        return value.isoformat()
    if isinstance(value, dt.timedelta):
        return str(value)
    if isinstance(value, bytes | bytearray | memoryview):
        return base64.b64encode(bytes(value)).decode()
    if isinstance(value, dict | list | tuple):
        return json.dumps(_json_value(value), separators=(",", ":"), ensure_ascii=False)
    return str(value)
