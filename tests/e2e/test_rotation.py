"""Credential rotation on the real stack (issue 8), with `agentdeploy quickstart` as the setup.

The session's `live_stack` (tests/e2e/conftest.py), started with 30-second access tokens and a
5-second rotation schedule; test_stack.py's lifecycle checks run on it afterwards and stop it. `agentdeploy quickstart` (run twice: the second run must be harmless) creates the demo
data, registers and deploys both examples and asks the support bot one question. Then: the support
bot keeps answering from its table for several token lifetimes while the scheduled rotation swaps
its token; an OAuth secret rotation makes the old secret useless at once; and a principal deleted
behind the deploy's back fails its own rotation task, not the others'.
"""

from __future__ import annotations

import json
import re
import time
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest

from agentdeploy.naming import principal_block_name
from tests.e2e.conftest import TOKEN_LIFETIME_S, LiveStack, stack_logs

# Starting the stack, then two deploys inside quickstart, take a couple of minutes on a busy
# 2-core machine (each counts against the first test's setup).
pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

RESPONDER = "main.agents.responder"
SUPPORT_BOT = "main.agents.support_bot"
SUPPORT_ENDPOINT = "agents_main-agents-support_bot"
SUPPORT_ENTITY = "main-agents-support_bot_1"
RESPONDER_ENTITY = "main-agents-responder_1"
ROTATION = "rotate-credentials/rotate-credentials"
QUESTION = "How do I deploy an agent?"


@pytest.fixture(scope="module")
def stack(live_stack: LiveStack) -> LiveStack:
    return live_stack


@pytest.fixture(scope="module")
def quickstarted(stack: LiveStack) -> tuple[str, str]:
    first = stack.cli("quickstart", timeout=900)
    assert first.returncode == 0, first.stdout + first.stderr + stack_logs(stack.home)
    second = stack.cli("quickstart", timeout=300)
    assert second.returncode == 0, second.stdout + second.stderr
    return first.stdout, second.stdout


def _ask(admin: httpx.Client) -> httpx.Response:
    return admin.post(f"/serving-endpoints/{SUPPORT_ENDPOINT}/invocations",
                      json={"input": [{"role": "user", "content": QUESTION}]})


def _sources(answer: dict[str, Any]) -> list[str]:
    return [str(s.get("doc_uri", "")) if isinstance(s, dict) else str(s)
            for s in (answer.get("custom_outputs") or {}).get("sources") or []]


def _answered_from_faq(reply: httpx.Response) -> bool:
    return reply.status_code == 200 and any(s.startswith("main.docs.faq") for s in _sources(reply.json()))


def _rotation_runs(stack: LiveStack, since: datetime) -> list[dict[str, Any]]:
    """Final runs of the rotation deployment that started after `since`, oldest first."""
    with stack.prefect() as prefect:
        deployment = prefect.get(f"/deployments/name/{ROTATION}").json()
        runs = prefect.post("/flow_runs/filter", json={
            "deployments": {"id": {"any_": [deployment["id"]]}},
            "flow_runs": {"start_time": {"after_": since.isoformat()},
                          "state": {"type": {"any_": ["COMPLETED", "FAILED", "CRASHED"]}}},
            "sort": "START_TIME_ASC", "limit": 200}).json()
    return list(runs)


def test_quickstart_deploys_both_examples_and_answers_twice(stack: LiveStack,
                                                            quickstarted: tuple[str, str]) -> None:
    first, second = quickstarted
    for out in (first, second):
        assert "Answer" in out and "Sources: main.docs.faq/" in out, out  # read from its table
        assert f"/serving-endpoints/{SUPPORT_ENDPOINT}/served-models/{SUPPORT_ENTITY}/invocations" in out, out
        assert f"/review/{SUPPORT_ENDPOINT}" in out, out
        assert "Payload rows" in out, out
    # Inference logging is on: the payload table counts the questions asked so far.
    pattern = r"Payload rows: (\d+) in main\.agents\.support_bot_payload"
    counts = [re.search(pattern, out) for out in quickstarted]
    assert counts[0] and counts[1] and int(counts[1].group(1)) >= 1, (first, second)
    # The second run found everything the first made: nothing registered or deployed again.
    assert "already registered" in second and second.count("already deployed") == 2, second
    with stack.admin() as admin:
        found = admin.get("/api/2.0/agents/deployments").json()["chain_deployments"]
    deployed = sorted((d["model_name"], d["model_version"]) for d in found)
    assert deployed == [(RESPONDER, "1"), (SUPPORT_BOT, "1")]
    token = json.loads((stack.home / "credentials").read_text())["token"]
    assert token not in first + second


