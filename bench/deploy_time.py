"""Deploy time: from `agentdeploy.agents.deploy()` being called to the endpoint READY, p50 over N
deploys of the example `support_bot`, and its split by step (read back from the Prefect task runs).

    .venv/bin/python bench/deploy_time.py [--deploys 5]

Starts its own stack (`agentdeploy up --detach` in a temp home, free ports), creates the demo
data, registers the examples and deploys `responder` (untimed: the support bot queries it). Then
N cycles of: `deploy(support_bot, 1)` (timed: a fresh endpoint, principal, grants, credentials,
worker cold start) and `delete_deployment(support_bot)`. Prints the figures and writes
bench/results/deploy_time.json. Target (issue 7): p50 at most 10 s. `agentdeploy down` always runs.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
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

RESULTS = REPO / "bench" / "results" / "deploy_time.json"
RESPONDER = "main.agents.responder"
SUPPORT_BOT = "main.agents.support_bot"
TARGET_P50_S = 10.0


def _task_split(run_name: str) -> tuple[dict[str, float], float]:
    """Seconds per task of the latest completed flow run with this name, and the run's own
    total run time (start to end of the flow function)."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId, FlowRunFilterName
    from prefect.client.schemas.sorting import FlowRunSort

    from agentdeploy.orchestration import prefect_settings

    with prefect_settings(), get_client(sync_client=True) as client:
        runs = client.read_flow_runs(flow_run_filter=FlowRunFilter(name=FlowRunFilterName(any_=[run_name])),
                                     sort=FlowRunSort.START_TIME_DESC, limit=1)
        run = runs[0]
        tasks = client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[run.id])))
    split: dict[str, float] = {}
    for task in tasks:
        name = re.sub(r"-[0-9a-f]{3}$", "", task.name)  # Prefect appends a short run suffix
        split[name] = split.get(name, 0.0) + task.total_run_time.total_seconds()
    return split, run.total_run_time.total_seconds()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--deploys", type=int, default=5)
    args = parser.parse_args()

    ports: set[int] = set()
    while len(ports) < 4:
        ports.add(free_port())
    with tempfile.TemporaryDirectory(prefix="agentdeploy-bench-") as home:
        stack = Stack(Path(home), *sorted(ports))
        saved = None
        try:
            t0 = time.perf_counter()
            started = stack.cli("up", "--detach", timeout=400)
            if started.returncode != 0:
                raise SystemExit(started.stdout + started.stderr + stack_logs(stack.home))
            up_s = time.perf_counter() - t0
            saved = stack.use_in_process()
            from agentdeploy import agents
            from agentdeploy.client import AgentDeployClient
            from agentdeploy.demo import create_demo_data

            create_demo_data(AgentDeployClient.from_environment())
            registered = stack.cli("examples", "register", timeout=300)
            if registered.returncode != 0:
                raise SystemExit(registered.stdout + registered.stderr)
            agents.deploy(RESPONDER, 1)

            samples: list[dict[str, Any]] = []
            for i in range(args.deploys):
                t0 = time.perf_counter()
                agents.deploy(SUPPORT_BOT, 1)
                total = time.perf_counter() - t0
                steps, flow_s = _task_split(f"deploy {SUPPORT_BOT} v1")
                samples.append({"total_s": round(total, 3), "flow_run_s": round(flow_s, 3),
                                "outside_flow_s": round(total - flow_s, 3),
                                "steps_s": {k: round(v, 3) for k, v in steps.items()}})
                print(f"deploy {i + 1}: {total:.2f} s (flow run {flow_s:.2f} s) "
                      + ", ".join(f"{k} {v:.2f}" for k, v in steps.items()), flush=True)
                agents.delete_deployment(SUPPORT_BOT)
                time.sleep(1.0)  # the endpoint's teardown is asynchronous; do not overlap it
        finally:
            stack.cli("down", timeout=120)
            if saved is not None:
                restore_env(saved)

    totals = [s["total_s"] for s in samples]
    step_names = list(samples[0]["steps_s"])
    result = {
        "deploys": len(samples),
        "p50_s": round(statistics.median(totals), 3),
        "min_s": min(totals),
        "max_s": max(totals),
        "target_p50_s": TARGET_P50_S,
        "meets_target": statistics.median(totals) <= TARGET_P50_S,
        "p50_by_step_s": {k: round(statistics.median(s["steps_s"].get(k, 0.0) for s in samples), 3)
                          for k in step_names},
        "p50_outside_flow_s": round(statistics.median(s["outside_flow_s"] for s in samples), 3),
        "samples": samples,
        "stack_up_s": round(up_s, 1),
        "load_average": os.getloadavg(),
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    print(f"\ndeploy() to READY: p50 {result['p50_s']:.2f} s over {len(samples)} deploys "
          f"(min {result['min_s']:.2f}, max {result['max_s']:.2f}; target <= {TARGET_P50_S:.0f} s)")
    print("p50 by step: " + ", ".join(f"{k} {v:.2f} s" for k, v in result["p50_by_step_s"].items())
          + f", outside the flow run (run_deployment pickup, process start) {result['p50_outside_flow_s']:.2f} s")
    print(f"load average {result['load_average']}; wrote {RESULTS}")


if __name__ == "__main__":
    main()
