"""`/api/2.0/serving-endpoints`: configs, roll-outs and states, through the databricks-sdk and httpx."""

from __future__ import annotations

import time
from datetime import timedelta
from pathlib import Path

import httpx
import pytest
from databricks.sdk import WorkspaceClient
from databricks.sdk.service.serving import (
    AiGatewayRateLimit,
    AiGatewayRateLimitKey,
    AiGatewayRateLimitRenewalPeriod,
    EndpointCoreConfigInput,
    EndpointStateConfigUpdate,
    EndpointStateReady,
    EndpointTag,
    ServedEntityInput,
    ServedModelStateDeployment,
)

from tests.harness import ServerProcess
from tests.serving.conftest import (
    ECHO_MODEL,
    MlflowServer,
    create_principal,
    echo_config,
    set_permission,
    start_serving_server,
    wait_endpoint,
)

CHAT = {"messages": [{"role": "user", "content": "hello"}]}
SECRET_VALUE = "s3cr3t-value-never-shown"


def _sdk(server: ServerProcess, token: str | None = None) -> WorkspaceClient:
    return WorkspaceClient(host=server.url, token=token or server.admin_token, auth_type="pat")


def _answer(client: httpx.Client, name: str, text: str = "hello") -> httpx.Response:
    return client.post(
        f"/serving-endpoints/{name}/invocations", json={"messages": [{"role": "user", "content": text}]}
    )


def test_sdk_lifecycle_create_update_tags_gateway_logs_metrics_delete(
    serving_server: ServerProcess, admin: httpx.Client
) -> None:
    assert admin.post("/api/2.0/secrets/scopes/create", json={"scope": "lifecycle"}).status_code == 200
    assert (
        admin.post(
            "/api/2.0/secrets/put",
            json={"scope": "lifecycle", "key": "api-key", "string_value": SECRET_VALUE},
        ).status_code
        == 200
    )
    w = _sdk(serving_server)
    env = {"GREETING": "hi", "API_KEY": "{{secrets/lifecycle/api-key}}"}
    detailed = w.serving_endpoints.create_and_wait(
        name="lifecycle",
        config=EndpointCoreConfigInput(
            name="lifecycle",
            served_entities=[
                ServedEntityInput(
                    entity_name=ECHO_MODEL,
                    entity_version="1",
                    workload_size="Small",
                    scale_to_zero_enabled=False,
                    environment_vars=env,
                )
            ],
        ),
        tags=[EndpointTag(key="team", value="agents")],
        timeout=timedelta(minutes=3),
    )
    assert detailed.state.config_update == EndpointStateConfigUpdate.NOT_UPDATING
    assert detailed.state.ready == EndpointStateReady.READY
    entity = detailed.config.served_entities[0]
    assert entity.name == "main-tests-echo_1" and entity.entity_version == "1"
    assert entity.state.deployment == ServedModelStateDeployment.DEPLOYMENT_READY
    assert entity.environment_vars == env, "the secret reference is stored and shown, never its value"
    assert detailed.config.traffic_config.routes[0].traffic_percentage == 100
    raw = admin.get("/api/2.0/serving-endpoints/lifecycle").text
    assert SECRET_VALUE not in raw and detailed.permission_level.value == "CAN_MANAGE"
    assert _answer(admin, "lifecycle").json()["choices"][0]["message"]["content"] == "v1: hello"

    listed = {e.name: e for e in w.serving_endpoints.list()}
    assert listed["lifecycle"].config.served_entities[0].entity_name == ECHO_MODEL

    tags = w.serving_endpoints.patch(
        "lifecycle", add_tags=[EndpointTag(key="env", value="dev")], delete_tags=["team"]
    )
    assert {(t.key, t.value) for t in tags.tags} == {("env", "dev")}

    gateway = w.serving_endpoints.put_ai_gateway(
        "lifecycle",
        rate_limits=[
            AiGatewayRateLimit(
                calls=100,
                key=AiGatewayRateLimitKey.USER,
                renewal_period=AiGatewayRateLimitRenewalPeriod.MINUTE,
            )
        ],
    )
    assert gateway.rate_limits[0].calls == 100
    assert w.serving_endpoints.get("lifecycle").ai_gateway.rate_limits[0].calls == 100

    logs = w.serving_endpoints.logs("lifecycle", "main-tests-echo_1").logs
    assert logs.strip(), "the worker's log is readable through the API"
    assert SECRET_VALUE not in logs
    build = w.serving_endpoints.build_logs("lifecycle", "main-tests-echo_1").logs
    assert "models:/main.tests.echo/1" in build and "DEPLOYMENT_READY" in build

    metrics = w.serving_endpoints.export_metrics("lifecycle").contents.read().decode()
    assert (
        'request_count_total{endpoint_name="lifecycle",served_entity_name="main-tests-echo_1"} 1' in metrics
    )
    assert "# TYPE request_latency_ms histogram" in metrics and "request_latency_ms_bucket" in metrics

    updated = w.serving_endpoints.update_config_and_wait(
        "lifecycle",
        served_entities=[
            ServedEntityInput(
                entity_name=ECHO_MODEL, entity_version="2", workload_size="Small", scale_to_zero_enabled=False
            )
        ],
        timeout=timedelta(minutes=3),
    )
    assert updated.config.config_version == 2 and updated.pending_config is None
    assert [e.name for e in updated.config.served_entities] == ["main-tests-echo_2"]
    assert _answer(admin, "lifecycle").json()["choices"][0]["message"]["content"] == "v2: hello"

    audit_text = str(admin.get("/api/2.0/serving-endpoints/lifecycle").json())
    assert SECRET_VALUE not in audit_text

    w.serving_endpoints.delete("lifecycle")
    gone = admin.get("/api/2.0/serving-endpoints/lifecycle")
    assert gone.status_code == 404 and gone.json()["error_code"] == "RESOURCE_DOES_NOT_EXIST"
    assert _answer(admin, "lifecycle").status_code == 404