def test_agent_keeps_answering_while_its_token_rotates(stack: LiveStack,
                                                       quickstarted: tuple[str, str]) -> None:
    started = datetime.now(UTC)
    seen = [(started, stack.token_expiry(SUPPORT_ENTITY))]  # (when observed, expiry)
    failures: list[str] = []
    answered = 0
    deadline = time.monotonic() + 3.2 * TOKEN_LIFETIME_S
    with stack.admin() as admin:
        while time.monotonic() < deadline:
            reply = _ask(admin)
            if not _answered_from_faq(reply):
                failures.append(f"{datetime.now(UTC):%H:%M:%S} {reply.status_code} {reply.text[:300]}")
            else:
                answered += 1
            expiry = stack.token_expiry(SUPPORT_ENTITY)
            if expiry != seen[-1][1]:
                seen.append((datetime.now(UTC), expiry))
            time.sleep(2)
    assert not failures, f"{len(failures)} failed of {answered + len(failures)}: {failures[:3]}"
    # The agent answered from its table well past its first token's expiry: on the tokens the
    # rotation swapped in, each one before the one it replaced had expired.
    assert datetime.now(UTC) > seen[0][1] + (seen[0][1] - started)
    assert len(seen) >= 4, seen
    for (_, expiry), (observed, later) in zip(seen, seen[1:], strict=False):
        assert later > expiry
        assert observed.timestamp() <= expiry.timestamp() + 5, "a token expired before its successor came"
    runs = _rotation_runs(stack, started)
    completed = [r for r in runs if r["state_type"] == "COMPLETED"]
    assert len(completed) >= 3, [(r["name"], r["state_type"]) for r in runs]


def _load_secret(stack: LiveStack, application_id: str) -> Any:
    from agentdeploy.orchestration import prefect_settings
    from blocks.principal_secret import PrincipalSecret

    with prefect_settings(stack.settings()):
        return PrincipalSecret.load(principal_block_name(application_id))


def _principal(stack: LiveStack, entity: str) -> dict[str, Any]:
    with stack.admin() as admin:
        principals = admin.get("/api/2.0/agents/principals").json()["principals"]
    return next(p for p in principals if p["served_entity_name"] == entity)


def _run_rotation(stack: LiveStack, parameters: dict[str, Any]) -> Any:
    """Run the deployment by hand; a run that collides with a scheduled one is cancelled at once
    (one rotation at a time), so try again."""
    from agentdeploy.orchestration import run_flow_deployment

    for _ in range(10):
        run = run_flow_deployment(ROTATION, parameters, timeout=180, settings=stack.settings())
        if run.state is not None and not run.state.is_cancelled():
            return run
        time.sleep(1)
    pytest.fail("every hand-started rotation run was cancelled")


def _artifact_of(stack: LiveStack, flow_run_id: str) -> str:
    with stack.prefect() as prefect:
        found = prefect.post("/artifacts/filter", json={
            "artifacts": {"flow_run_id": {"any_": [str(flow_run_id)]},
                          "key": {"any_": ["credential-rotation"]}}}).json()
    assert found, f"no credential-rotation artifact for run {flow_run_id}"
    return str(found[0]["data"])


