"""Cold start: p50 time from a scaled-to-zero `support_bot` endpoint to its first response.

    .venv/bin/python bench/cold_start.py [--samples 5] [--idle 2]

Starts its own stack (`agentdeploy up --detach` in a temp home, free ports) with
AGENTDEPLOY_SCALE_TO_ZERO_IDLE_S=<idle>, creates the demo data, registers the examples, deploys
`responder` (always on: the support bot queries it) and `support_bot` with scale_to_zero=True.
Then N cycles of: wait until the endpoint state says the support bot is scaled to zero, send one
query (timed: the worker starts, loads the model, answers; the agent then reads the FAQ through the
SQL API and asks the responder) and, for comparison, one warm query. Prints the figures and writes
bench/results/cold_start.json. Target (issue 9): p50 at most 3 s. `agentdeploy down` always runs.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.e2e.conftest import Stack, restore_env, stack_logs  # noqa: E402
from tests.harness import free_port  # noqa: E402

RESULTS = REPO / "bench" / "results" / "cold_start.json"
RESPONDER = "main.agents.responder"
SUPPORT_BOT = "main.agents.support_bot"
TARGET_P50_S = 3.0
QUERY = {"input": [{"role": "user", "content": "How do I reset my password?"}]}


class IdleStack(Stack):
    idle_s: float = 2.0

    def env(self) -> dict[str, str]:
        return {**super().env(), "AGENTDEPLOY_SCALE_TO_ZERO_IDLE_S": str(self.idle_s)}


def _bot_state(http: Any, endpoint: str) -> str:
    body = http.get(f"/api/2.0/serving-endpoints/{endpoint}").json()
    entity = next(e for e in body["config"]["served_entities"] if e["entity_name"] == SUPPORT_BOT)
    return str(entity["state"]["deployment_state_message"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=5)
    parser.add_argument("--idle", type=float, default=2.0, help="scale-to-zero idle period (s)")
    args = parser.parse_args()

    import httpx

    ports: set[int] = set()
    while len(ports) < 4:
        ports.add(free_port())
    samples: list[dict[str, float]] = []
    with tempfile.TemporaryDirectory(prefix="agentdeploy-bench-") as home:
        stack = IdleStack(Path(home), *sorted(ports))
        stack.idle_s = args.idle
        saved = None
        try:
            started = stack.cli("up", "--detach", timeout=400)
            if started.returncode != 0:
                raise SystemExit(started.stdout + started.stderr + stack_logs(stack.home))
            saved = stack.use_in_process()
            from agentdeploy import agents
            from agentdeploy.client import AgentDeployClient
            from agentdeploy.demo import create_demo_data

            client = AgentDeployClient.from_environment()
            create_demo_data(client)
            registered = stack.cli("examples", "register", timeout=300)
            if registered.returncode != 0:
                raise SystemExit(registered.stdout + registered.stderr)
            agents.deploy(RESPONDER, 1)
            bot = agents.deploy(SUPPORT_BOT, 1, scale_to_zero=True)
            headers = {"Authorization": f"Bearer {client.token}"}
            with httpx.Client(base_url=stack.url, headers=headers, timeout=120) as http:
                url = f"/serving-endpoints/{bot.endpoint_name}/invocations"
                first = http.post(url, json=QUERY)
                assert first.status_code == 200, first.text
                for i in range(args.samples):
                    deadline = time.monotonic() + args.idle + 60
                    while "Scaled to zero" not in _bot_state(http, bot.endpoint_name):
                        if time.monotonic() > deadline:
                            raise SystemExit(f"not scaled to zero: {_bot_state(http, bot.endpoint_name)}")
                        time.sleep(0.1)
                    t0 = time.perf_counter()
                    cold = http.post(url, json=QUERY)
                    cold_s = time.perf_counter() - t0
                    assert cold.status_code == 200, cold.text
                    t0 = time.perf_counter()
                    warm = http.post(url, json=QUERY)
                    warm_s = time.perf_counter() - t0
                    assert warm.status_code == 200, warm.text
                    samples.append({"cold_s": round(cold_s, 3), "warm_s": round(warm_s, 3)})
                    print(f"sample {i + 1}: cold {cold_s:.2f} s, warm {warm_s * 1000:.0f} ms", flush=True)
        finally:
            stack.cli("down", timeout=120)
            if saved is not None:
                restore_env(saved)

    colds = [s["cold_s"] for s in samples]
    result = {
        "samples": len(samples),
        "cold_start_p50_s": round(statistics.median(colds), 3),
        "cold_start_min_s": min(colds),
        "cold_start_max_s": max(colds),
        "warm_p50_s": round(statistics.median(s["warm_s"] for s in samples), 3),
        "target_p50_s": TARGET_P50_S,
        "meets_target": statistics.median(colds) <= TARGET_P50_S,
        "idle_s": args.idle,
        "all": samples,
        "load_average": os.getloadavg(),
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    print(
        "\ncold start (scaled to zero -> first response) of support_bot: "
        f"p50 {result['cold_start_p50_s']:.2f} s "
        f"over {len(samples)} (min {result['cold_start_min_s']:.2f}, max {result['cold_start_max_s']:.2f}; "
        f"target <= {TARGET_P50_S:.0f} s); warm p50 {result['warm_p50_s'] * 1000:.0f} ms"
    )
    print(f"load average {result['load_average']}; wrote {RESULTS}")


if __name__ == "__main__":
    main()
