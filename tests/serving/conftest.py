"""Serving fixtures.

Endpoints and gateway (test_endpoints_api.py, test_gateway.py): one MLflow tracking server
holding the example `responder` and a test agent `main.tests.echo` (two versions), and one
agentdeploy server (real gateway, real local-process backend) pointed at it. Set
TESTS_MLFLOW_PORT to reuse a tracking server that already holds them (quick re-runs).

Worker and backend fixtures live in worker_fixtures.py (imported below).
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.harness import MlflowServer, ServerProcess, private_dir, run_mlflow_script
from tests.serving.worker_fixtures import (  # noqa: F401
    backend,
    loop_thread,
    probe,
    registry,
    responder,
    stack_home,
)

HERE = Path(__file__).resolve().parent
ECHO_MODEL = "main.tests.echo"
RESPONDER_MODEL = "main.agents.responder"


def register_test_models(tracking_uri: str) -> None:
    """The example responder (version 1) and echo versions 1 and 2 (tags v1 / v2)."""
    run_mlflow_script(tracking_uri, f"""
mlflow.set_experiment("serving-tests")
from agentdeploy import examples
examples.log_responder()
for tag in ("v1", "v2"):
    with mlflow.start_run():
        mlflow.pyfunc.log_model(name="model", python_model={str(HERE / "echo_chat.py")!r},
                                model_config={{"tag": tag}}, registered_model_name={ECHO_MODEL!r},
                                pip_requirements=["mlflow==3.17.2"])
""")


@pytest.fixture(scope="session")
def mlflow_server(mlflow_server: MlflowServer) -> MlflowServer:
    """The session's tracking server (tests/conftest.py), holding the serving tests' models."""
    if mlflow_server.proc is not None:  # a reused server holds them already
        register_test_models(mlflow_server.url)
    return mlflow_server


def start_serving_server(home: Path, mlflow: MlflowServer, **env: str) -> ServerProcess:
    server = ServerProcess(home=home, extra_env={"AGENTDEPLOY_MLFLOW_PORT": str(mlflow.port), **env})
    server.start()
    return server


@pytest.fixture(scope="session")
def serving_server(mlflow_server: MlflowServer) -> Iterator[ServerProcess]:
    """An agentdeploy server with a short endpoint timeout (3 s) and a small payload limit (256 KiB)."""
    parent = private_dir("agentdeploy-gw-")
    server = start_serving_server(
        parent / "home",
        mlflow_server,
        AGENTDEPLOY_ENDPOINT_TIMEOUT_S="3",
        AGENTDEPLOY_MAX_PAYLOAD_BYTES=str(256 * 1024),
    )
    yield server
    server.stop()
    shutil.rmtree(parent, ignore_errors=True)


@pytest.fixture()
def admin(serving_server: ServerProcess) -> Iterator[httpx.Client]:
    with serving_server.client() as client:
        yield client


def wait_endpoint(client: httpx.Client, name: str, timeout: float = 180.0) -> dict[str, Any]:
    """GET until the endpoint's config_update leaves IN_PROGRESS; returns the last answer."""
    deadline = time.monotonic() + timeout
    while True:
        body: dict[str, Any] = client.get(f"/api/2.0/serving-endpoints/{name}").json()
        if body.get("state", {}).get("config_update") != "IN_PROGRESS":
            return body
        if time.monotonic() > deadline:
            raise TimeoutError(f"endpoint {name} still updating: {body}")
        time.sleep(0.2)


def echo_config(
    version: int | str = 1, name: str | None = None, model: str = ECHO_MODEL, **entity: object
) -> dict[str, Any]:
    served: dict[str, Any] = {
        "entity_name": model,
        "entity_version": str(version),
        "workload_size": "Small",
        "scale_to_zero_enabled": False,
        **entity,
    }
    if name:
        served["name"] = name
    return {"served_entities": [served]}


@dataclass
class Principal:
    name: str
    application_id: str
    token: str


def create_principal(admin: httpx.Client, display_name: str) -> Principal:
    """A service principal (no grants) and a token for it, made by the admin through the API."""
    created = admin.post("/api/2.0/preview/scim/v2/ServicePrincipals", json={"displayName": display_name})
    assert created.status_code == 201, created.text
    app_id = created.json()["applicationId"]
    token = admin.post(
        "/api/2.0/token-management/on-behalf-of/tokens",
        json={"application_id": app_id, "lifetime_seconds": 3600},
    )
    assert token.status_code == 200, token.text
    return Principal(display_name, app_id, token.json()["token_value"])


def set_permission(admin: httpx.Client, endpoint_id: str, principal: Principal, level: str | None) -> None:
    """Grant `level` on the endpoint to the principal, or (None) take its grants away (a PUT of the
    current direct grants of everyone else)."""
    path = f"/api/2.0/permissions/serving-endpoints/{endpoint_id}"
    if level is not None:
        acl = [{"service_principal_name": principal.application_id, "permission_level": level}]
        response = admin.patch(path, json={"access_control_list": acl})
        assert response.status_code == 200, response.text
        return
    keep = []
    for entry in admin.get(path).json()["access_control_list"]:
        key = next(k for k in ("user_name", "group_name", "service_principal_name") if k in entry)
        if entry[key] in (principal.application_id, principal.name):
            continue
        keep += [
            {key: entry[key], "permission_level": p["permission_level"]}
            for p in entry["all_permissions"]
            if not p.get("inherited") and p["permission_level"] != "IS_OWNER"
        ]
    response = admin.put(path, json={"access_control_list": keep})
    assert response.status_code == 200, response.text