def test_secret_rotation_makes_the_old_secret_useless(stack: LiveStack,
                                                      quickstarted: tuple[str, str]) -> None:
    principal = _principal(stack, SUPPORT_ENTITY)
    old = _load_secret(stack, principal["application_id"])
    run = _run_rotation(stack, {"secret_rotation_period_s": 0})
    assert run.state.is_completed(), run.state
    new = _load_secret(stack, principal["application_id"])
    assert new.secret_id != old.secret_id and new.created_at > old.created_at

    host = f"http://127.0.0.1:{stack.port}"
    form = {"grant_type": "client_credentials", "scope": "all-apis"}
    refused = httpx.post(f"{host}/oidc/v1/token", data=form,
                         auth=(old.client_id, old.client_secret.get_secret_value()))
    assert refused.status_code in (400, 401), refused.text
    accepted = httpx.post(f"{host}/oidc/v1/token", data=form,
                          auth=(new.client_id, new.client_secret.get_secret_value()))
    assert accepted.status_code == 200 and accepted.json()["expires_in"] <= TOKEN_LIFETIME_S

    artifact = _artifact_of(stack, run.id)
    assert SUPPORT_ENTITY in artifact and "yes" in artifact
    for value in (old.client_secret.get_secret_value(), new.client_secret.get_secret_value(),
                  accepted.json()["access_token"]):
        assert value not in artifact
    with stack.admin() as admin:
        reply = _ask(admin)
    assert _answered_from_faq(reply), reply.text


def test_deleted_principal_fails_its_own_rotation_only(stack: LiveStack,
                                                       quickstarted: tuple[str, str]) -> None:
    responder = _principal(stack, RESPONDER_ENTITY)
    support = _principal(stack, SUPPORT_ENTITY)
    support_secret = _load_secret(stack, support["application_id"])
    with stack.admin() as admin:
        assert admin.delete(f"/api/2.0/agents/principals/{responder['id']}").status_code == 200
    deleted_at = datetime.now(UTC)
    before = stack.token_expiry(SUPPORT_ENTITY)

    # The next scheduled run (no hand start): FAILED, because of the responder only.
    deadline = time.monotonic() + 120
    while not (runs := _rotation_runs(stack, deleted_at)) and time.monotonic() < deadline:
        time.sleep(1)
    assert runs, f"no rotation run after the deletion:\n{stack_logs(stack.home)}"
    run = runs[0]
    assert run["state_type"] == "FAILED", run["state"]
    assert RESPONDER_ENTITY in (run["state"]["message"] or "")
    assert SUPPORT_ENTITY not in (run["state"]["message"] or "")

    with stack.prefect() as prefect:
        tasks = prefect.post("/task_runs/filter", json={"flow_runs": {"id": {"any_": [run["id"]]}}}).json()
    by_name = {t["name"]: t for t in tasks}
    assert by_name[f"rotate {SUPPORT_ENTITY}"]["state_type"] == "COMPLETED"
    failed = by_name[f"rotate {RESPONDER_ENTITY}"]
    assert failed["state_type"] == "FAILED"
    assert failed["run_count"] == 1  # a denial is reported, not retried

    artifact = _artifact_of(stack, run["id"])
    responder_row = next(line for line in artifact.splitlines() if line.startswith(f"| {RESPONDER_ENTITY} "))
    assert "no service principal" in responder_row
    assert support_secret.client_secret.get_secret_value() not in artifact
    held = json.loads((stack.home / "agent-credentials" / f"{SUPPORT_ENTITY}.json").read_text())["token"]
    assert held not in artifact

    # The support bot's token still moved forward, and it still answers from its table.
    assert stack.token_expiry(SUPPORT_ENTITY) > before
    with stack.admin() as admin:
        reply = _ask(admin)
    assert _answered_from_faq(reply), reply.text

    shown = stack.cli("status")
    line = next((line for line in shown.stdout.splitlines() if "rotate-credentials" in line), "")
    assert "Failed" in line or "Running" in line, shown.stdout
    # Each served entity's state (a scaled-to-zero one would say so, with its last cold start).
    assert "serving endpoints" in shown.stdout and "DEPLOYMENT_READY" in shown.stdout, shown.stdout
