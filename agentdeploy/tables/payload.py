"""The payload row: one per request to an endpoint with inference tables on.

The gateway builds a `PayloadRecord` on the request path with `build_record()` (redaction and
truncation happen there, both cheap: a substring search per known secret, and nothing at all for
payloads under the limit), spools `record.encode()`, and the payload writer later turns records
into Arrow rows of `PAYLOAD_SCHEMA` with `records_to_arrow()` — merging the trace into the
response under `databricks_output.trace`, which costs a JSON parse and is kept off the request path.

Spool encoding (measured in bench/spool_throughput.py: several times faster than one JSON
document, because request and response bodies are carried as raw bytes instead of escaped):

    version u8 | header_len u32 | request_len u32 | response_len u32 | trace_len i32 (-1: none)
    header (JSON: the scalar columns and the table name) | request | response | trace

Truncation (limit `max_payload_bytes`, 16 MiB by default): the request and the response-with-trace
each get the limit. When the response and its trace exceed it, the trace goes first (replaced by
`{"truncated": true, "size_bytes": n}`); if the response alone still exceeds it, it is replaced by
`{"truncated": true, "size_bytes": n, "prefix": "<its first bytes>"}` — so every logged request
and response stays valid JSON. Each cut adds `MAX_REQUEST_SIZE_EXCEEDED` or
`MAX_RESPONSE_SIZE_EXCEEDED` to `logging_error_codes`: a row is never dropped for its size.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson
import pyarrow as pa

__all__ = [
    "PAYLOAD_SCHEMA",
    "MAX_REQUEST_SIZE_EXCEEDED",
    "MAX_RESPONSE_SIZE_EXCEEDED",
    "REDACTED",
    "PayloadRecord",
    "Redactor",
    "build_record",
    "payload_table_name",
    "records_to_arrow",
    "response_with_trace",
]

MAX_REQUEST_SIZE_EXCEEDED = "MAX_REQUEST_SIZE_EXCEEDED"
MAX_RESPONSE_SIZE_EXCEEDED = "MAX_RESPONSE_SIZE_EXCEEDED"
REDACTED = "[REDACTED]"
METADATA_KEYS = ("endpoint_name", "model_name", "model_version", "served_entity_name")

PAYLOAD_SCHEMA = pa.schema([
    pa.field("databricks_request_id", pa.string()),
    pa.field("client_request_id", pa.string()),
    pa.field("date", pa.date32()),
    pa.field("timestamp_ms", pa.int64()),
    pa.field("status_code", pa.int32()),
    pa.field("execution_time_ms", pa.int64()),
    pa.field("request", pa.string()),
    pa.field("response", pa.string()),
    pa.field("sampling_fraction", pa.float64()),
    pa.field("request_metadata", pa.map_(pa.string(), pa.string())),
    pa.field("served_entity_name", pa.string()),
    pa.field("logging_error_codes", pa.list_(pa.string())),
    pa.field("requester", pa.string()),
])

_FORMAT_VERSION = 1
_PREFIX = struct.Struct("<BIIIi")
_MS_PER_DAY = 86_400_000


def payload_table_name(catalog: str, schema: str, table_name_prefix: str) -> str:
    """`{catalog}.{schema}.{prefix}_payload`, the Databricks name of an endpoint's payload table."""
    return f"{catalog}.{schema}.{table_name_prefix}_payload"


class Redactor:
    """Replaces known secret values with `[REDACTED]` in raw bytes.

    Built once per served entity (not per request) from the resolved secret values. Each value is
    also matched in its JSON-escaped form, since that is how it appears inside a JSON body.
    """

    def __init__(self, secrets: Iterable[str]) -> None:
        patterns: set[bytes] = set()
        for value in secrets:
            if not value:
                continue
            patterns.add(value.encode())
            # As it appears inside a JSON string, escaped by orjson or by json.dumps (ensure_ascii).
            patterns.add(orjson.dumps(value)[1:-1])
            patterns.add(json.dumps(value)[1:-1].encode())
        # Longest first, so a secret that contains another one is replaced whole.
        self.patterns: tuple[bytes, ...] = tuple(sorted(patterns, key=len, reverse=True))

    def __bool__(self) -> bool:
        return bool(self.patterns)

    def __call__(self, data: bytes) -> bytes:
        for pattern in self.patterns:
            if pattern in data:
                data = data.replace(pattern, b"[REDACTED]")
        return data