def test_failed_update_keeps_old_config_serving_and_says_why(admin: httpx.Client) -> None:
    assert (
        admin.post(
            "/api/2.0/serving-endpoints", json={"name": "keeps-old", "config": echo_config(1)}
        ).status_code
        == 200
    )
    assert wait_endpoint(admin, "keeps-old")["state"]["ready"] == "READY"
    updated = admin.put("/api/2.0/serving-endpoints/keeps-old/config", json=echo_config(99))
    assert updated.status_code == 200 and updated.json()["state"]["config_update"] == "IN_PROGRESS"
    # Meanwhile, and after the failure, the old config answers.
    assert _answer(admin, "keeps-old").json()["choices"][0]["message"]["content"] == "v1: hello"
    failed = wait_endpoint(admin, "keeps-old")
    assert failed["state"]["config_update"] == "UPDATE_FAILED" and failed["state"]["ready"] == "READY"
    message = failed["state"]["config_update_message"]
    assert "main-tests-echo_99" in message and "last lines of its log" in message
    assert failed["config"]["config_version"] == 1 and "pending_config" not in failed
    assert _answer(admin, "keeps-old").json()["choices"][0]["message"]["content"] == "v1: hello"
    # A failed update does not block the next one.
    retry = admin.put(
        "/api/2.0/serving-endpoints/keeps-old/config",
        json={
            "traffic_config": {
                "routes": [{"served_model_name": "main-tests-echo_1", "traffic_percentage": 100}]
            }
        },
    )
    assert retry.status_code == 200, retry.text
    assert wait_endpoint(admin, "keeps-old")["state"]["config_update"] == "NOT_UPDATING"
    assert admin.delete("/api/2.0/serving-endpoints/keeps-old").status_code == 200


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"name": "bad name!", "config": echo_config(1)}, "'name'"),
        ({"name": "x1", "config": {"served_entities": []}}, "served_entities"),
        ({"name": "x1", "config": echo_config("one")}, "entity_version"),
        ({"name": "x1", "config": echo_config(1, environment_vars={"BAD-NAME": "v"})}, "environment_vars"),
        (
            {"name": "x1", "config": echo_config(1, environment_vars={"AGENTDEPLOY_HOME": "/"})},
            "AGENTDEPLOY_HOME",
        ),
        (
            {"name": "x1", "config": echo_config(1, environment_vars={"K": "{{secrets/only-scope}}"})},
            "secret reference",
        ),
        (
            {
                "name": "x1",
                "config": {
                    **echo_config(1, name="a"),
                    "traffic_config": {"routes": [{"served_model_name": "a", "traffic_percentage": 60}]},
                },
            },
            "add up to 100",
        ),
        (
            {
                "name": "x1",
                "config": {
                    **echo_config(1, name="a"),
                    "traffic_config": {"routes": [{"served_model_name": "b", "traffic_percentage": 100}]},
                },
            },
            "'b'",
        ),
        (
            {
                "name": "x1",
                "ai_gateway": {"rate_limits": [{"calls": 5, "key": "planet", "renewal_period": "minute"}]},
            },
            "rate_limits[0].key",
        ),
    ],
)
def test_bad_configs_are_400_naming_the_field(admin: httpx.Client, body: dict, field: str) -> None:
    response = admin.post("/api/2.0/serving-endpoints", json=body)
    assert response.status_code == 400, response.text
    assert response.json()["error_code"] == "INVALID_PARAMETER_VALUE" and field in response.json()["message"]
    assert admin.get("/api/2.0/serving-endpoints/x1").status_code == 404


