"""The deploy DAG on the real stack: `agentdeploy.agents.deploy()` runs the `deploy-agent` flow
through the stack's Prefect server; rollback of every step; who the flow acts as; no secret
leaks; the summary artifact; delete_deployment.

One stack for the module (`deploy_stack`); the tests run in order and build on each other:
responder v1 and support_bot v1 are deployed first, v2 of both is registered for the later ones.
"""

from __future__ import annotations

import json
import os
import re
import signal
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.e2e.conftest import Stack, alive, children, worker_pids

# The stack starts in the first test's setup (over a minute on a loaded machine) and deploys wait
# for cold workers: more than the suite's default 300 s per test.
pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

RESPONDER = "main.agents.responder"
SUPPORT_BOT = "main.agents.support_bot"
ENDPOINT = "agents_main-agents-support_bot"
RESPONDER_ENDPOINT = "agents_main-agents-responder"
QUESTION = {"input": [{"role": "user", "content": "How do I deploy an agent?"}]}
STEPS = ["resolve-model-version", "validate-permissions", "create-principal", "grant-resources",
         "issue-credentials", "ensure-inference-tables", "ensure-feedback-model", "provision-endpoint",
         "wait-until-ready", "record-deployment"]

# Secret values seen during the module (agent tokens, OAuth secrets, user PATs): none may be in
# Prefect's database, flow parameters, logs or artifacts (checked at the end).
SEEN_SECRETS: dict[str, str] = {}


@pytest.fixture(scope="module")
def admin(deploy_stack: Stack) -> Iterator[httpx.Client]:
    creds = json.loads((deploy_stack.home / "credentials").read_text())
    SEEN_SECRETS["admin token"] = creds["token"]
    with httpx.Client(base_url=deploy_stack.url, auth=("token", creds["token"]), timeout=60) as client:
        yield client


def _ok(response: httpx.Response) -> Any:
    assert response.status_code < 300, f"{response.request.method} {response.request.url}: {response.text}"
    return response.json()


def _principals(admin: httpx.Client, endpoint: str | None = None) -> list[dict[str, Any]]:
    params = {"endpoint_name": endpoint} if endpoint else {}
    return _ok(admin.get("/api/2.0/agents/principals", params=params))["principals"]


def _grants(principal: dict[str, Any]) -> set[tuple[str, str, str]]:
    return {(g["securable_type"], g["full_name"], g["privilege"]) for g in principal["grants"]}


def _endpoint(admin: httpx.Client, name: str) -> dict[str, Any] | None:
    response = admin.get(f"/api/2.0/serving-endpoints/{name}")
    if response.status_code == 404:
        return None
    return _ok(response)


def _routes(endpoint: dict[str, Any]) -> dict[str, int]:
    config = endpoint.get("config") or {}
    return {r["served_model_name"]: int(r["traffic_percentage"])
            for r in (config.get("traffic_config") or {}).get("routes", [])}


def _ask(admin: httpx.Client, endpoint: str = ENDPOINT) -> dict[str, Any]:
    return _ok(admin.post(f"/serving-endpoints/{endpoint}/invocations", json=QUESTION))


def _secret_blocks() -> dict[str, Any]:
    """Every PrincipalSecret block on the stack's Prefect server, by name (values included)."""
    from prefect.client.orchestration import get_client

    from agentdeploy.orchestration import PRINCIPAL_SECRET_BLOCK_TYPE, prefect_settings
    from blocks.principal_secret import PrincipalSecret

    with prefect_settings(), get_client(sync_client=True) as client:
        docs = client.read_block_documents_by_type(PRINCIPAL_SECRET_BLOCK_TYPE, include_secrets=False)
        names = [d.name for d in docs]
        out = {name: PrincipalSecret.load(name) for name in names}
    for name, block in out.items():
        SEEN_SECRETS[f"OAuth secret of {name}"] = block.client_secret.get_secret_value() \
            if hasattr(block.client_secret, "get_secret_value") else str(block.client_secret)
    return out


def _agent_tokens(stack: Stack) -> dict[str, str]:
    out = {}
    for path in (stack.home / "agent-credentials").glob("*.json"):
        out[path.stem] = json.loads(path.read_text())["token"]
        SEEN_SECRETS[f"agent token of {path.stem}"] = out[path.stem]
    return out


