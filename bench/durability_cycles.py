"""Durability cycles: 200 concurrent requests, kill -9 of the server mid-load, restart, check.

    .venv/bin/python bench/durability_cycles.py [--cycles 20] [--requests 200] [--kill-after 60]

The same cycle as tests/serving/test_durability.py, many more times: after each restart every
request whose response a client received must have exactly one row in the payload table
(matched by `x-request-id`). Starts its own MLflow tracking server (the echo test agent) and an
agentdeploy server with its own home. Prints and writes bench/results/durability_cycles.json:
cycles run, responses received, rows checked, rows missing and duplicated (both must be 0).
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.harness import start_mlflow_server, stop_mlflow_server  # noqa: E402
from tests.serving.conftest import register_test_models, start_serving_server  # noqa: E402
from tests.serving.test_durability import Durable, run_cycle, setup_endpoint, wait_ready  # noqa: E402

RESULTS = REPO / "bench" / "results" / "durability_cycles.json"


def main() -> None:

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cycles", type=int, default=20)
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--kill-after", type=int, default=60, help="responses received before the kill")
    args = parser.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="agentdeploy-bench-durable-", dir="/tmp"))
    mlflow = start_mlflow_server(tmp)
    server = None
    totals = {"cycles": 0, "responses_received": 0, "rows_checked": 0, "missing": 0, "duplicated": 0}
    started = time.monotonic()
    try:
        print("registering the echo agent ...", flush=True)
        register_test_models(mlflow.url)
        server = start_serving_server(tmp / "home", mlflow)
        setup_endpoint(server)
        durable = Durable(server)
        for number in range(1, args.cycles + 1):
            cycle = run_cycle(durable, args.requests, args.kill_after)
            totals["cycles"] += 1
            totals["responses_received"] += cycle.received
            totals["rows_checked"] = cycle.checked
            totals["missing"] = cycle.missing
            totals["duplicated"] = cycle.duplicated
            print(
                f"cycle {number}/{args.cycles}: {cycle.received} responses before the kill; "
                f"{cycle.checked} checked, {cycle.missing} missing, {cycle.duplicated} duplicated",
                flush=True,
            )
            if cycle.missing or cycle.duplicated:
                break
            wait_ready(server)
    finally:
        if server is not None:
            server.stop()
        stop_mlflow_server(mlflow)
        shutil.rmtree(tmp, ignore_errors=True)
    totals["seconds"] = round(time.monotonic() - started, 1)
    totals["uptime"] = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    print(json.dumps(totals, indent=2))
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(totals, indent=2) + "\n")
    if totals["missing"] or totals["duplicated"]:
        sys.exit(1)


if __name__ == "__main__":
    main()