def test_permissions_view_and_manage(serving_server: ServerProcess, admin: httpx.Client) -> None:
    assert admin.post("/api/2.0/serving-endpoints", json={"name": "guarded"}).status_code == 200
    assert admin.post("/api/2.0/serving-endpoints", json={"name": "guarded"}).status_code == 409
    endpoint_id = admin.get("/api/2.0/serving-endpoints/guarded").json()["id"]
    other = create_principal(admin, "api-outsider")
    with httpx.Client(
        base_url=serving_server.url, headers={"Authorization": f"Bearer {other.token}"}
    ) as client:
        denied = client.get("/api/2.0/serving-endpoints/guarded")
        assert denied.status_code == 403 and "CAN_VIEW" in denied.json()["message"]
        assert "guarded" not in [
            e["name"] for e in client.get("/api/2.0/serving-endpoints").json()["endpoints"]
        ]
        set_permission(admin, endpoint_id, other, "CAN_QUERY")
        seen = client.get("/api/2.0/serving-endpoints/guarded")
        assert seen.status_code == 200 and seen.json()["permission_level"] == "CAN_QUERY"
        change = client.put("/api/2.0/serving-endpoints/guarded/config", json=echo_config(1))
        assert change.status_code == 403 and "CAN_MANAGE" in change.json()["message"]
        assert client.delete("/api/2.0/serving-endpoints/guarded").status_code == 403
    assert admin.delete("/api/2.0/serving-endpoints/guarded").status_code == 200


def test_restart_brings_endpoints_back(tmp_path: Path, mlflow_server: MlflowServer) -> None:
    server = start_serving_server(tmp_path / "home", mlflow_server)
    try:
        with server.client() as admin:
            assert (
                admin.post(
                    "/api/2.0/serving-endpoints", json={"name": "survivor", "config": echo_config(2)}
                ).status_code
                == 200
            )
            before = wait_endpoint(admin, "survivor")
            assert before["state"]["ready"] == "READY"
        server.restart()
        with server.client() as admin:
            deadline = time.monotonic() + 120
            while True:  # no manual step: the server starts the workers of every stored config
                answer = _answer(admin, "survivor")
                if answer.status_code == 200:
                    break
                assert answer.status_code == 503 and answer.headers.get("retry-after"), answer.text
                assert time.monotonic() < deadline, "the endpoint did not come back after the restart"
                time.sleep(0.2)
            assert answer.json()["choices"][0]["message"]["content"] == "v2: hello"
            after = admin.get("/api/2.0/serving-endpoints/survivor").json()
            assert after["id"] == before["id"] and after["config"] == {
                **before["config"],
                "served_entities": after["config"]["served_entities"],
            }
            assert after["state"] == {"ready": "READY", "config_update": "NOT_UPDATING"}
    finally:
        server.stop()
