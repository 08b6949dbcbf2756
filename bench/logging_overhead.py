"""Inference logging overhead: requests per second with logging on vs off, in one run.

    .venv/bin/python bench/logging_overhead.py [--requests 3000] [--clients 32] [--rounds 4]

Starts its own MLflow tracking server, logs the example `responder`, and two agentdeploy servers
(uvicorn, uvloop + httptools): server A (default `AGENTDEPLOY_SPOOL_SYNC=background`) with two
endpoints serving the responder — `bench-on` with inference tables on, `bench-off` without — and
server B (`AGENTDEPLOY_SPOOL_SYNC=always`) with `bench-always` (tables on). The three are measured
in alternating rounds at `--clients` concurrent aiohttp keep-alive clients (so drift of a shared
machine hits all alike). Then, on server A: the time from a response to its row being visible to
`polars.scan_delta` (sequential requests, p50 and max), and rows per Delta commit of `bench-on`'s
payload table (from the Delta log). Prints the figures and writes bench/results/logging_overhead.json
with the machine's `uptime` before and after.

Target (issue 6): on >= 90% of off with the default background sync.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import polars as pl
from deltalake import DeltaTable

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.gateway_overhead import BODY, MODEL, _measure  # noqa: E402
from tests.harness import (  # noqa: E402
    MlflowServer,
    ServerProcess,
    run_mlflow_script,
    start_mlflow_server,
    stop_mlflow_server,
)

RESULTS = REPO / "bench" / "results" / "logging_overhead.json"
UC = "/api/2.1/unity-catalog"
CATALOG, SCHEMA = "bench", "logs"


def _uptime() -> str:
    return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()


def _endpoint(server: ServerProcess, name: str, logged: bool) -> None:
    body: dict[str, Any] = {
        "name": name,
        "config": {
            "served_entities": [
                {
                    "entity_name": MODEL,
                    "entity_version": "1",
                    "workload_size": "Small",
                    "scale_to_zero_enabled": False,
                }
            ]
        },
    }
    if logged:
        body["ai_gateway"] = {
            "inference_table_config": {
                "catalog_name": CATALOG,
                "schema_name": SCHEMA,
                "table_name_prefix": name.replace("-", "_"),
                "enabled": True,
            }
        }
    with server.client() as admin:
        admin.post(f"{UC}/catalogs", json={"name": CATALOG})
        admin.post(f"{UC}/schemas", json={"name": SCHEMA, "catalog_name": CATALOG})
        admin.post("/api/2.0/serving-endpoints", json=body).raise_for_status()
        deadline = time.monotonic() + 300
        while (state := admin.get(f"/api/2.0/serving-endpoints/{name}").json())["state"][
            "config_update"
        ] == "IN_PROGRESS":
            if time.monotonic() > deadline:
                raise TimeoutError(state)
            time.sleep(0.5)
        if state["state"]["ready"] != "READY":
            raise RuntimeError(f"endpoint {name} not ready: {state['state']}")


def _table(server: ServerProcess, name: str) -> Path:
    return server.home / "warehouse" / CATALOG / SCHEMA / f"{name.replace('-', '_')}_payload"


def _visibility(server: ServerProcess, name: str, samples: int) -> list[float]:
    """Seconds from each response to its row being visible to polars.scan_delta."""
    lags = []
    path = str(_table(server, name))
    with server.client() as client:
        for _ in range(samples):
            answer = client.post(f"/serving-endpoints/{name}/invocations", json=BODY)
            answer.raise_for_status()
            answered = time.monotonic()
            request_id = answer.headers["x-request-id"]
            while True:
                found = (
                    pl.scan_delta(path)
                    .filter(pl.col("databricks_request_id") == request_id)
                    .select(pl.len())
                    .collect()
                    .item()
                )
                if found:
                    break
                if time.monotonic() - answered > 30:
                    raise TimeoutError(f"row {request_id} not visible after 30 s")
                time.sleep(0.005)
            lags.append(time.monotonic() - answered)
    return lags


def _rows_per_commit(server: ServerProcess, name: str) -> dict[str, float]:
    history = DeltaTable(str(_table(server, name))).history()
    rows = [
        int((h.get("operationMetrics") or {}).get("num_added_rows", 0) or 0)
        for h in history
        if h.get("operation") == "WRITE"
    ]
    rows = [r for r in rows if r > 0]
    return {
        "commits": len(rows),
        "rows": sum(rows),
        "rows_per_commit_mean": round(statistics.fmean(rows), 1) if rows else 0.0,
        "rows_per_commit_max": max(rows, default=0),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=3000, help="requests per target per round")
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--visibility-samples", type=int, default=50)
    args = parser.parse_args()

    uptime_before = _uptime()
    tmp = Path(tempfile.mkdtemp(prefix="agentdeploy-bench-log-", dir="/tmp"))
    mlflow: MlflowServer | None = None
    servers: list[ServerProcess] = []
    try:
        mlflow = start_mlflow_server(tmp)
        port = mlflow.port
        print("logging the responder ...", flush=True)
        run_mlflow_script(mlflow.url, "from agentdeploy import examples; examples.log_responder()")
        background = ServerProcess(home=tmp / "home-a", extra_env={"AGENTDEPLOY_MLFLOW_PORT": str(port)})
        always = ServerProcess(
            home=tmp / "home-b",
            extra_env={"AGENTDEPLOY_MLFLOW_PORT": str(port), "AGENTDEPLOY_SPOOL_SYNC": "always"},
        )
        for server in (background, always):
            server.start()
            servers.append(server)
        print("starting endpoints ...", flush=True)
        _endpoint(background, "bench-on", True)
        _endpoint(background, "bench-off", False)
        _endpoint(always, "bench-always", True)

        body = json.dumps(BODY).encode()
        targets = {
            "off": (background, "bench-off"),
            "on_background": (background, "bench-on"),
            "on_always": (always, "bench-always"),
        }
        throughput: dict[str, list[float]] = {k: [] for k in targets}
        latencies: dict[str, list[float]] = {k: [] for k in targets}
        for round_no in range(args.rounds):
            order = list(targets) if round_no % 2 == 0 else list(reversed(targets))
            for key in order:
                server, name = targets[key]
                url = f"{server.url}/serving-endpoints/{name}/invocations"
                headers = {
                    "Authorization": f"Bearer {server.admin_token}",
                    "content-type": "application/json",
                }
                started = time.perf_counter()
                samples = asyncio.run(_measure(url, headers, body, args.clients, args.requests))
                elapsed = time.perf_counter() - started
                throughput[key].append(len(samples) / elapsed)
                latencies[key].extend(samples)
                print(f"round {round_no} {key:14s} {len(samples) / elapsed:8.0f} req/s", flush=True)

        lags = _visibility(background, "bench-on", args.visibility_samples)
        commits = _rows_per_commit(background, "bench-on")
        commits_always = _rows_per_commit(always, "bench-always")

        def rps(key: str) -> float:
            return round(statistics.median(throughput[key]), 1)

        def p(key: str, q: float) -> float:
            ordered = sorted(latencies[key])
            return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))], 3)

        result = {
            "clients": args.clients,
            "requests_per_round": args.requests,
            "rounds": args.rounds,
            "req_per_s_median": {k: rps(k) for k in targets},
            "req_per_s_rounds": {k: [round(v, 1) for v in throughput[k]] for k in targets},
            "latency_ms": {k: {"p50": p(k, 0.5), "p99": p(k, 0.99)} for k in targets},
            "on_background_vs_off": round(rps("on_background") / rps("off"), 3),
            "on_always_vs_off": round(rps("on_always") / rps("off"), 3),
            "response_to_row_visible_s": {
                "p50": round(statistics.median(lags), 3),
                "max": round(max(lags), 3),
                "samples": len(lags),
            },
            "delta_commits_background": commits,
            "delta_commits_always": commits_always,
            "uptime_before": uptime_before,
            "uptime_after": _uptime(),
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
        }
        print(json.dumps(result, indent=2))
        RESULTS.parent.mkdir(parents=True, exist_ok=True)
        RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    finally:
        for server in servers:
            server.stop()
        if mlflow is not None:
            stop_mlflow_server(mlflow)
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
