"""The payload writer: rows visible within 2 s, one commit per table per batch, exactly once
across crashes (a real child process killed with SIGKILL mid-writing, then replay)."""

from __future__ import annotations

import asyncio
import json
import os
import select
import signal
import subprocess
import sys
import textwrap
import time
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import polars as pl
import pytest
from deltalake import DeltaTable

from agentdeploy.settings import Settings
from agentdeploy.tables.payload import PayloadRecord, Redactor, build_record, payload_table_name
from agentdeploy.tables.payload_writer import FinishedRequest, PayloadSink, PayloadWriter, payload_table_path
from agentdeploy.tables.spool import PayloadSpool
from tests.harness import REPO

TABLE = payload_table_name("main", "agents", "bot")
OTHER = payload_table_name("main", "agents", "other")


def record(i: int, table: str = TABLE) -> bytes:
    return build_record(
        table=table, databricks_request_id=f"req-{i:06d}", request=b'{"q": %d}' % i,
        response=b'{"a": %d}' % i, trace=b'{"spans": []}', status_code=200,
        timestamp_ms=int(time.time() * 1000), execution_time_ms=1, max_payload_bytes=1 << 20,
        endpoint_name="agents_bot",
    ).encode()


def ids_in(warehouse: Path, table: str = TABLE) -> list[str]:
    path = payload_table_path(warehouse, table)
    if not (path / "_delta_log").is_dir():
        return []
    return pl.scan_delta(str(path)).select("databricks_request_id").collect()[
        "databricks_request_id"].to_list()


def test_a_row_is_visible_to_polars_within_two_seconds_of_its_append(tmp_path: Path) -> None:
    settings = Settings(home=tmp_path)  # the gateway's way in: default batch interval and sync

    async def run() -> list[float]:
        sink = PayloadSink.from_settings(settings)
        await sink.start()
        lags = []
        try:
            for i in range(3):
                await sink.log(PayloadRecord.decode(record(i)))
                appended = time.monotonic()
                while f"req-{i:06d}" not in await asyncio.to_thread(ids_in, settings.warehouse_dir):
                    assert time.monotonic() - appended < 2.0, "row not visible within 2 s"
                    await asyncio.sleep(0.02)
                lags.append(time.monotonic() - appended)
        finally:
            await sink.stop()
        assert sink.spool.directory == settings.spool_dir and sink.spool.acknowledged == sink.spool.end
        return lags

    lags = asyncio.run(run())
    assert max(lags) < 2.0


def test_one_commit_per_table_per_batch_and_the_spool_trimmed_after_it(tmp_path: Path) -> None:
    async def run() -> None:
        spool = PayloadSpool(tmp_path / "spool", segment_bytes=2000)
        await spool.start()
        writer = PayloadWriter(spool, tmp_path / "warehouse", batch_interval_s=3600)
        await writer.start()
        try:
            for i in range(60):
                await spool.append(record(i, TABLE if i % 3 else OTHER))
            segments = spool.segment_paths()
            assert len(segments) > 3 and spool.acknowledged == 0
            await writer.flush()
            assert spool.acknowledged == spool.end
            assert [p for p in segments if p.exists()] == segments[-1:]  # only the active one left
        finally:
            await writer.stop()
            await spool.close()
        assert writer.stats.batches == 1 and writer.stats.commits == 2 and writer.stats.rows == 60

    asyncio.run(run())
    warehouse = tmp_path / "warehouse"
    assert len(ids_in(warehouse)) == 40 and len(ids_in(warehouse, OTHER)) == 20
    for table in (TABLE, OTHER):
        delta = DeltaTable(str(payload_table_path(warehouse, table)))
        assert delta.version() == 1  # created, then one append
        assert delta.transaction_version(spool_app_id(tmp_path / "spool")) is not None


def spool_app_id(directory: Path) -> str:
    return "agentdeploy-spool-" + (directory / "spool-id").read_text().strip()


def test_replay_after_commit_without_acknowledge_adds_no_duplicate(tmp_path: Path) -> None:
    async def write(n: int) -> None:
        spool = PayloadSpool(tmp_path / "spool")
        await spool.start()
        writer = PayloadWriter(spool, tmp_path / "warehouse", batch_interval_s=3600)
        await writer.start()
        for i in range(n):
            await spool.append(record(i))
        await writer.flush()
        await writer.stop()
        await spool.close()

    asyncio.run(write(100))
    # The crash came after the Delta commit and before the acknowledgement reached the disk.
    (tmp_path / "spool" / "acknowledged").write_text("0")

    async def replay() -> PayloadWriter:
        spool = PayloadSpool(tmp_path / "spool")
        await spool.start()
        writer = PayloadWriter(spool, tmp_path / "warehouse")
        await writer.start()
        await writer.flush()
        await writer.stop()
        await spool.close()
        return writer

    writer = asyncio.run(replay())
    assert writer.stats.duplicates_skipped == 100 and writer.stats.rows == 0
    ids = ids_in(tmp_path / "warehouse")
    assert len(ids) == len(set(ids)) == 100


