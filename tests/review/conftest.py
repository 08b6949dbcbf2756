"""Review app fixtures: one MLflow tracking server holding the test agent `main.tests.review_agent`
(tests/review/review_agent.py) and the feedback model `main.tests.feedback`, and one agentdeploy
server serving endpoint `review-ep` (the agent plus the feedback model, inference tables on) with
a deployment record, and three service principals: a querier (CAN_QUERY), a reviewer
(CAN_REVIEW) and an outsider (no permission)."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.harness import MlflowServer, ServerProcess, inference_table_config, private_dir, run_mlflow_script
from tests.serving.conftest import Principal, create_principal, wait_endpoint

HERE = Path(__file__).resolve().parent
AGENT_MODEL = "main.tests.review_agent"
FEEDBACK_MODEL = "main.tests.feedback"
ENDPOINT = "review-ep"


@pytest.fixture(scope="session")
def review_mlflow(mlflow_server: MlflowServer) -> MlflowServer:
    """The session's tracking server (tests/conftest.py), holding the review agent and the feedback model."""
    if mlflow_server.proc is not None:  # a reused server holds them already
        run_mlflow_script(mlflow_server.url, f"""
mlflow.set_experiment("review-tests")
with mlflow.start_run():
    mlflow.pyfunc.log_model(name="agent", python_model={str(HERE / "review_agent.py")!r},
                            registered_model_name={AGENT_MODEL!r}, pip_requirements=["mlflow==3.17.2"])
from agentdeploy.serving.feedback import log_feedback_model
with mlflow.start_run():
    log_feedback_model({FEEDBACK_MODEL!r})
""")
    return mlflow_server


@dataclass
class ReviewStack:
    server: ServerProcess
    endpoint: str
    endpoint_id: str
    querier: Principal
    other_querier: Principal
    reviewer: Principal
    outsider: Principal

    @property
    def url(self) -> str:
        return self.server.url

    def admin(self) -> httpx.Client:
        return self.server.client()

    def payload_table(self) -> Path:
        return self.server.home / "warehouse" / "main" / "tests" / "review_ep_payload"


def endpoint_body(name: str, *, scale_to_zero: bool = False) -> dict[str, object]:
    return {
        "name": name,
        "config": {
            "served_entities": [
                {
                    "name": "agent",
                    "entity_name": AGENT_MODEL,
                    "entity_version": "1",
                    "workload_size": "Small",
                    "scale_to_zero_enabled": scale_to_zero,
                },
                {
                    "name": "feedback",
                    "entity_name": FEEDBACK_MODEL,
                    "entity_version": "1",
                    "workload_size": "Small",
                    "scale_to_zero_enabled": False,
                },
            ],
            "traffic_config": {
                "routes": [
                    {"served_model_name": "agent", "traffic_percentage": 100},
                    {"served_model_name": "feedback", "traffic_percentage": 0},
                ]
            },
        },
        "ai_gateway": {
            "inference_table_config": inference_table_config("main", "tests", name.replace("-", "_"))
        },
    }


@pytest.fixture(scope="session")
def review_stack(review_mlflow: MlflowServer) -> Iterator[ReviewStack]:
    parent = private_dir("agentdeploy-review-")
    server = ServerProcess(
        home=parent / "home",
        extra_env={
            "AGENTDEPLOY_MLFLOW_PORT": str(review_mlflow.port),
            "AGENTDEPLOY_ENDPOINT_TIMEOUT_S": "30",
            # Only scale_to_zero_enabled entities stop (test_scale_to_zero.py's endpoint); review-ep stays up.
            "AGENTDEPLOY_SCALE_TO_ZERO_IDLE_S": "3",
        },
    )
    server.start()
    try:
        with server.client() as admin:
            # The inference tables' schema (the payload table is created there).
            for path, body in (
                ("catalogs", {"name": "main"}),
                ("schemas", {"name": "tests", "catalog_name": "main"}),
            ):
                made = admin.post(f"/api/2.1/unity-catalog/{path}", json=body)
                assert made.status_code in (200, 201, 409), made.text
            created = admin.post("/api/2.0/serving-endpoints", json=endpoint_body(ENDPOINT))
            assert created.status_code == 200, created.text
            state = wait_endpoint(admin, ENDPOINT)
            assert state["state"]["ready"] == "READY", state
            record = admin.post(
                "/api/2.0/agents/deployments",
                json={
                    "model_name": AGENT_MODEL,
                    "model_version": "1",
                    "endpoint_name": ENDPOINT,
                    "served_entity_name": "agent",
                    "workspace_url": server.url,
                    "query_endpoint": f"{server.url}/serving-endpoints/{ENDPOINT}/invocations",
                },
            )
            assert record.status_code == 200, record.text
            principals = [create_principal(admin, f"review-{who}") for who in ("q", "q2", "r", "o")]
            for p, level in zip(principals[:3], ("CAN_QUERY", "CAN_QUERY", "CAN_REVIEW"), strict=True):
                granted = admin.patch(
                    f"/api/2.0/permissions/serving-endpoints/{ENDPOINT}",
                    json={
                        "access_control_list": [
                            {"service_principal_name": p.application_id, "permission_level": level}
                        ]
                    },
                )
                assert granted.status_code == 200, granted.text
        yield ReviewStack(server, ENDPOINT, state["id"], *principals)
    finally:
        server.stop()
        shutil.rmtree(parent, ignore_errors=True)
