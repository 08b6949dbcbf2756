"""A simulated day of traffic through the spool, then table maintenance: how long counting the
payload table with `polars.scan_delta` takes before and after.

At least 50,000 rows go through the real path — `PayloadSpool.append` then the `PayloadWriter`
committing to Delta with its application transaction — flushed every `--rows-per-commit` rows,
so the table gets one small file and one commit per flush, as a day of steady traffic gives it.
Then `agentdeploy.tables.maintenance.maintain` (what the scheduled flow runs) compacts and
checkpoints it. Target: count under 100 ms after maintenance.

    .venv/bin/python bench/table_maintenance.py [--rows 50000] [--rows-per-commit 10]

Prints and writes bench/results/table_maintenance.json. Run on a quiet machine.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import orjson

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import polars as pl  # noqa: E402
from deltalake import DeltaTable  # noqa: E402

from agentdeploy.tables.maintenance import MaintenancePolicy, maintain  # noqa: E402
from agentdeploy.tables.payload import build_record, payload_table_name  # noqa: E402
from agentdeploy.tables.payload_writer import PayloadWriter, payload_table_path  # noqa: E402
from agentdeploy.tables.spool import PayloadSpool  # noqa: E402

TABLE = payload_table_name("main", "agents", "day")
TRACE = orjson.dumps(
    {
        "info": {"trace_id": "tr-x"},
        "data": {
            "spans": [
                {"name": f"span{i}", "attributes": {"inputs": "q" * 150, "outputs": "a" * 150}}
                for i in range(4)
            ]
        },
    }
)


def record(i: int) -> bytes:
    return build_record(
        table=TABLE,
        databricks_request_id=f"req-{i}",
        request=orjson.dumps({"input": [{"role": "user", "content": f"question {i}"}]}),
        response=orjson.dumps(
            {"output": [{"type": "message", "content": [{"type": "output_text", "text": "ok"}]}]}
        ),
        trace=TRACE,
        status_code=200,
        timestamp_ms=1_764_028_800_000 + i * 1728,
        execution_time_ms=9,
        max_payload_bytes=16 << 20,
        endpoint_name="agents_day",
        model_name="main.agents.day",
        model_version="1",
        served_entity_name="day_1",
    ).encode()


async def simulate_day(spool_dir: Path, warehouse: Path, rows: int, per_commit: int) -> dict[str, Any]:
    spool = PayloadSpool(spool_dir)
    await spool.start()
    writer = PayloadWriter(spool, warehouse, batch_interval_s=3600)  # flushed by hand, once per batch
    await writer.start()
    started = time.perf_counter()
    for start in range(0, rows, per_commit):
        for i in range(start, min(start + per_commit, rows)):
            await spool.append(record(i))
        await writer.flush()
    seconds = time.perf_counter() - started
    await writer.stop()
    await spool.close()
    return {
        "rows": rows,
        "commits": writer.stats.commits,
        "seconds": round(seconds, 1),
        "commit_ms_p50": round(statistics.median(s for _, s in writer.stats.recent_commits) * 1000, 2),
    }


def count_ms(path: str, repeats: int = 5) -> tuple[int, float]:
    """(rows, best ms) of `polars.scan_delta(path).select(pl.len())`, each from a fresh scan."""
    best = float("inf")
    rows = 0
    for _ in range(repeats):
        started = time.perf_counter()
        rows = pl.scan_delta(path).select(pl.len()).collect().item()
        best = min(best, time.perf_counter() - started)
    return rows, round(best * 1000, 2)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=50_000)
    parser.add_argument("--rows-per-commit", type=int, default=10)
    args = parser.parse_args()
    results: dict[str, Any] = {
        "machine": {
            "python": platform.python_version(),
            "cpus": os.cpu_count(),
            "load_at_start": os.getloadavg()[0],
        }
    }
    with tempfile.TemporaryDirectory(prefix="bench-maintenance-") as scratch:
        root = Path(scratch)
        warehouse = root / "warehouse"
        results["day"] = asyncio.run(simulate_day(root / "spool", warehouse, args.rows, args.rows_per_commit))
        print("day:", results["day"], flush=True)
        path = str(payload_table_path(warehouse, TABLE))
        table = DeltaTable(path)
        files_before = len(table.file_uris())
        rows, before_ms = count_ms(path)
        results["before"] = {
            "rows": rows,
            "files": files_before,
            "version": table.version(),
            "count_ms": before_ms,
        }
        print("before maintenance:", results["before"], flush=True)
        report = maintain(table, name=TABLE, policy=MaintenancePolicy(), may_drop_history=True)
        results["maintenance"] = report.to_dict()
        print("maintenance:", results["maintenance"], flush=True)
        rows_after, after_ms = count_ms(path)
        assert rows_after == rows == args.rows, (rows_after, rows, args.rows)
        results["after"] = {
            "rows": rows_after,
            "files": len(DeltaTable(path).file_uris()),
            "count_ms": after_ms,
            "target_ms": 100,
            "met": after_ms < 100,
        }
        print("after maintenance:", results["after"], flush=True)
    out = REPO / "bench" / "results" / "table_maintenance.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