@dataclass(slots=True)  # not frozen: a frozen dataclass costs ~5x more to build, on the request path
class PayloadRecord:
    """One payload row as the gateway knows it; `encode()` is what goes into the spool."""

    table: str  # full name of the destination table, catalog.schema.prefix_payload
    databricks_request_id: str
    timestamp_ms: int
    status_code: int
    execution_time_ms: int
    request: bytes
    response: bytes
    trace: bytes | None = None
    client_request_id: str | None = None
    sampling_fraction: float = 1.0
    request_metadata: Mapping[str, str] = field(default_factory=dict)
    served_entity_name: str | None = None
    logging_error_codes: tuple[str, ...] = ()
    requester: str | None = None

    def encode(self) -> bytes:
        header = orjson.dumps({
            "table": self.table,
            "databricks_request_id": self.databricks_request_id,
            "client_request_id": self.client_request_id,
            "timestamp_ms": self.timestamp_ms,
            "status_code": self.status_code,
            "execution_time_ms": self.execution_time_ms,
            "sampling_fraction": self.sampling_fraction,
            "request_metadata": dict(self.request_metadata),
            "served_entity_name": self.served_entity_name,
            "logging_error_codes": list(self.logging_error_codes),
            "requester": self.requester,
        })
        trace = self.trace
        prefix = _PREFIX.pack(_FORMAT_VERSION, len(header), len(self.request), len(self.response),
                              -1 if trace is None else len(trace))
        return b"".join((prefix, header, self.request, self.response, trace or b""))

    @classmethod
    def decode(cls, data: bytes) -> PayloadRecord:
        """The record `encode()` produced; ValueError if `data` is not one."""
        try:
            version, header_len, request_len, response_len, trace_len = _PREFIX.unpack_from(data)
        except struct.error:
            raise ValueError("payload record too short") from None
        if version != _FORMAT_VERSION:
            raise ValueError(f"unknown payload record version {version}")
        at = _PREFIX.size
        body_len = header_len + request_len + response_len + max(trace_len, 0)
        if at + body_len != len(data):
            raise ValueError("payload record lengths do not add up")
        try:
            header = orjson.loads(data[at:at + header_len])
        except orjson.JSONDecodeError as exc:
            raise ValueError(f"payload record header is not JSON: {exc}") from None
        at += header_len
        request = data[at:at + request_len]
        at += request_len
        response = data[at:at + response_len]
        at += response_len
        trace = data[at:at + trace_len] if trace_len >= 0 else None
        return cls(
            table=header["table"],
            databricks_request_id=header["databricks_request_id"],
            client_request_id=header.get("client_request_id"),
            timestamp_ms=header["timestamp_ms"],
            status_code=header["status_code"],
            execution_time_ms=header["execution_time_ms"],
            request=request,
            response=response,
            trace=trace,
            sampling_fraction=header.get("sampling_fraction", 1.0),
            request_metadata=header.get("request_metadata") or {},
            served_entity_name=header.get("served_entity_name"),
            logging_error_codes=tuple(header.get("logging_error_codes") or ()),
            requester=header.get("requester"),
        )


def build_record(
    *,
    table: str,
    databricks_request_id: str,
    request: bytes,
    response: bytes,
    trace: bytes | None,
    status_code: int,
    timestamp_ms: int,
    execution_time_ms: int,
    max_payload_bytes: int,
    endpoint_name: str | None = None,
    model_name: str | None = None,
    model_version: str | None = None,
    served_entity_name: str | None = None,
    client_request_id: str | None = None,
    requester: str | None = None,
    sampling_fraction: float = 1.0,
    redactor: Redactor | None = None,
) -> PayloadRecord:
    """The row for one request, redacted and cut to `max_payload_bytes` (see the module doc).

    `request` is the body the client sent, `response` the body sent back (or the error body),
    `trace` the MLflow trace as JSON bytes if the worker produced one.
    """
    # Bodies are logged as strings, so they become UTF-8 anyway; doing it here also keeps the
    # byte 0xFF (never in UTF-8) out of the spool, where it starts every frame's magic.
    request, response = _utf8(request), _utf8(response)
    if trace is not None:
        trace = _utf8(trace)
    if redactor:
        request = redactor(request)
        response = redactor(response)
        if trace is not None:
            trace = redactor(trace)
    codes: list[str] = []
    if len(request) > max_payload_bytes:
        request = _truncated(request, max_payload_bytes)
        codes.append(MAX_REQUEST_SIZE_EXCEEDED)
    trace_len = len(trace) if trace is not None else 0
    if len(response) + trace_len > max_payload_bytes:
        if trace is not None:
            trace = orjson.dumps({"truncated": True, "size_bytes": trace_len})
            trace_len = len(trace)
        if len(response) + trace_len > max_payload_bytes:
            response = _truncated(response, max(max_payload_bytes - trace_len, 0))
        codes.append(MAX_RESPONSE_SIZE_EXCEEDED)
    metadata = {key: value for key, value in (
        ("endpoint_name", endpoint_name), ("model_name", model_name),
        ("model_version", model_version), ("served_entity_name", served_entity_name),
    ) if value is not None}
    return PayloadRecord(
        table=table,
        databricks_request_id=databricks_request_id,
        client_request_id=client_request_id,
        timestamp_ms=timestamp_ms,
        status_code=status_code,
        execution_time_ms=execution_time_ms,
        request=request,
        response=response,
        trace=trace,
        sampling_fraction=sampling_fraction,
        request_metadata=metadata,
        served_entity_name=served_entity_name,
        logging_error_codes=tuple(codes),
        requester=requester,
    )


