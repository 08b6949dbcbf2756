"""Inference-log formatting: rows per second, traces exported per second, and formatting lag.

1. Formatting rate, pure: payload rows (ResponsesAgent request, answer, a real ~4 KB MLflow trace
   captured as the worker captures it) -> request-log rows, in memory.
2. Formatting rate, end to end: `format_increment` over a Delta payload table of many commits
   into the Delta request and assessment logs (reads through the change feed, one commit per
   chunk with its watermark).
3. Traces exported per second: `export_traces` into a real `mlflow server` (sqlite store).
4. Lag under steady traffic: a writer appends a payload commit every 0.25 s (as the payload
   writer does) at `--rate` rows/s for `--duration` s; a formatter runs `format_increment` every
   `--interval` s (default: settings.format_interval_s, the deployment's schedule). Lag of a row =
   the moment its request-log commit finished - the moment its payload commit finished. This loop
   stands for the schedule; a served Prefect deployment adds its run start-up on top (FACTS.md:
   about 2 s with a 1 s runner poll), reported beside the figures, not measured here.

    .venv/bin/python bench/format_throughput.py [--rows 20000] [--duration 150] [--interval 30]

Prints and writes bench/results/format_throughput.json. Run on a quiet machine.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import orjson

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from deltalake import DeltaTable, write_deltalake  # noqa: E402

from agentdeploy.settings import get_settings  # noqa: E402
from agentdeploy.tables.formatting import (  # noqa: E402
    ASSESSMENT_LOGS_SCHEMA,
    REQUEST_LOGS_SCHEMA,
    format_increment,
    format_request_logs,
)
from agentdeploy.tables.payload import PAYLOAD_SCHEMA, build_record, records_to_arrow  # noqa: E402

TABLE = "main.agents.bench_payload"
CAPTURE = """
import json
from agentdeploy.serving.tracing import enable_request_traces, pop_trace, request_context
enable_request_traces()
import mlflow

@mlflow.trace(span_type="AGENT")
def agent(question):
    with mlflow.start_span("retrieve", span_type="RETRIEVER") as span:
        span.set_outputs([{"page_content": "Passwords are reset from settings. " * 20, "metadata": {"doc": i}}
                          for i in range(3)])
    with mlflow.start_span("llm", span_type="CHAT_MODEL") as span:
        span.set_inputs({"messages": [{"role": "user", "content": question}]})
        span.set_outputs({"content": "Open settings, choose security, then reset. " * 10})
    return "Open settings, choose security, then reset."

with request_context("bench"):
    agent("How do I reset my password?")