CRASHING_GATEWAY = textwrap.dedent("""
    # Replays what an earlier run left, appends N records in one go, then reports while its writer
    # commits them in small batches, until the test kills it with SIGKILL.
    import asyncio, sys, time
    from pathlib import Path
    from agentdeploy.tables.payload import build_record
    from agentdeploy.tables.payload_writer import PayloadWriter
    from agentdeploy.tables.spool import PayloadSpool

    def record(i):  # as record() in the test module, without importing its test-only imports
        return build_record(
            table="main.agents.bot_payload", databricks_request_id=f"req-{i:06d}", request=b'{"q": %d}' % i,
            response=b'{"a": %d}' % i, trace=b'{"spans": []}', status_code=200,
            timestamp_ms=int(time.time() * 1000), execution_time_ms=1, max_payload_bytes=1 << 20,
            endpoint_name="agents_bot",
        ).encode()

    async def main(home, first, count):
        spool = PayloadSpool(home / "spool", segment_bytes=16 * 1024)
        await spool.start()
        writer = PayloadWriter(spool, home / "warehouse", batch_interval_s=0.005, max_batch_records=20)
        await writer.start()
        await writer.flush()  # the replay of the previous, killed run
        replayed = writer.stats.rows
        for i in range(first, first + count):
            await spool.append(record(i))
        print("appended", replayed, flush=True)
        while True:
            print("committed", writer.stats.rows - replayed, flush=True)
            await asyncio.sleep(0.002)

    asyncio.run(main(Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])))
""")


def run_until_killed(home: Path, first: int, count: int) -> tuple[int, int]:
    """Run one crashing gateway; SIGKILL it once a third of its records are committed.
    Returns (rows it replayed from the previous run, rows it reported committed)."""
    child = subprocess.Popen(
        [sys.executable, "-c", CRASHING_GATEWAY, str(home), str(first), str(count)],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True,
    )
    assert child.stdout is not None
    replayed, committed = -1, 0
    deadline = time.monotonic() + 60
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([child.stdout], [], [], 1.0)
            if not ready:
                assert child.poll() is None, child.stderr.read().decode() if child.stderr else ""
                continue
            line = child.stdout.readline().decode().split()
            assert line, child.stderr.read().decode() if child.stderr else "child exited"
            if line[0] == "appended":
                replayed = int(line[1])
            elif line[0] == "committed":
                committed = int(line[1])
                if committed >= count // 3:
                    os.kill(child.pid, signal.SIGKILL)  # mid-writing: the writer is still busy
                    child.wait(10)
                    return replayed, committed
        raise AssertionError("the child never committed a third of its records")
    finally:
        if child.poll() is None:
            os.kill(child.pid, signal.SIGKILL)
            child.wait(10)


def test_kill_9_mid_writing_then_replay_gives_exactly_one_row_per_record(tmp_path: Path) -> None:
    count, cycles, total, cut_short = 400, 2, 0, 0
    for cycle in range(cycles):
        before = len(ids_in(tmp_path / "warehouse"))
        replayed, _ = run_until_killed(tmp_path, total, count)
        if cycle:
            assert replayed == total - before  # this run finished the previous run's records
        total += count
        after = ids_in(tmp_path / "warehouse")
        assert total - count < len(after) <= total, (cycle, len(after), total)
        assert len(after) == len(set(after))
        cut_short += len(after) < total  # some records were only spooled when it died
    assert cut_short, "every run committed everything before the kill: the crash tested nothing"

    async def replay() -> None:
        spool = PayloadSpool(tmp_path / "spool")
        await spool.start()
        writer = PayloadWriter(spool, tmp_path / "warehouse")
        await writer.start()
        await writer.flush()
        await writer.stop()
        await spool.close()

    asyncio.run(replay())
    ids = ids_in(tmp_path / "warehouse")
    assert len(ids) == total
    assert sorted(ids) == [f"req-{i:06d}" for i in range(total)]  # every record once, none twice