def _utf8(data: bytes) -> bytes:
    if not data.isascii():  # the common case, ASCII JSON, costs one fast scan
        data = data.decode("utf-8", "replace").encode()
    return data


def _truncated(data: bytes, limit: int) -> bytes:
    """A JSON stand-in of at most about `limit` bytes holding the start of `data` as text."""
    keep = max(limit - 128, 0)
    while True:
        prefix = data[:keep].decode("utf-8", "ignore")  # 'ignore' drops a character cut in half
        out = orjson.dumps({"truncated": True, "size_bytes": len(data), "prefix": prefix})
        if len(out) <= limit or keep == 0:
            return out
        keep = max(keep - (len(out) - limit) - 16, 0)  # escaping grew it: cut more


def response_with_trace(response: bytes, trace: bytes | None) -> str:
    """The logged response: the body as JSON with the trace under `databricks_output.trace`.

    A body that is not a JSON object is kept under `raw_response` so the trace still has its
    place: as JSON if it is JSON (a stream's array of chunks), else as text (a proxy's HTML).
    """
    try:
        body: Any = orjson.loads(response)
    except orjson.JSONDecodeError:
        body = {"raw_response": response.decode("utf-8", "replace")}
    if not isinstance(body, dict):
        body = {"raw_response": body}
    trace_value: Any = None
    if trace is not None:
        try:
            trace_value = orjson.loads(trace)
        except orjson.JSONDecodeError:
            trace_value = trace.decode("utf-8", "replace")
    output = body.get("databricks_output")
    body["databricks_output"] = {**output, "trace": trace_value} if isinstance(output, dict) \
        else {"trace": trace_value}
    return orjson.dumps(body).decode()


def records_to_arrow(records: Sequence[PayloadRecord]) -> pa.Table:
    """The rows of `records` as an Arrow table of `PAYLOAD_SCHEMA`."""
    timestamps = [r.timestamp_ms for r in records]
    columns: dict[str, pa.Array] = {
        "databricks_request_id": pa.array([r.databricks_request_id for r in records], pa.string()),
        "client_request_id": pa.array([r.client_request_id for r in records], pa.string()),
        "date": pa.array([t // _MS_PER_DAY for t in timestamps], pa.int32()).cast(pa.date32()),
        "timestamp_ms": pa.array(timestamps, pa.int64()),
        "status_code": pa.array([r.status_code for r in records], pa.int32()),
        "execution_time_ms": pa.array([r.execution_time_ms for r in records], pa.int64()),
        "request": pa.array([r.request.decode("utf-8", "replace") for r in records], pa.string()),
        "response": pa.array([response_with_trace(r.response, r.trace) for r in records], pa.string()),
        "sampling_fraction": pa.array([r.sampling_fraction for r in records], pa.float64()),
        "request_metadata": pa.array([list(r.request_metadata.items()) for r in records],
                                     pa.map_(pa.string(), pa.string())),
        "served_entity_name": pa.array([r.served_entity_name for r in records], pa.string()),
        "logging_error_codes": pa.array([list(r.logging_error_codes) for r in records],
                                        pa.list_(pa.string())),
        "requester": pa.array([r.requester for r in records], pa.string()),
    }
    return pa.table(columns, schema=PAYLOAD_SCHEMA)