def _server_pid(stack: Stack) -> int:
    return stack.recorded_pids()["server"]


def _wait_for(predicate: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.2)


def test_deploy_through_the_sdk_query_and_least_privilege(deploy_stack: Stack, admin: httpx.Client) -> None:
    from agentdeploy import agents

    responder = agents.deploy(RESPONDER, 1)
    assert responder.endpoint_name == RESPONDER_ENDPOINT
    deployment = agents.deploy(SUPPORT_BOT, 1)
    assert (deployment.model_name, deployment.model_version) == (SUPPORT_BOT, "1")
    assert deployment.endpoint_name == ENDPOINT and deployment.served_entity_name == "main-agents-support_bot_1"
    assert deployment.query_endpoint.endswith(f"/serving-endpoints/{ENDPOINT}/served-models/"
                                              "main-agents-support_bot_1/invocations")
    assert deployment.rag_app_url == deployment.review_app_url != ""

    # The agent answers from main.docs.faq: it read the table with its own token.
    answer = _ask(admin)
    sources = answer["custom_outputs"]["sources"]
    assert sources and all(s["doc_uri"].startswith("main.docs.faq/") for s in sources), answer
    tokens = _agent_tokens(deploy_stack)
    assert "main-agents-support_bot_1" in tokens
    me = httpx.get(f"{deploy_stack.url}/api/2.0/preview/scim/v2/Me",
                   auth=("token", tokens["main-agents-support_bot_1"]))
    assert me.status_code == 200, me.text

    # Its principal: hidden from SCIM, holding exactly what the agent uses.
    (principal,) = _principals(admin, ENDPOINT)
    assert principal["model_version"] == "1"
    scim = _ok(admin.get("/api/2.0/preview/scim/v2/ServicePrincipals"))
    assert principal["application_id"] not in json.dumps(scim)
    warehouse = _ok(admin.get("/api/2.0/sql/warehouses"))["warehouses"][0]["name"]
    assert _grants(principal) == {
        ("catalog", "main", "USE_CATALOG"),
        ("schema", "main.docs", "USE_SCHEMA"),
        ("table", "main.docs.faq", "SELECT"),
        ("sql_warehouse", warehouse, "CAN_USE"),
        ("serving_endpoint", RESPONDER_ENDPOINT, "CAN_QUERY"),
    }

    # get_deployments and list_deployments agree.
    got = agents.get_deployments(SUPPORT_BOT)
    assert got == [deployment] == agents.get_deployments(SUPPORT_BOT, 1)
    listed = agents.list_deployments()
    assert {(d.model_name, d.model_version) for d in listed} == {(RESPONDER, "1"), (SUPPORT_BOT, "1")}
    assert deployment in listed and responder in listed

    # Version 2 of both examples for the later tests.
    registered = deploy_stack.cli("examples", "register", timeout=300)
    assert registered.returncode == 0, registered.stdout + registered.stderr


def test_deployer_missing_two_privileges_gets_one_error_and_nothing_is_created(
        deploy_stack: Stack, admin: httpx.Client) -> None:
    """Run through `run_deployment` with another identity's credentials block: the permission
    check applies to that identity, not to the admin whose block the runner was started with."""
    from agentdeploy import agents
    from agentdeploy.orchestration import save_credentials_block

    sp = _ok(admin.post("/api/2.0/preview/scim/v2/ServicePrincipals", json={"displayName": "deployer-bot"}))
    token = _ok(admin.post("/api/2.0/token-management/on-behalf-of/tokens", json={
        "application_id": sp["applicationId"], "lifetime_seconds": 3600, "comment": "deploy test"}))["token_value"]
    SEEN_SECRETS["deployer PAT"] = token
    for securable, name, privilege in [("catalog", "main", "USE_CATALOG"), ("schema", "main.agents", "USE_SCHEMA"),
                                       ("schema", "main.docs", "USE_SCHEMA"),
                                       ("registered_model", SUPPORT_BOT, "EXECUTE")]:
        _ok(admin.patch(f"/api/2.1/unity-catalog/permissions/{securable}/{name}", json={
            "changes": [{"principal": sp["applicationId"], "add": [privilege]}]}))
    responder = _endpoint(admin, RESPONDER_ENDPOINT)
    assert responder is not None
    _ok(admin.patch(f"/api/2.0/permissions/serving-endpoints/{responder['id']}", json={
        "access_control_list": [{"service_principal_name": sp["applicationId"], "permission_level": "CAN_QUERY"}]}))

    before = (_principals(admin), _endpoint(admin, ENDPOINT), agents.list_deployments(), sorted(_secret_blocks()))
    save_credentials_block("deployer-bot", deploy_stack.url, token)
    started = time.monotonic()
    with pytest.raises(agents.DeployFailed) as caught:
        agents.deploy(SUPPORT_BOT, 2, credentials_block="deployer-bot")
    assert time.monotonic() - started < 60  # a denial is never retried
    message = str(caught.value)
    assert "main.docs.faq" in message and "SELECT" in message, message
    assert "CAN_USE" in message, message
    assert message.count("CAN_USE") == 1 and "EXECUTE" not in message and "CAN_QUERY" not in message, message
    after = (_principals(admin), _endpoint(admin, ENDPOINT), agents.list_deployments(), sorted(_secret_blocks()))
    assert after[0] == before[0] and after[2] == before[2] and after[3] == before[3]
    assert _routes(after[1] or {}) == _routes(before[1] or {})
    assert [e["name"] for e in (after[1] or {})["config"]["served_entities"]] == \
        [e["name"] for e in (before[1] or {})["config"]["served_entities"]]