def test_an_undecodable_record_is_skipped_and_counted_without_blocking_the_rest(tmp_path: Path) -> None:
    async def run() -> PayloadWriter:
        spool = PayloadSpool(tmp_path / "spool")
        await spool.start()
        writer = PayloadWriter(spool, tmp_path / "warehouse", batch_interval_s=3600)
        await writer.start()
        await spool.append(record(0))
        await spool.append(b"not a payload record")
        await spool.append(record(1, table="main.agents/../x_payload"))  # a path, not a table name
        await spool.append(record(2))
        await writer.flush()
        assert spool.acknowledged == spool.end
        await writer.stop()
        await spool.close()
        return writer

    writer = asyncio.run(run())
    assert writer.stats.bad_records == 2
    assert sorted(ids_in(tmp_path / "warehouse")) == ["req-000000", "req-000002"]


def test_a_failed_commit_keeps_the_records_and_a_later_attempt_commits_them(tmp_path: Path) -> None:
    warehouse = tmp_path / "warehouse"
    schema_dir = payload_table_path(warehouse, TABLE).parent
    schema_dir.mkdir(parents=True)
    if os.geteuid() == 0:
        if subprocess.run(["chattr", "+i", str(schema_dir)]).returncode:
            pytest.skip("running as root without chattr: cannot make a directory read-only")
        undo = ["chattr", "-i", str(schema_dir)]
    else:
        schema_dir.chmod(0o555)
        undo = ["chmod", "755", str(schema_dir)]

    async def run() -> PayloadWriter:
        spool = PayloadSpool(tmp_path / "spool")
        await spool.start()
        writer = PayloadWriter(spool, warehouse, batch_interval_s=3600)
        await writer.start()
        try:
            for i in range(5):
                await spool.append(record(i))
            with pytest.raises(RuntimeError, match="commit failed"):
                await writer.flush()  # the table cannot be created: nothing acknowledged
            assert spool.acknowledged == 0 and writer.stats.failures >= 1
        finally:
            subprocess.run(undo, check=True)
        await writer.flush()
        await writer.stop()
        await spool.close()
        return writer

    try:
        writer = asyncio.run(run())
    finally:
        subprocess.run(undo)
    assert writer.stats.rows == 5
    assert sorted(ids_in(warehouse)) == [f"req-{i:06d}" for i in range(5)]


@dataclass
class Finished:
    """A finished request, shaped like the gateway's InferenceRecord."""

    databricks_request_id: str
    request: bytes
    response: bytes
    trace: bytes | None
    inference_table: dict[str, Any] | None
    status_code: int = 200
    client_request_id: str | None = None
    endpoint_name: str = "agents_main-agents-bot"
    served_entity_name: str | None = "bot_1"
    entity_name: str | None = "main.agents.bot"
    entity_version: str | None = "1"
    requester: str = "alice@example.com"
    timestamp_ms: int = field(default_factory=lambda: int(time.time() * 1000))
    execution_time_ms: int = 4


def test_sink_append_logs_finished_requests_of_endpoints_with_tables_on(tmp_path: Path) -> None:
    config = {"catalog_name": "main", "schema_name": "agents", "table_name_prefix": "bot", "enabled": True}
    redactor = Redactor(["s3cr3t-value"])

    async def run() -> None:
        sink = PayloadSink.from_settings(Settings(home=tmp_path), redactors=lambda r: redactor)
        await sink.start()
        try:
            await sink.append(Finished("r-1", b'{"input": "s3cr3t-value"}', b'{"output": []}',
                                       b'{"spans": ["s3cr3t-value"]}', config))
            await sink.append(Finished("r-2", b"{}", b'{"error_code": "X", "message": "m"}', None, config,
                                       status_code=503))
            await sink.append(Finished("r-3", b"{}", b"{}", None, {**config, "enabled": False}))
            await sink.append(Finished("r-4", b"{}", b"{}", None, None))
            await sink.flush()
        finally:
            await sink.stop()

    asyncio.run(run())
    frame = pl.read_delta(str(payload_table_path(tmp_path / "warehouse", TABLE)))
    frame = frame.sort("databricks_request_id")
    assert frame["databricks_request_id"].to_list() == ["r-1", "r-2"]
    first = frame.row(0, named=True)
    assert first["request"] == '{"input": "[REDACTED]"}'
    assert json.loads(first["response"])["databricks_output"]["trace"] == {"spans": ["[REDACTED]"]}
    assert dict(first["request_metadata"]) == {"endpoint_name": "agents_main-agents-bot",
                                                "model_name": "main.agents.bot", "model_version": "1",
                                                "served_entity_name": "bot_1"}
    assert first["requester"] == "alice@example.com" and first["served_entity_name"] == "bot_1"
    assert frame["status_code"].to_list() == [200, 503]


def test_the_gateways_record_has_every_field_the_sink_reads() -> None:
    gateway = pytest.importorskip("agentdeploy.serving.gateway")
    record_fields = {f.name for f in fields(gateway.InferenceRecord)}
    assert set(FinishedRequest.__annotations__) <= record_fields
