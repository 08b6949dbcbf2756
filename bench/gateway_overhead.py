"""Gateway overhead: the same request through the gateway, straight to the worker, and through
`mlflow models serve` of the same model, in one run.

    .venv/bin/python bench/gateway_overhead.py [--requests 2000] [--clients 1,32]

Starts its own MLflow tracking server (sqlite, temp dir), logs the example `responder`, starts an
agentdeploy server (uvicorn, uvloop + httptools) with an endpoint serving it, finds the worker's
port, and starts `mlflow models serve` of the same registered version. Clients are asyncio tasks
over aiohttp keep-alive sessions in this process; for each concurrency the three targets are
measured in alternating rounds (so drift of a shared machine hits all three alike). Prints the
figures and writes bench/results/gateway_overhead.json.

The gateway's added latency is p50(gateway) - p50(direct) (and the same for p99); the targets
(issue 5): at most 1 ms at p50 and 5 ms at p99 with 1 client, and the whole gateway path no
slower at p50 than `mlflow models serve` (which does no auth and returns no trace).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp
import httpx

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.harness import (  # noqa: E402
    ServerProcess,
    free_port,
    run_mlflow_script,
    start_mlflow_server,
    wait_http,
)

RESULTS = REPO / "bench" / "results" / "gateway_overhead.json"
MODEL = "main.agents.responder"
ENDPOINT = "bench-responder"
BODY = {
    "messages": [
        {
            "role": "system",
            "content": "Context:\nRefunds take 5 days. Shipping is free for orders over 50 euros.",
        },
        {"role": "user", "content": "How long do refunds take?"},
    ]
}


def _quantiles(samples_ms: list[float]) -> dict[str, float]:
    ordered = sorted(samples_ms)

    def pick(q: float) -> float:
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))]

    return {
        "p50_ms": round(pick(0.50), 3),
        "p90_ms": round(pick(0.90), 3),
        "p99_ms": round(pick(0.99), 3),
        "mean_ms": round(statistics.fmean(ordered), 3),
        "n": len(ordered),
    }


async def _measure(
    url: str, headers: dict[str, str], body: bytes, clients: int, requests: int
) -> list[float]:
    """`requests` requests spread over `clients` concurrent keep-alive clients; latencies in ms."""
    per_client = max(1, requests // clients)
    samples: list[float] = []
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def one_client() -> None:
            for _ in range(per_client):
                started = time.perf_counter()
                async with session.post(url, data=body, headers=headers) as answer:
                    await answer.read()
                    if answer.status != 200:
                        raise RuntimeError(f"{url} answered {answer.status}: {(await answer.text())[:300]}")
                samples.append((time.perf_counter() - started) * 1000.0)

        # Warm the connections first (not measured).
        for _ in range(min(50, per_client)):
            async with session.post(url, data=body, headers=headers) as answer:
                await answer.read()
        await asyncio.gather(*(one_client() for _ in range(clients)))
    return samples


def _worker_port(server: ServerProcess, endpoint_id: str) -> int:
    """The endpoint's worker port, from the line the backend writes to the worker's log when it
    starts it ("... starting worker for <key> on port <n>")."""
    from agentdeploy.serving.backends.local import worker_processes

    for key in worker_processes(endpoint_id[:12]).values():
        starts = re.findall(r"starting worker for \S+ on port (\d+)", (server.home / "logs" / f"{key}.log").read_text())
        if starts:
            return int(starts[-1])
    raise RuntimeError("the endpoint's worker process was not found (run as the user that runs the workers)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=2000, help="requests per target per concurrency")
    parser.add_argument("--clients", default="1,32", help="comma-separated concurrencies")
    parser.add_argument("--rounds", type=int, default=4, help="alternating rounds per concurrency")
    args = parser.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="agentdeploy-bench-", dir="/tmp"))
    procs: list[subprocess.Popen[bytes]] = []
    server: ServerProcess | None = None
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "AGENTDEPLOY_"))}
    try:
        mlflow = start_mlflow_server(tmp)
        assert mlflow.proc is not None
        procs.append(mlflow.proc)
        tracking, mlflow_port = mlflow.url, mlflow.port
        print("logging the responder ...", flush=True)
        run_mlflow_script(tracking, "from agentdeploy import examples; examples.log_responder()")

        server = ServerProcess(home=tmp / "home", extra_env={"AGENTDEPLOY_MLFLOW_PORT": str(mlflow_port)})
        server.start()
        token = server.admin_token
        with server.client() as admin:
            created = admin.post(
                "/api/2.0/serving-endpoints",
                json={
                    "name": ENDPOINT,
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
                },
            )
            created.raise_for_status()
            deadline = time.monotonic() + 300
            while (state := admin.get(f"/api/2.0/serving-endpoints/{ENDPOINT}").json())["state"][
                "config_update"
            ] == "IN_PROGRESS":
                if time.monotonic() > deadline:
                    raise TimeoutError(state)
                time.sleep(0.5)
            if state["state"]["ready"] != "READY":
                raise RuntimeError(f"endpoint not ready: {state['state']}")
        worker_port = _worker_port(server, state["id"])

        serve_port = free_port()
        procs.append(
            subprocess.Popen(
                [
                    str(Path(sys.executable).with_name("mlflow")),
                    "models",
                    "serve",
                    "-m",
                    f"models:/{MODEL}/1",
                    "--env-manager",
                    "local",
                    "-h",
                    "127.0.0.1",
                    "-p",
                    str(serve_port),
                ],
                stdout=open(tmp / "mlflow-serve.log", "ab"),
                stderr=subprocess.STDOUT,
                start_new_session=True,
                # `mlflow models serve` execs `uvicorn` by name: the venv's bin must be on PATH.
                cwd=tmp,
                env={
                    **env,
                    "MLFLOW_TRACKING_URI": tracking,
                    "PATH": f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}",
                },
            )
        )
        try:
            wait_http(f"http://127.0.0.1:{serve_port}/ping", timeout=300, proc=procs[-1])
        except RuntimeError:
            print((tmp / "mlflow-serve.log").read_text()[-3000:], file=sys.stderr)
            raise

        body = json.dumps(BODY).encode()
        targets = {
            "gateway": (
                f"{server.url}/serving-endpoints/{ENDPOINT}/invocations",
                {"Authorization": f"Bearer {token}", "content-type": "application/json"},
            ),
            "worker_direct": (
                f"http://127.0.0.1:{worker_port}/invocations",
                {
                    "content-type": "application/json",
                    "x-request-id": "bench",
                    "x-agentdeploy-api": "invocations",
                },
            ),
            "mlflow_models_serve": (
                f"http://127.0.0.1:{serve_port}/invocations",
                {"content-type": "application/json"},
            ),
        }
        for name, (url, headers) in targets.items():  # one correct answer from each before timing
            answer = httpx.post(url, content=body, headers=headers, timeout=60)
            answer.raise_for_status()
            print(f"{name}: {answer.content[:120]!r}", flush=True)

        load_before = os.getloadavg()
        results: dict[str, Any] = {}
        for clients in [int(c) for c in args.clients.split(",")]:
            samples: dict[str, list[float]] = {name: [] for name in targets}
            per_round = max(clients, args.requests // args.rounds)
            for _ in range(args.rounds):
                for name, (url, headers) in targets.items():
                    samples[name] += asyncio.run(_measure(url, headers, body, clients, per_round))
            figures = {name: _quantiles(values) for name, values in samples.items()}
            figures["gateway_added"] = {
                "p50_ms": round(figures["gateway"]["p50_ms"] - figures["worker_direct"]["p50_ms"], 3),
                "p99_ms": round(figures["gateway"]["p99_ms"] - figures["worker_direct"]["p99_ms"], 3),
            }
            results[f"clients_{clients}"] = figures
            print(f"\n{clients} client(s):", flush=True)
            for name, fig in figures.items():
                print(f"  {name:22s} " + "  ".join(f"{k}={v}" for k, v in fig.items()), flush=True)
        one = results.get("clients_1")
        report = {
            "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "machine": {
                "cpus": os.cpu_count(),
                "python": platform.python_version(),
                "loadavg_before": [round(x, 2) for x in load_before],
                "loadavg_after": [round(x, 2) for x in os.getloadavg()],
            },
            "model": f"models:/{MODEL}/1 (ChatModel)",
            "requests_per_target_per_concurrency": args.requests,
            "results": results,
            "targets": {
                "gateway_added_p50_ms_max": 1.0,
                "gateway_added_p99_ms_max": 5.0,
                "gateway_p50_no_slower_than_mlflow_models_serve": True,
            },
        }
        if one:
            report["meets_targets_at_1_client"] = {
                "added_p50": one["gateway_added"]["p50_ms"] <= 1.0,
                "added_p99": one["gateway_added"]["p99_ms"] <= 5.0,
                "gateway_p50_le_mlflow_serve_p50": one["gateway"]["p50_ms"]
                <= one["mlflow_models_serve"]["p50_ms"],
            }
        RESULTS.parent.mkdir(parents=True, exist_ok=True)
        RESULTS.write_text(json.dumps(report, indent=2) + "\n")
        print(f"\nwrote {RESULTS.relative_to(REPO)}")
    finally:
        if server is not None:
            server.stop()
        for proc in reversed(procs):
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
                try:
                    proc.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    os.killpg(proc.pid, signal.SIGKILL)
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
