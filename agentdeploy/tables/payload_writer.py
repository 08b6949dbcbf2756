"""The payload writer: moves spooled payload records into the Delta payload tables.

Every `batch_interval_s` (or on `flush()`), it reads the records after its cursor from the spool,
groups them by destination table, and appends each group to its table in ONE Delta commit that
also records the application transaction `(spool.app_id, batch_end)`; then it acknowledges
`batch_end` to the spool, which may then delete the segments. On start the cursor is the spool's
acknowledged position, so whatever was spooled but not acknowledged is replayed. Before writing
a group it compares each record's end position with the table's recorded transaction version for
this spool: a record at or below it was committed before a crash (between the commit and the
acknowledgement) and is skipped, so a replay adds no duplicate.

Delta calls run on one dedicated thread, with each table's `DeltaTable` handle kept open (a
commit through an open handle costs about 5 ms, FACTS.md). The deltalake calls live here rather
than in `agentdeploy.tables.delta`, whose `DeltaStore.write` has no commit properties; only its
naming (`table_parts`, the warehouse layout) is shared.

A record that cannot be decoded (it passed its CRC, so a bug, not disk damage) is logged,
counted and skipped; a failed commit is logged and retried on the next tick from the same cursor.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from deltalake import CommitProperties, DeltaTable, Transaction, write_deltalake

from agentdeploy.errors import InvalidParameterValue
from agentdeploy.tables.delta import table_parts
from agentdeploy.tables.payload import (
    PAYLOAD_SCHEMA,
    PayloadRecord,
    Redactor,
    build_record,
    payload_table_name,
    records_to_arrow,
)
from agentdeploy.tables.spool import PayloadSpool, SpoolUnavailable

if TYPE_CHECKING:
    from agentdeploy.settings import Settings

__all__ = [
    "FinishedRequest",
    "PayloadSink",
    "PayloadWriter",
    "SpoolUnavailable",  # re-exported: what `PayloadSink.log` raises
    "WriterStats",
    "ensure_payload_table",
    "payload_table_path",
]

log = logging.getLogger(__name__)


@dataclass(slots=True)
class WriterStats:
    batches: int = 0
    commits: int = 0
    rows: int = 0
    duplicates_skipped: int = 0  # records already in their table (replay after a crash)
    bad_records: int = 0
    failures: int = 0
    tables_created: int = 0
    # Recent commits, for the bench and for health pages: (rows, seconds).
    recent_commits: collections.deque[tuple[int, float]] = field(
        default_factory=lambda: collections.deque(maxlen=10_000))


def payload_table_path(warehouse_dir: Path, full_name: str) -> Path:
    """Where a payload table lives: `warehouse/<catalog>/<schema>/<table>` (lower-cased)."""
    catalog, schema, table = table_parts(full_name)
    return warehouse_dir / catalog / schema / table


def ensure_payload_table(warehouse_dir: Path, full_name: str) -> DeltaTable:
    """Open the payload table, creating it with `PAYLOAD_SCHEMA` if it does not exist yet."""
    path = payload_table_path(warehouse_dir, full_name)
    if not (path / "_delta_log").is_dir():
        path.mkdir(parents=True, exist_ok=True)
        return DeltaTable.create(str(path), PAYLOAD_SCHEMA, mode="ignore", name=table_parts(full_name)[2])
    return DeltaTable(str(path))


class PayloadWriter:
    """Background task committing a spool's records to Delta. One per spool.

    `await start()` replays what the spool holds past its acknowledged position, then follows
    new appends; `await flush()` returns once everything appended before the call is committed;
    `await stop()` commits what it can and stops (call before `spool.close()`).
    """

    def __init__(
        self,
        spool: PayloadSpool,
        warehouse_dir: Path,
        *,
        batch_interval_s: float = 0.25,
        max_batch_records: int = 10_000,
        max_batch_bytes: int = 64 * 1024 * 1024,
    ) -> None:
        self.spool = spool
        self.warehouse_dir = Path(warehouse_dir)
        self.batch_interval_s = batch_interval_s
        self.max_batch_records = max_batch_records
        self.max_batch_bytes = max_batch_bytes
        self.stats = WriterStats()
        self.cursor = 0
        self._tables: dict[str, DeltaTable] = {}
        self._executor: concurrent.futures.ThreadPoolExecutor | None = None
        self._task: asyncio.Task[None] | None = None
        self._wake: asyncio.Event | None = None
        self._drain_lock: asyncio.Lock | None = None
        self._stopping = False
        self._failure_streak = 0
        self._retry_at = 0.0

    @classmethod
    def from_settings(cls, spool: PayloadSpool, settings: Settings) -> PayloadWriter:
        return cls(spool, settings.warehouse_dir)

    async def start(self) -> None:
        self.cursor = self.spool.acknowledged
        self._executor = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="payload-writer")
        self._wake = asyncio.Event()
        self._drain_lock = asyncio.Lock()
        self._task = asyncio.get_running_loop().create_task(self._run(), name="payload-writer")

    async def stop(self) -> None:
        if self._task is None:
            return
        self._stopping = True
        assert self._wake is not None
        self._wake.set()
        await self._task
        self._task = None
        assert self._executor is not None
        self._executor.shutdown(wait=True)
        self._executor = None

    async def flush(self) -> None:
        """Commit everything appended before this call; raises if a commit fails."""
        target = self.spool.end
        assert self._drain_lock is not None
        async with self._drain_lock:
            while self.cursor < target:
                if not await self._commit_next():
                    raise RuntimeError("payload writer: a commit failed; see the log")
            self._retry_at = 0.0

    async def _run(self) -> None:
        assert self._wake is not None and self._drain_lock is not None
        while not self._stopping:
            try:
                await asyncio.wait_for(self._wake.wait(), self.batch_interval_s)
            except TimeoutError:
                pass
            self._wake.clear()
            await self._drain()
        await self._drain()

    async def _drain(self) -> None:
        assert self._drain_lock is not None
        if time.monotonic() < self._retry_at:
            return
        async with self._drain_lock:
            while self.cursor < self.spool.end:
                if not await self._commit_next():
                    return  # retried on a later tick

    async def _commit_next(self) -> bool:
        """Commit the next batch; False if it failed or made no progress."""
        assert self._executor is not None
        cursor = self.cursor
        try:
            batch_end = await asyncio.get_running_loop().run_in_executor(
                self._executor, self._commit_batch, cursor)
        except Exception:
            self.stats.failures += 1
            self._failure_streak += 1
            # Back off (up to 5 s) so a lasting failure (disk, permissions) does not flood the log.
            self._retry_at = time.monotonic() + min(5.0, self.batch_interval_s * 2 ** self._failure_streak)
            log.exception("payload writer: committing the batch after position %d failed "
                          "(attempt %d); the records stay in the spool", cursor, self._failure_streak)
            return False
        self._failure_streak = 0
        self.spool.acknowledge(batch_end)
        self.cursor = batch_end
        return batch_end > cursor

    def _commit_batch(self, cursor: int) -> int:
        """Commit the records after `cursor` (one commit per table); returns the batch's end."""
        spooled, batch_end = self.spool.read(cursor, max_records=self.max_batch_records,
                                             max_bytes=self.max_batch_bytes)
        if batch_end <= cursor:
            return cursor
        groups: dict[str, list[tuple[int, PayloadRecord]]] = {}
        for item in spooled:
            try:
                record = PayloadRecord.decode(item.data)
                table_parts(record.table, field="table")
            except (ValueError, KeyError, TypeError, InvalidParameterValue) as exc:
                self.stats.bad_records += 1
                log.error("payload writer: skipping undecodable record at position %d: %s",
                          item.position, exc)
                continue
            groups.setdefault(record.table.lower(), []).append((item.end, record))
        app_id = self.spool.app_id
        if groups and app_id is None:
            raise RuntimeError("the spool has records but no id")
        for table_name, items in groups.items():
            assert app_id is not None
            try:
                table = self._table(table_name)
                committed_upto = table.transaction_version(app_id)
                fresh = [record for end, record in items if committed_upto is None or end > committed_upto]
                self.stats.duplicates_skipped += len(items) - len(fresh)
                if not fresh:
                    continue
                started = time.perf_counter()
                write_deltalake(
                    table, records_to_arrow(fresh), mode="append",
                    commit_properties=CommitProperties(app_transactions=[Transaction(app_id, batch_end)]),
                )
            except Exception:
                self._tables.pop(table_name, None)  # reopen next time (the table may have been dropped)
                raise
            self.stats.recent_commits.append((len(fresh), time.perf_counter() - started))
            self.stats.commits += 1
            self.stats.rows += len(fresh)
        self.stats.batches += 1
        return batch_end

    def _table(self, full_name: str) -> DeltaTable:
        table = self._tables.get(full_name)
        if table is None:
            existed = (payload_table_path(self.warehouse_dir, full_name) / "_delta_log").is_dir()
            table = ensure_payload_table(self.warehouse_dir, full_name)
            self.stats.tables_created += 0 if existed else 1
            self._tables[full_name] = table
        else:
            table.update_incremental()  # others may commit too (deletes, compaction)
        return table