print(json.dumps(pop_trace("bench")))
"""


def capture_trace() -> bytes:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "AGENTDEPLOY_"))}
    done = subprocess.run(
        [sys.executable, "-c", CAPTURE],
        capture_output=True,
        text=True,
        check=True,
        cwd=str(REPO),
        env=env,
        timeout=300,
    )
    return done.stdout.strip().splitlines()[-1].encode()


def records(trace: bytes, start: int, n: int, now_ms: int | None = None) -> list[Any]:
    out = []
    for i in range(start, start + n):
        out.append(
            build_record(
                table=TABLE,
                databricks_request_id=f"req-{i}",
                request=orjson.dumps(
                    {
                        "input": [{"role": "user", "content": f"How do I reset my password? #{i}"}],
                        "context": {"conversation_id": f"conv-{i % 97}"},
                    }
                ),
                response=orjson.dumps(
                    {
                        "output": [
                            {
                                "type": "message",
                                "id": f"m{i}",
                                "role": "assistant",
                                "content": [
                                    {
                                        "type": "output_text",
                                        "text": "Open settings, choose security, then reset.",
                                    }
                                ],
                            }
                        ]
                    }
                ),
                trace=trace,
                status_code=200,
                timestamp_ms=now_ms or int(time.time() * 1000),
                execution_time_ms=12,
                max_payload_bytes=16 << 20,
                endpoint_name="agents_bench",
                model_name="main.agents.bench",
                model_version="1",
                served_entity_name="bench_1",
            )
        )
    return out


def pure_rate(trace: bytes, rows: int) -> dict[str, Any]:
    payload = records_to_arrow(records(trace, 0, rows))
    best = float("inf")
    for _ in range(3):
        started = time.perf_counter()
        out = format_request_logs(payload)
        best = min(best, time.perf_counter() - started)
    assert out.num_rows == rows
    return {
        "rows": rows,
        "seconds": round(best, 3),
        "rows_per_s": round(rows / best),
        "payload_row_bytes": round(payload.nbytes / rows),
    }


def tables(root: Path) -> tuple[DeltaTable, DeltaTable, DeltaTable]:
    return (
        DeltaTable.create(str(root / "payload"), PAYLOAD_SCHEMA),
        DeltaTable.create(str(root / "request_logs"), REQUEST_LOGS_SCHEMA),
        DeltaTable.create(str(root / "assessment_logs"), ASSESSMENT_LOGS_SCHEMA),
    )


def end_to_end_rate(trace: bytes, rows: int, root: Path) -> dict[str, Any]:
    payload, request_logs, assessment_logs = tables(root)
    per_commit = 500
    for start in range(0, rows, per_commit):
        write_deltalake(payload, records_to_arrow(records(trace, start, per_commit)), mode="append")
    started = time.perf_counter()
    progress = format_increment(payload, request_logs, assessment_logs, app_id="bench")
    seconds = time.perf_counter() - started
    return {
        "rows": progress.request_rows,
        "payload_commits": rows // per_commit,
        "log_commits": progress.commits,
        "seconds": round(seconds, 3),
        "rows_per_s": round(progress.request_rows / seconds),
    }


def export_rate(root: Path, traces: int) -> dict[str, Any]:
    """Traces per second into a real MLflow tracking server."""
    from tests.harness import start_mlflow_server, stop_mlflow_server

    store = root / "mlflow"
    store.mkdir()
    server = start_mlflow_server(store)
    try:
        import mlflow

        from agentdeploy.tables.trace_export import EXPORTS_SCHEMA, export_traces

        mlflow.set_tracking_uri(server.url)
        request_logs = DeltaTable(str(root / "request_logs"))
        exports = DeltaTable.create(str(root / "exports"), EXPORTS_SCHEMA)
        # Export only the first `traces` rows' worth: a fresh request-log table holding them.
        subset = DeltaTable.create(str(root / "export_source"), REQUEST_LOGS_SCHEMA)
        write_deltalake(subset, request_logs.to_pyarrow_dataset().head(traces), mode="append")
        started = time.perf_counter()
        progress = export_traces(subset, exports, endpoint_name="agents_bench", request_logs_name="bench.rl")
        seconds = time.perf_counter() - started
        return {
            "traces": progress.exported,
            "seconds": round(seconds, 3),
            "traces_per_s": round(progress.exported / seconds, 1),
            "note": "includes creating the experiment; MLflow's own async exporter, flushed per batch",
        }
    finally:
        stop_mlflow_server(server)


def lag(trace: bytes, root: Path, *, duration: float, interval: float, rate: float) -> dict[str, Any]:
    payload, request_logs, assessment_logs = tables(root / "lag")
    commit_times: dict[int, float] = {}  # payload version -> when its commit finished
    stop = threading.Event()
    flush_every = 0.25
    per_commit = max(1, round(rate * flush_every))

    def writer() -> None:
        handle = DeltaTable(payload.table_uri)
        n = 0
        while not stop.is_set():
            write_deltalake(handle, records_to_arrow(records(trace, n, per_commit)), mode="append")
            commit_times[handle.version()] = time.time()
            n += per_commit
            stop.wait(flush_every)

    thread = threading.Thread(target=writer, daemon=True)
    thread.start()
    lags: list[float] = []
    done_upto = 0
    deadline = time.monotonic() + duration
    passes = []
    while time.monotonic() < deadline:
        time.sleep(interval)
        progress = format_increment(payload, request_logs, assessment_logs, app_id="lag")
        finished = time.time()
        passes.append(round(progress.seconds, 3))
        for version in range(done_upto + 1, progress.payload_version + 1):
            if version in commit_times:
                lags.extend([finished - commit_times[version]] * per_commit)
        done_upto = progress.payload_version
    stop.set()
    thread.join()
    lags.sort()
    return {
        "duration_s": duration,
        "interval_s": interval,
        "rows_per_s_offered": rate,
        "rows": len(lags),
        "lag_p50_s": round(statistics.median(lags), 2),
        "lag_max_s": round(lags[-1], 2),
        "pass_seconds_max": max(passes),
        "passes": len(passes),
        "note": "in-process schedule; a served Prefect deployment adds its run start-up "
        "(about 2 s, FACTS.md)",
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=20_000)
    parser.add_argument("--traces", type=int, default=300)
    parser.add_argument("--duration", type=float, default=150.0)
    parser.add_argument("--interval", type=float, default=get_settings().format_interval_s)
    parser.add_argument("--rate", type=float, default=40.0, help="rows per second offered during the lag run")
    args = parser.parse_args()
    trace = capture_trace()
    results: dict[str, Any] = {
        "machine": {
            "python": platform.python_version(),
            "cpus": os.cpu_count(),
            "load_at_start": os.getloadavg()[0],
        },
        "trace_bytes": len(trace),
    }
    with tempfile.TemporaryDirectory(prefix="bench-format-") as scratch:
        root = Path(scratch)
        results["format_pure"] = pure_rate(trace, args.rows)
        print("format (pure):", results["format_pure"], flush=True)
        results["format_end_to_end"] = end_to_end_rate(trace, args.rows, root)
        print("format (Delta to Delta):", results["format_end_to_end"], flush=True)
        results["export_traces"] = export_rate(root, args.traces)
        print("traces exported:", results["export_traces"], flush=True)
        results["lag"] = lag(trace, root, duration=args.duration, interval=args.interval, rate=args.rate)
        print("lag:", results["lag"], flush=True)
    out = REPO / "bench" / "results" / "format_throughput.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