def test_failure_at_each_step_rolls_back_and_the_previous_version_serves(
        deploy_stack: Stack, admin: httpx.Client) -> None:
    """The flow runs in this process (so the test hook's env var reaches it) against the stack's
    Prefect, MLflow and agentdeploy servers: every step does its real work, then fails."""
    from agentdeploy import agents
    from agentdeploy.deploy_spec import DeployParameters
    from agentdeploy.orchestration import prefect_settings
    from flows.deploy_agent import deploy_agent

    server_pid = _server_pid(deploy_stack)
    baseline = {
        "principals": _principals(admin),
        "blocks": sorted(_secret_blocks()),
        "tokens": sorted(_agent_tokens(deploy_stack)),
        "records": agents.list_deployments(),
        "workers": worker_pids(server_pid),
    }
    endpoint = _endpoint(admin, ENDPOINT)
    assert endpoint is not None
    baseline_entities = [e["name"] for e in endpoint["config"]["served_entities"]]
    baseline_routes = _routes(endpoint)
    assert baseline_routes["main-agents-support_bot_1"] == 100
    params = DeployParameters(model_name=SUPPORT_BOT, model_version=2)
    try:
        for step in STEPS:
            os.environ["AGENTDEPLOY_DEPLOY_FAIL_AT"] = step
            with prefect_settings():
                state = deploy_agent(params, return_state=True)
            assert state.is_failed(), (step, state)
            with pytest.raises(Exception, match="failure injected"):
                state.result()
            assert _principals(admin) == baseline["principals"], step
            assert sorted(_secret_blocks()) == baseline["blocks"], step
            assert sorted(_agent_tokens(deploy_stack)) == baseline["tokens"], step
            assert agents.list_deployments() == baseline["records"], step
            endpoint = _endpoint(admin, ENDPOINT)
            assert endpoint is not None, step
            assert [e["name"] for e in endpoint["config"]["served_entities"]] == baseline_entities, step
            assert _routes(endpoint) == baseline_routes, step
            assert endpoint.get("pending_config") is None, step
            _wait_for(lambda: worker_pids(server_pid) <= baseline["workers"], 60, f"worker teardown after {step}")
            answer = _ask(admin)
            assert answer["custom_outputs"]["sources"], (step, answer)
    finally:
        os.environ.pop("AGENTDEPLOY_DEPLOY_FAIL_AT", None)


