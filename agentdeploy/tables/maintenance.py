"""Keeping inference tables fast to read: compaction, checkpoints, and cleanup of old files.

The payload writer commits once per spool flush (a few per second under load), so a day of
traffic is thousands of small Parquet files and log entries; reading the table then costs a file
open per commit. `maintain()` is cheap to call often (each scheduled formatting run calls it): it
compacts only past `min_files` data files, checkpoints only when compaction rewrote the table or
the log grew `checkpoint_every` commits past the last checkpoint, and only removes files and log
entries that no reader still needs.

Why nothing needed is ever removed:

- Compaction rewrites committed rows into bigger files in a commit with `dataChange=false`;
  the spool writer only ever appends, and it trims its spool only after its own commit holds the
  rows (agentdeploy/tables/payload_writer.py), so a row is in the spool or in a committed file at
  every moment and compaction (which reads committed files only) cannot lose one. An append
  racing a compaction commits on top of it (delta-rs' conflict check lets blind appends through).
- `vacuum` deletes only files removed from the table more than `retention_hours` ago (default
  the Delta default, 7 days; never below 1 hour), so a reader that opened an older snapshot
  (a running query, a slow formatter) still finds its files.
- The formatter and the MLflow export read each commit's *added* files through the change feed,
  including files compaction removed since. So `vacuum` and `cleanup_metadata` run on a table
  only when `may_drop_history` says every incremental reader has processed the table up to the
  version seen before this maintenance began; files removed by a later commit are younger than
  the retention and survive until a later run, when the readers have caught up again.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from typing import Any

from deltalake import DeltaTable

__all__ = ["MaintenancePolicy", "MaintenanceReport", "maintain", "last_checkpoint_version"]

MIN_RETENTION_HOURS = 1


@dataclass(frozen=True)
class MaintenancePolicy:
    min_files: int = 32  # compact when the table has at least this many data files
    checkpoint_every: int = 50  # commits since the last checkpoint that make one due
    retention_hours: int = 168  # Delta's default `deletedFileRetentionDuration`
    target_size: int | None = None  # bytes per compacted file; delta-rs' default (100 MiB) if None

    def __post_init__(self) -> None:
        if self.retention_hours < MIN_RETENTION_HOURS:
            raise ValueError(f"retention_hours must be at least {MIN_RETENTION_HOURS}: readers may still "
                             "need files removed in the last hour")


@dataclass
class MaintenanceReport:
    table: str
    version_before: int
    files_before: int
    files_after: int
    compacted: bool = False
    checkpointed: bool = False
    vacuumed_files: int = 0
    history_kept: bool = False  # vacuum and log cleanup skipped: a reader still needs the history
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def last_checkpoint_version(table: DeltaTable) -> int:
    """The version of the table's last checkpoint (from `_delta_log/_last_checkpoint`), -1 if none."""
    import pyarrow.fs as pafs

    filesystem, root = pafs.FileSystem.from_uri(table.table_uri)
    try:
        with filesystem.open_input_stream(f"{root.rstrip('/')}/_delta_log/_last_checkpoint") as stream:
            return int(json.loads(stream.read())["version"])
    except (FileNotFoundError, OSError, ValueError, KeyError):
        return -1


def maintain(table: DeltaTable, *, name: str = "", policy: MaintenancePolicy | None = None,
             may_drop_history: bool = False) -> MaintenanceReport:
    """Compact, checkpoint and (when `may_drop_history`) vacuum and clean up the log of `table`."""
    policy = policy or MaintenancePolicy()
    started = time.perf_counter()
    table.update_incremental()
    version = table.version()
    files = len(table.file_uris())
    report = MaintenanceReport(table=name or table.table_uri, version_before=version,
                               files_before=files, files_after=files)
    if files >= policy.min_files:
        metrics = table.optimize.compact(target_size=policy.target_size)
        report.compacted = int(metrics.get("numFilesRemoved", 0)) > 0
    table.update_incremental()
    if report.compacted or table.version() - last_checkpoint_version(table) >= policy.checkpoint_every:
        table.create_checkpoint()
        report.checkpointed = True
    if may_drop_history:
        removed = table.vacuum(retention_hours=policy.retention_hours, dry_run=False,
                               enforce_retention_duration=False)
        report.vacuumed_files = len(removed)
        # Drops log entries older than the table's logRetentionDuration (30 days by default) that
        # a checkpoint already covers.
        table.cleanup_metadata()
    else:
        report.history_kept = True
    table.update_incremental()
    report.files_after = len(table.file_uris())
    report.seconds = round(time.perf_counter() - started, 3)
    return report
