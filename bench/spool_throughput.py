"""Payload spool and writer throughput: what logging costs on the request path, and what the
background writer does with it.

1. Record encoding: the spool format (raw bytes + small JSON header) vs one JSON document.
2. Appends per second — build the row, encode it, append it — with `sync="background"` and
   `sync="always"` (group commit), and with no spool at all (build + encode only), at 1 and 32
   concurrent asyncio appenders (each yields to the loop between requests, as a request would).
3. The writer under a steady load with its default settings: rows per Delta commit, commit
   latency, and the lag from append to committed (visible to readers).

Run on a quiet machine: `.venv/bin/python bench/spool_throughput.py`. Prints and writes
bench/results/spool_throughput.json.
"""

from __future__ import annotations

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

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from agentdeploy.tables.payload import (  # noqa: E402
    PayloadRecord,
    Redactor,
    build_record,
    payload_table_name,
    records_to_arrow,
)
from agentdeploy.tables.payload_writer import PayloadWriter  # noqa: E402
from agentdeploy.tables.spool import PayloadSpool  # noqa: E402

TABLE = payload_table_name("main", "agents", "bench")
REQUEST = orjson.dumps({"input": [{"role": "user", "content": "How do I reset my password? " * 15}]})
RESPONSE = orjson.dumps({"output": [{"type": "message", "id": "m1", "content": [
    {"type": "output_text", "text": "Open settings, choose security, then \"reset\". " * 30}]}]})
_TEXT = "The retriever returned three passages about resetting passwords from the FAQ table. "
TRACE = orjson.dumps({"info": {"request_id": "x"}, "data": {"spans": [
    {"name": f"span{i}", "attributes": {"inputs": _TEXT * 2, "outputs": _TEXT * 2}} for i in range(8)]}})
REDACTOR = Redactor(["sk-bench-secret-value-0001", "another-secret-value-02"])
DURATION_S = float(os.environ.get("BENCH_DURATION_S", "1.0"))
ROUNDS = int(os.environ.get("BENCH_ROUNDS", "3"))


def make_record(i: int) -> PayloadRecord:
    return build_record(
        table=TABLE, databricks_request_id=f"req-{i:09d}", request=REQUEST, response=RESPONSE,
        trace=TRACE, status_code=200, timestamp_ms=int(time.time() * 1000), execution_time_ms=3,
        max_payload_bytes=16 * 1024 * 1024, endpoint_name="agents_bench", model_name="main.agents.bench",
        model_version="1", served_entity_name="bench_1", requester="bench@example.com", redactor=REDACTOR,
    )


def bench_encoding(n: int = 20_000) -> dict[str, Any]:
    record = make_record(0)
    started = time.perf_counter()
    for _ in range(n):
        data = record.encode()
    encode_us = (time.perf_counter() - started) / n * 1e6
    started = time.perf_counter()
    for _ in range(n):
        PayloadRecord.decode(data)
    decode_us = (time.perf_counter() - started) / n * 1e6

    def as_json(r: PayloadRecord) -> bytes:  # the alternative: one JSON document, bodies escaped
        return orjson.dumps({
            "table": r.table, "databricks_request_id": r.databricks_request_id,
            "timestamp_ms": r.timestamp_ms, "status_code": r.status_code,
            "execution_time_ms": r.execution_time_ms, "request": r.request.decode(),
            "response": r.response.decode(), "trace": r.trace.decode() if r.trace else None,
            "request_metadata": dict(r.request_metadata), "served_entity_name": r.served_entity_name,
            "logging_error_codes": list(r.logging_error_codes), "requester": r.requester,
        })

    started = time.perf_counter()
    for _ in range(n):
        doc = as_json(record)
    json_encode_us = (time.perf_counter() - started) / n * 1e6
    started = time.perf_counter()
    for _ in range(n):
        d = orjson.loads(doc)
        d["request"].encode(), d["response"].encode(), d["trace"].encode()
    json_decode_us = (time.perf_counter() - started) / n * 1e6
    started = time.perf_counter()
    for i in range(n):
        make_record(i)
    build_us = (time.perf_counter() - started) / n * 1e6
    # The writer's Python work per row (off the request path, on its own thread).
    spooled = [make_record(i).encode() for i in range(2000)]
    started = time.perf_counter()
    records_to_arrow([PayloadRecord.decode(d) for d in spooled])
    writer_us = (time.perf_counter() - started) / len(spooled) * 1e6
    return {
        "record_bytes": len(data), "json_document_bytes": len(doc),
        "build_record_us": round(build_us, 2),
        "encode_us": round(encode_us, 2), "decode_us": round(decode_us, 2),
        "json_encode_us": round(json_encode_us, 2), "json_decode_us": round(json_decode_us, 2),
        "writer_decode_and_arrow_us_per_row": round(writer_us, 2),
    }