def test_second_version_deploys_with_zero_failed_requests(deploy_stack: Stack, admin: httpx.Client) -> None:
    """Also shows re-running a deploy after failed ones converges: one principal per version."""
    from agentdeploy import agents

    failures: list[str] = []
    answered: list[int] = []
    stop = threading.Event()

    def traffic() -> None:
        with httpx.Client(base_url=deploy_stack.url, auth=admin.auth, timeout=30) as client:
            while not stop.is_set():
                try:
                    response = client.post(f"/serving-endpoints/{ENDPOINT}/invocations", json=QUESTION)
                except httpx.HTTPError as exc:
                    failures.append(repr(exc))
                    continue
                if response.status_code != 200:
                    failures.append(f"{response.status_code}: {response.text[:200]}")
                else:
                    answered.append(1)

    threads = [threading.Thread(target=traffic, daemon=True) for _ in range(4)]
    for thread in threads:
        thread.start()
    try:
        deployment = agents.deploy(SUPPORT_BOT, 2)
        deadline = time.monotonic() + 60
        while len(answered) + len(failures) < 300 and time.monotonic() < deadline:
            time.sleep(0.1)
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=30)
    assert failures == [], failures[:5]
    assert len(answered) >= 200
    assert deployment.served_entity_name == "main-agents-support_bot_2"
    endpoint = _endpoint(admin, ENDPOINT)
    assert endpoint is not None
    routes = _routes(endpoint)
    assert routes["main-agents-support_bot_2"] == 100 and routes["main-agents-support_bot_1"] == 0
    versions = sorted(p["model_version"] for p in _principals(admin, ENDPOINT))
    assert versions == ["1", "2"]
    assert {d.model_version for d in agents.get_deployments(SUPPORT_BOT)} == {"1", "2"}


def _read_runs() -> tuple[list[Any], dict[str, list[Any]]]:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowFilter, FlowFilterName, FlowRunFilter, FlowRunFilterId

    from agentdeploy.orchestration import prefect_settings

    with prefect_settings(), get_client(sync_client=True) as client:
        runs = client.read_flow_runs(flow_filter=FlowFilter(name=FlowFilterName(any_=["deploy-agent"])))
        tasks = {}
        for run in runs:
            tasks[str(run.id)] = client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[run.id])))
    return runs, tasks


def test_flow_runs_and_task_runs_show_in_prefect(deploy_stack: Stack) -> None:
    runs, tasks = _read_runs()
    by_name: dict[str, list[Any]] = {}
    for run in runs:
        by_name.setdefault(run.name, []).append(run)
    completed = [r for r in by_name["deploy main.agents.support_bot v2"] if r.state.is_completed()]
    assert len(completed) == 1 and completed[0].deployment_id is not None  # through run_deployment
    names = {re.sub(r"-[0-9a-f]{3}$", "", t.name) for t in tasks[str(completed[0].id)]}
    assert set(STEPS) <= names, names
    assert all(t.state.is_completed() for t in tasks[str(completed[0].id)])
    # The injected failures: one failed run per step (in this process), plus the denied deploy.
    failed = [r for r in by_name["deploy main.agents.support_bot v2"] if r.state.is_failed()]
    assert len(failed) == len(STEPS) + 1


def test_summary_artifact(deploy_stack: Stack, admin: httpx.Client) -> None:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

    from agentdeploy.orchestration import prefect_settings

    with prefect_settings(), get_client(sync_client=True) as client:
        artifacts = client.read_artifacts(artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[
            "deploy-agents-main-agents-support-bot"])))
    assert artifacts, "no artifact with the endpoint's stable key"
    latest = max(artifacts, key=lambda a: a.created)
    markdown = latest.data
    (v2,) = [p for p in _principals(admin, ENDPOINT) if p["model_version"] == "2"]
    assert "version 2" in markdown
    assert f"/serving-endpoints/{ENDPOINT}/served-models/main-agents-support_bot_2/invocations" in markdown
    assert v2["application_id"] in markdown
    assert "main.docs.faq" in markdown and "SELECT" in markdown
    assert "## Changes against the previous version" in markdown and "- none" in markdown
    for step in ("resolve model version", "validate permissions", "provision endpoint", "wait until ready",
                 "record deployment"):
        assert f"| {step} |" in markdown, step
    assert len(artifacts) >= 2  # one per successful deploy of the endpoint, same key


