"""The example agents: the responder's extraction, the support bot's logging and failure modes,
and `register_examples` against a real server and a real MLflow tracking server."""

from __future__ import annotations

import importlib.util
import shutil
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from agentdeploy.client import AgentDeployClient
from agentdeploy.errors import AlreadyExists
from agentdeploy.examples import EXAMPLES_DIR, FAQ_TABLE, register_examples
from agentdeploy.naming import endpoint_name_for
from agentdeploy.serving.backends.base import ServedEntitySpec
from agentdeploy.serving.backends.local import LocalProcessBackend
from agentdeploy.settings import Settings
from tests.harness import ServerProcess, free_port, private_dir, start_mlflow_server, stop_mlflow_server
from tests.serving.worker_fixtures import LoopThread, invoke, split_answer


def _responder_module() -> Any:
    spec = importlib.util.spec_from_file_location("responder_agent", EXAMPLES_DIR / "responder" / "agent.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_responder_picks_the_best_sentences_deterministically() -> None:
    responder = _responder_module()
    context = (
        "Refunds are paid within 5 days. Shipping is free over 50 euros. "
        "Refunds for damaged goods need a photo. Our office is in Lyon."
    )
    assert responder.extract_answer("How long until refunds are paid?", context) == (
        "Refunds are paid within 5 days. Refunds for damaged goods need a photo."
    )
    assert responder.extract_answer("Where is the office?", context, 1) == "Our office is in Lyon."
    assert responder.extract_answer("What about penguins?", context) == responder.NOT_FOUND_ANSWER
    assert responder.extract_answer("Anything?", "") == responder.NO_CONTEXT_ANSWER
    assert endpoint_name_for("main.agents.responder") == "agents_main-agents-responder"


def test_the_responder_answers_through_its_worker(backend: LocalProcessBackend, responder: str) -> None:
    question = {
        "messages": [
            {
                "role": "user",
                "content": "Which day is it closed?\nContext:\nThe shop opens at 9. "
                "It is closed on Sunday. Parking is free.",
            }
        ]
    }
    body, trace = split_answer(invoke(backend, responder, question, api="chat.completions"))
    assert body["choices"][0]["message"]["content"] == "It is closed on Sunday."
    assert any(span["name"] == "extract_answer" for span in trace["data"]["spans"])


def test_the_support_bot_is_logged_with_its_resources_and_config(registry: dict[str, Any]) -> None:
    from mlflow.models import Model

    model = Model.load(str(registry["support_bot"]["path"] / "MLmodel"))
    assert model.resources == {
        "api_version": "1",
        "databricks": {
            "sql_warehouse": [{"name": "w-test-1"}],
            "table": [{"name": FAQ_TABLE}],
            "serving_endpoint": [{"name": "agents_main-agents-responder"}],
        },
    }
    assert model.flavors["python_function"]["config"] == {
        "warehouse_id": "w-test-1",
        "responder_endpoint": "agents_main-agents-responder",
        "faq_table": FAQ_TABLE,
    }
    assert model.metadata["task"] == "agent/v1/responses"


@pytest.fixture(scope="module")
def support_bot(
    registry: dict[str, Any], backend: LocalProcessBackend, loop_thread: LoopThread
) -> Iterator[str]:
    """The support bot served against a workspace URL where nothing listens."""
    name = "support-bot-unreachable"
    backend.write_credentials(name, "some-token", None)
    loop_thread.run(
        backend.start(
            ServedEntitySpec(
                name=name,
                model_uri=registry["support_bot"]["model_uri"],
                model_path=registry["support_bot"]["path"],
                workspace_host=f"http://127.0.0.1:{free_port()}",
            )
        )
    )
    yield name
    loop_thread.run(backend.remove(name))


def test_the_support_bot_with_an_unreachable_workspace_gives_a_clean_error(
    backend: LocalProcessBackend, support_bot: str
) -> None:
    for body in (
        {"input": [{"role": "user", "content": "How do I reset my password?"}]},
        {"input": [{"role": "user", "content": "How do I reset my password?"}], "stream": True},
    ):
        response = invoke(backend, support_bot, body)
        assert response.status_code == 500
        assert response.json() == {
            "error_code": "AGENT_ERROR",
            "message": "WorkspaceUnavailable: Cannot reach the workspace for reading main.docs.faq "
            "(ConnectError).",
        }


@pytest.fixture(scope="module")
def examples_mlflow_server() -> Iterator[str]:
    """A registry of its own: the test checks the examples land as version 1."""
    store = private_dir("agentdeploy-mlflow-examples-")
    server = start_mlflow_server(store)
    try:
        yield server.url
    finally:
        stop_mlflow_server(server)
        shutil.rmtree(store, ignore_errors=True)


@pytest.mark.slow
def test_register_examples_logs_registers_and_records_both(
    stack_home: ServerProcess, examples_mlflow_server: str
) -> None:
    from mlflow import MlflowClient
    from mlflow.models import Model

    client = AgentDeployClient(stack_home.url, stack_home.admin_token)
    try:  # as the demo data does; Databricks workspaces have `main` from the start
        client.post("/api/2.1/unity-catalog/catalogs", json={"name": "main"})
    except AlreadyExists:
        pass
    warehouse_id = client.post("/api/2.0/sql/warehouses", json={"name": "Demo warehouse"})["id"]
    settings = Settings(
        home=stack_home.home, port=stack_home.port, mlflow_port=int(examples_mlflow_server.rsplit(":", 1)[1])
    )
    results = register_examples(client, settings)
    assert results["support_bot"]["warehouse_id"] == warehouse_id
    assert results["responder"]["endpoint_name"] == "agents_main-agents-responder"
    registry = MlflowClient(tracking_uri=examples_mlflow_server, registry_uri=examples_mlflow_server)
    for result in results.values():
        version = registry.get_model_version(result["name"], result["version"])
        assert version.status == "READY"
    bot = results["support_bot"]
    source = registry.get_model_version_download_uri(bot["name"], bot["version"])
    import mlflow.artifacts

    local = mlflow.artifacts.download_artifacts(
        artifact_uri=source + "/MLmodel", tracking_uri=examples_mlflow_server
    )
    assert Model.load(local).resources["databricks"]["sql_warehouse"] == [{"name": warehouse_id}]
    # Recorded in the catalog, owned by the caller (or skipped with a reason while that API is missing).
    for result in results.values():
        if result["securable"].startswith("skipped"):
            pytest.xfail(f"catalog registration: {result['securable']}")
        model = httpx.get(
            f"{stack_home.url}/api/2.1/unity-catalog/models/{result['name']}",
            headers={"Authorization": f"Bearer {stack_home.admin_token}"},
        ).json()
        assert model["owner"] == "admin", model