class FinishedRequest(Protocol):
    """What the sink reads from a finished request: the fields of the gateway's
    `InferenceRecord` (matched by shape; `tables` does not import `serving`)."""

    databricks_request_id: str
    client_request_id: str | None
    endpoint_name: str
    served_entity_name: str | None
    entity_name: str | None
    entity_version: str | None
    requester: str
    timestamp_ms: int
    execution_time_ms: int
    status_code: int
    request: bytes
    response: bytes  # what the client got, without the trace
    trace: bytes | None
    inference_table: dict[str, Any] | None  # ai_gateway.inference_table_config


RedactorLookup = Callable[[FinishedRequest], Redactor | None]


class PayloadSink:
    """What the gateway holds: its spool and the writer draining it, started and stopped together.

        sink = PayloadSink.from_settings(settings, redactors=lookup)
        await sink.start()           # app start-up: replays what a crash left
        await sink.append(request)   # per request, BEFORE the response is sent (the gateway's
                                     # InferenceSink protocol); or sink.log(build_record(...))
        await sink.stop()            # shutdown (SIGTERM): commits what it can, fsyncs, closes

    `append()`/`log()` raise `SpoolUnavailable` (an `Unavailable`, HTTP 503) when the row cannot
    be spooled: answer the request with it instead of serving it unlogged. `redactors` maps a
    request to the `Redactor` of its served entity's known secret values (build those when the
    serving config changes, not per request).
    """

    def __init__(self, spool: PayloadSpool, writer: PayloadWriter, *, max_payload_bytes: int,
                 redactors: RedactorLookup | None = None) -> None:
        self.spool = spool
        self.writer = writer
        self.max_payload_bytes = max_payload_bytes
        self.redactors = redactors

    @classmethod
    def from_settings(cls, settings: Settings, *, redactors: RedactorLookup | None = None) -> PayloadSink:
        spool = PayloadSpool.from_settings(settings)
        return cls(spool, PayloadWriter.from_settings(spool, settings),
                   max_payload_bytes=settings.max_payload_bytes, redactors=redactors)

    async def append(self, request: FinishedRequest) -> None:
        """Spool the row of a finished request whose endpoint has inference tables enabled."""
        config = request.inference_table
        if not config or config.get("enabled") is False:
            return
        prefix = config.get("table_name_prefix") or request.endpoint_name
        await self.log(build_record(
            table=payload_table_name(config["catalog_name"], config["schema_name"], prefix),
            databricks_request_id=request.databricks_request_id,
            client_request_id=request.client_request_id,
            request=request.request,
            response=request.response,
            trace=request.trace,
            status_code=request.status_code,
            timestamp_ms=request.timestamp_ms,
            execution_time_ms=request.execution_time_ms,
            max_payload_bytes=self.max_payload_bytes,
            endpoint_name=request.endpoint_name,
            model_name=request.entity_name,
            model_version=request.entity_version,
            served_entity_name=request.served_entity_name,
            requester=request.requester,
            redactor=self.redactors(request) if self.redactors else None,
        ))

    async def start(self) -> None:
        await self.spool.start()
        await self.writer.start()

    async def stop(self) -> None:
        await self.writer.stop()
        await self.spool.close()

    async def log(self, record: PayloadRecord) -> None:
        """Spool one row (durable against a crash of this process once this returns)."""
        await self.spool.append(record.encode())

    async def flush(self) -> None:
        """Wait until every row logged so far is committed to its Delta table."""
        await self.writer.flush()

    @property
    def available(self) -> bool:
        return self.spool.available