def test_no_secret_in_prefect_db_parameters_logs_or_artifacts(deploy_stack: Stack) -> None:
    from prefect.client.orchestration import get_client

    from agentdeploy.orchestration import prefect_settings

    _secret_blocks()
    _agent_tokens(deploy_stack)
    secrets = {k: v for k, v in SEEN_SECRETS.items() if v}
    assert any(k.startswith("OAuth secret") for k in secrets) and any(k.startswith("agent token") for k in secrets)
    files = [p for p in (deploy_stack.home / "prefect").rglob("*") if p.is_file()]
    files += [p for p in (deploy_stack.home / "logs").rglob("*") if p.is_file()]
    assert any(p.name == "prefect.db" for p in files)
    for path in files:
        content = path.read_bytes()
        for name, value in secrets.items():
            assert value.encode() not in content, f"{name} found in {path}"
    runs, _ = _read_runs()
    with prefect_settings(), get_client(sync_client=True) as client:
        artifacts = client.read_artifacts()
        logs = client.read_logs()
    exposed = json.dumps([r.parameters for r in runs] + [r.name for r in runs], default=str)
    exposed += json.dumps([a.data for a in artifacts], default=str)
    exposed += json.dumps([log.message for log in logs], default=str)
    assert artifacts and runs
    for name, value in secrets.items():
        assert value not in exposed, f"{name} found in flow parameters, run names, artifacts or logs"


def test_delete_deployment_by_version_then_the_endpoint(deploy_stack: Stack, admin: httpx.Client) -> None:
    from agentdeploy import agents

    tokens = _agent_tokens(deploy_stack)
    v2_token = tokens["main-agents-support_bot_2"]
    assert httpx.get(f"{deploy_stack.url}/api/2.0/preview/scim/v2/Me", auth=("token", v2_token)).status_code == 200
    (v2,) = [p for p in _principals(admin, ENDPOINT) if p["model_version"] == "2"]
    tables_before = {t["full_name"] for t in _ok(admin.get("/api/2.1/unity-catalog/tables", params={
        "catalog_name": "main", "schema_name": "agents"})).get("tables", [])}

    agents.delete_deployment(SUPPORT_BOT, 2)
    # Its token fails at once; its principal, grants, secret block and record are gone.
    assert httpx.get(f"{deploy_stack.url}/api/2.0/preview/scim/v2/Me", auth=("token", v2_token)).status_code == 401
    assert [p["model_version"] for p in _principals(admin, ENDPOINT)] == ["1"]
    assert all(v2["application_id"] not in name for name in _secret_blocks())
    assert [d.model_version for d in agents.get_deployments(SUPPORT_BOT)] == ["1"]
    assert "main-agents-support_bot_2" not in _agent_tokens(deploy_stack)
    endpoint = _endpoint(admin, ENDPOINT)
    assert endpoint is not None
    assert "main-agents-support_bot_2" not in [e["name"] for e in endpoint["config"]["served_entities"]]

    def v1_serves() -> bool:
        current = _endpoint(admin, ENDPOINT) or {}
        return _routes(current).get("main-agents-support_bot_1") == 100 and (current.get("state") or {}).get(
            "config_update") == "NOT_UPDATING"

    _wait_for(v1_serves, 120, "traffic back on version 1")
    assert _ask(admin)["custom_outputs"]["sources"]

    agents.delete_deployment(SUPPORT_BOT)
    assert _endpoint(admin, ENDPOINT) is None
    assert agents.get_deployments(SUPPORT_BOT) == []
    assert _principals(admin, ENDPOINT) == []
    tables_after = {t["full_name"] for t in _ok(admin.get("/api/2.1/unity-catalog/tables", params={
        "catalog_name": "main", "schema_name": "agents"})).get("tables", [])}
    assert tables_before <= tables_after  # inference tables are data: they stay
    assert [d.model_name for d in agents.list_deployments()] == [RESPONDER]


def test_sigterm_to_the_foreground_up_stops_every_service_and_worker(deploy_stack: Stack) -> None:
    """This module's stack runs as a foreground `agentdeploy up`: SIGTERM stops the supervisor,
    each service (Prefect, MLflow, the server, the flow runner) and the server's workers and spare."""
    up = deploy_stack.foreground
    assert up is not None and up.poll() is None
    recorded = deploy_stack.recorded_pids()
    assert recorded["supervisor"] == up.pid and len(recorded) == 5  # prefect, mlflow, server, flows
    server_children = children(recorded["server"])
    assert server_children, "the server runs at least its spare worker interpreter"
    up.send_signal(signal.SIGTERM)
    assert up.wait(timeout=60) == 0
    assert not [pid for pid in [*recorded.values(), *server_children] if alive(pid)]
    assert deploy_stack.processes() == []
    assert "the stack is stopped" in (deploy_stack.home / "logs" / "foreground-test.log").read_text()

