"""Table maintenance: compaction and checkpoints make reading fast, and nothing a reader still
needs (the formatter's unprocessed commits, an older snapshot) disappears."""

from __future__ import annotations

from pathlib import Path

import orjson
import polars as pl
import pytest
from deltalake import DeltaTable, write_deltalake

from agentdeploy.tables.formatting import ASSESSMENT_LOGS_SCHEMA, REQUEST_LOGS_SCHEMA, format_increment
from agentdeploy.tables.maintenance import MaintenancePolicy, last_checkpoint_version, maintain
from agentdeploy.tables.payload import PAYLOAD_SCHEMA, build_record, records_to_arrow


def _payload(root: Path, commits: int) -> DeltaTable:
    table = DeltaTable.create(str(root / "payload"), PAYLOAD_SCHEMA)
    for c in range(commits):
        write_deltalake(
            table,
            records_to_arrow(
                [
                    build_record(
                        table="main.a.t_payload",
                        databricks_request_id=f"r{c}-{i}",
                        request=orjson.dumps({"messages": [{"role": "user", "content": "q"}]}),
                        response=b'{"choices": [{"message": {"role": "assistant", "content": "a"}}]}',
                        trace=None,
                        status_code=200,
                        timestamp_ms=1_764_064_800_000 + c,
                        execution_time_ms=1,
                        max_payload_bytes=1 << 20,
                    )
                    for i in range(2)
                ]
            ),
            mode="append",
        )
    return table


def test_compaction_and_a_checkpoint_keep_every_row_and_leave_few_files(tmp_path: Path) -> None:
    table = _payload(tmp_path, 40)
    old_snapshot = DeltaTable(table.table_uri, version=table.version())
    report = maintain(table, policy=MaintenancePolicy(min_files=10), may_drop_history=True)
    assert report.compacted and report.checkpointed
    assert (report.files_before, report.files_after) == (40, 1)
    assert last_checkpoint_version(table) == table.version()
    assert pl.scan_delta(table.table_uri).select(pl.len()).collect().item() == 80
    # Vacuum ran, but the compacted-away files are younger than the retention: a reader holding
    # the snapshot from before compaction still reads all of them.
    assert report.vacuumed_files == 0
    assert old_snapshot.to_pyarrow_table().num_rows == 80


def test_below_the_thresholds_maintenance_does_nothing(tmp_path: Path) -> None:
    table = _payload(tmp_path, 3)
    version = table.version()
    report = maintain(table, policy=MaintenancePolicy(min_files=10, checkpoint_every=50))
    assert not report.compacted and not report.checkpointed and report.history_kept
    assert table.version() == version


def test_the_formatter_still_reads_commits_compacted_before_it_processed_them(tmp_path: Path) -> None:
    payload = _payload(tmp_path, 30)
    request_logs = DeltaTable.create(str(tmp_path / "request_logs"), REQUEST_LOGS_SCHEMA)
    assessment_logs = DeltaTable.create(str(tmp_path / "assessment_logs"), ASSESSMENT_LOGS_SCHEMA)
    format_increment(
        payload, request_logs, assessment_logs, app_id="f", max_versions=10, stop_after_commits=2
    )
    maintain(payload, policy=MaintenancePolicy(min_files=2), may_drop_history=False)
    done = format_increment(payload, request_logs, assessment_logs, app_id="f")
    assert done.watermarks["request_logs"] == payload.version()
    ids = pl.read_delta(str(tmp_path / "request_logs"))["databricks_request_id"]
    assert ids.len() == ids.n_unique() == 60


def test_a_retention_under_an_hour_is_refused() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        MaintenancePolicy(retention_hours=0)
