"""The wrapper over MLflow's internal per-request trace buffer: fails if an mlflow upgrade moves it.

Each check runs in a fresh interpreter: the serving flags must be set before mlflow is imported.
"""

from __future__ import annotations

import json
import subprocess
import sys

from tests.harness import REPO

SCRIPT = r"""
import json, sys, threading
from agentdeploy.serving import tracing
tracing.enable_request_traces()
import mlflow

@mlflow.trace(span_type="AGENT")
def agent(question):
    with mlflow.start_span(name="lookup", span_type="RETRIEVER") as span:
        span.set_outputs([{"page_content": "doc for " + question}])
    return "answer to " + question

results = {}
def one(rid):
    with tracing.request_context(rid):
        agent(rid)
    results[rid] = tracing.pop_trace(rid)

threads = [threading.Thread(target=one, args=(f"req-{i}",)) for i in range(4)]
for t in threads: t.start()
for t in threads: t.join()
results["again"] = tracing.pop_trace("req-0")        # popped: gone
results["untraced"] = tracing.pop_trace("no-such")    # never traced
with tracing.request_context("fails"):
    try:
        agent(None)
    except TypeError:
        pass
results["failed"] = tracing.pop_trace("fails")
print("RESULT" + json.dumps(results))
"""


def _run(script: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", script],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(REPO)},
    )


def test_each_request_gets_its_own_trace_with_its_spans() -> None:
    done = _run(SCRIPT)
    assert done.returncode == 0, done.stderr[-3000:]
    results = json.loads(done.stdout.split("RESULT", 1)[1])
    for i in range(4):
        trace = results[f"req-{i}"]
        assert trace is not None, f"req-{i} captured no trace"
        spans = {s["name"]: s for s in trace["data"]["spans"]}
        assert set(spans) == {"agent", "lookup"}
        assert f"doc for req-{i}" in json.dumps(spans["lookup"])  # its own documents, not another's
        assert trace["info"]["client_request_id"] == f"req-{i}"
    assert results["again"] is None and results["untraced"] is None
    assert results["failed"] is not None and results["failed"]["info"]["state"] == "ERROR"


def test_enabling_after_mlflow_is_imported_is_refused() -> None:
    done = _run("import mlflow\nfrom agentdeploy.serving import tracing\ntracing.enable_request_traces()")
    assert done.returncode != 0 and "must run before mlflow is imported" in done.stderr