async def appends_per_second(mode: str, concurrency: int, directory: Path) -> dict[str, Any]:
    spool = None
    if mode != "none":
        spool = PayloadSpool(directory, sync=mode)  # type: ignore[arg-type]
        await spool.start()
    counter = 0
    latencies: list[float] = []
    stop_at = time.perf_counter() + DURATION_S

    async def appender() -> None:
        nonlocal counter
        while time.perf_counter() < stop_at:
            started = time.perf_counter()
            data = make_record(counter).encode()
            if spool is not None:
                await spool.append(data)
            latencies.append(time.perf_counter() - started)
            counter += 1
            await asyncio.sleep(0)  # a request yields to the loop (network I/O) at least once

    started = time.perf_counter()
    await asyncio.gather(*(appender() for _ in range(concurrency)))
    elapsed = time.perf_counter() - started
    result: dict[str, Any] = {
        "mode": mode, "concurrency": concurrency, "appends": counter,
        "per_second": round(counter / elapsed),
        "latency_p50_us": round(statistics.median(latencies) * 1e6, 1),
        "latency_p99_us": round(statistics.quantiles(latencies, n=100)[98] * 1e6, 1),
    }
    if spool is not None:
        result["fsyncs"] = spool.stats.fsyncs
        result["records_per_fsync"] = round(spool.stats.appended / max(spool.stats.fsyncs, 1), 1)
        await spool.close()
    return result


async def writer_under_load(directory: Path, rate: int = 2000, seconds: float = 4.0) -> dict[str, Any]:
    spool = PayloadSpool(directory / "spool")
    await spool.start()
    writer = PayloadWriter(spool, directory / "warehouse")  # default batch interval
    await writer.start()
    appended: list[tuple[int, float]] = []  # (end position, time) of every append
    lags: list[float] = []

    async def watch() -> None:
        i = 0
        while True:
            acked = spool.acknowledged
            now = time.perf_counter()
            while i < len(appended) and appended[i][0] <= acked:
                lags.append(now - appended[i][1])
                i += 1
            await asyncio.sleep(0.002)

    watcher = asyncio.get_running_loop().create_task(watch())
    started = time.perf_counter()
    n = 0
    while time.perf_counter() - started < seconds:
        for _ in range(rate // 100):  # bursts every 10 ms
            end = await spool.append(make_record(n).encode())
            appended.append((end, time.perf_counter()))
            n += 1
        await asyncio.sleep(0.01)
    await writer.flush()
    await asyncio.sleep(0.01)
    watcher.cancel()
    await writer.stop()
    await spool.close()
    commits = list(writer.stats.recent_commits)
    rows = [c[0] for c in commits]
    ms = sorted(c[1] * 1000 for c in commits)
    return {
        "offered_rows_per_second": rate, "rows": n, "commits": len(commits),
        "rows_per_commit_mean": round(statistics.mean(rows), 1),
        "commit_ms_p50": round(statistics.median(ms), 2), "commit_ms_max": round(ms[-1], 2),
        "append_to_committed_ms_p50": round(statistics.median(lags) * 1000, 1),
        "append_to_committed_ms_max": round(max(lags) * 1000, 1),
    }


async def main() -> dict[str, Any]:
    results: dict[str, Any] = {
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                    "load_average_at_start": os.getloadavg()},
        "duration_s_per_case": DURATION_S,
        "rounds_per_case": ROUNDS,
        "encoding": bench_encoding(),
        "appends": [],
    }
    with tempfile.TemporaryDirectory() as tmp:
        for concurrency in (1, 32):
            # Rounds interleave the modes, and the median round is kept: on a shared machine a
            # neighbour's burst then hits every mode alike instead of one.
            rounds: dict[str, list[dict[str, Any]]] = {"none": [], "background": [], "always": []}
            for round_ in range(ROUNDS):
                for mode in rounds:
                    directory = Path(tmp) / f"{mode}-{concurrency}-{round_}"
                    rounds[mode].append(await appends_per_second(mode, concurrency, directory))
            for cases in rounds.values():
                case = sorted(cases, key=lambda c: c["per_second"])[len(cases) // 2]
                case["per_second_rounds"] = [c["per_second"] for c in cases]
                results["appends"].append(case)
                print(json.dumps(case), flush=True)
        results["writer"] = await writer_under_load(Path(tmp) / "writer")
        print(json.dumps(results["writer"]), flush=True)
    for concurrency in (1, 32):
        cases = {c["mode"]: c for c in results["appends"] if c["concurrency"] == concurrency}
        base = cases["none"]["per_second"]
        results[f"ratio_to_no_spool_at_{concurrency}"] = {
            m: round(cases[m]["per_second"] / base, 3) for m in ("background", "always")}
    results["machine"]["load_average_at_end"] = os.getloadavg()
    return results


if __name__ == "__main__":
    out = asyncio.run(main())
    print(json.dumps({k: v for k, v in out.items() if k != "appends"}, indent=2))
    path = Path(__file__).resolve().parent / "results" / "spool_throughput.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=2) + "\n")
    print(f"wrote {path}")
