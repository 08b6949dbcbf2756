"""The gateway: real clients (httpx, openai, databricks-sdk) through the real server to real workers."""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Iterator

import httpx
import openai
import pytest
from databricks.sdk import WorkspaceClient
from databricks.sdk.service.serving import ChatMessage, ChatMessageRole

from agentdeploy.serving.backends.local import worker_processes
from tests.harness import ServerProcess
from tests.serving.conftest import (
    RESPONDER_MODEL,
    Principal,
    create_principal,
    echo_config,
    set_permission,
    wait_endpoint,
)

ENDPOINT = "echo"
RESPONDER = "agents_main-agents-responder"
CONTEXT = "Context:\nRefunds take 5 days. Shipping is free for orders over 50 euros."


def _chat(text: str = "hello", **extra: object) -> dict:
    return {"messages": [{"role": "user", "content": text}], **extra}


def _text(response: httpx.Response) -> str:
    return str(response.json()["choices"][0]["message"]["content"])


def _assert_json_error(response: httpx.Response, status: int, code: str | None = None) -> dict:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error_code", "message"} and body["message"], body
    assert "Traceback" not in response.text and 'File "' not in response.text
    assert response.headers.get("x-request-id"), "every answer carries its request id"
    if code is not None:
        assert body["error_code"] == code, body
    return body


@pytest.fixture(scope="module")
def endpoint(admin_module: httpx.Client) -> dict:
    created = admin_module.post(
        "/api/2.0/serving-endpoints", json={"name": ENDPOINT, "config": echo_config(1)}
    )
    assert created.status_code == 200, created.text
    ready = wait_endpoint(admin_module, ENDPOINT)
    assert ready["state"]["ready"] == "READY", ready
    return ready


@pytest.fixture(scope="module")
def admin_module(serving_server: ServerProcess) -> Iterator[httpx.Client]:
    with serving_server.client() as client:
        yield client


@pytest.fixture(scope="module")
def responder_endpoint(admin_module: httpx.Client) -> dict:
    created = admin_module.post(
        "/api/2.0/serving-endpoints",
        json={"name": RESPONDER, "config": echo_config(1, model=RESPONDER_MODEL)},
    )
    assert created.status_code == 200, created.text
    ready = wait_endpoint(admin_module, RESPONDER)
    assert ready["state"]["ready"] == "READY", ready
    return ready


@pytest.fixture(scope="module")
def querier(admin_module: httpx.Client, endpoint: dict, responder_endpoint: dict) -> Principal:
    principal = create_principal(admin_module, "gateway-querier")
    set_permission(admin_module, endpoint["id"], principal, "CAN_QUERY")
    set_permission(admin_module, responder_endpoint["id"], principal, "CAN_QUERY")
    return principal


def test_httpx_invocations_return_trace_and_request_id(admin_module: httpx.Client, endpoint: dict) -> None:
    plain = admin_module.post(f"/serving-endpoints/{ENDPOINT}/invocations", json=_chat())
    assert plain.status_code == 200 and _text(plain) == "v1: hello"
    assert "databricks_output" not in plain.json(), "the trace is returned only when asked for"
    assert plain.headers["x-request-id"] and plain.headers["served-model-name"] == "main-tests-echo_1"

    traced = admin_module.post(
        f"/serving-endpoints/{ENDPOINT}/invocations",
        json=_chat("traced", databricks_options={"return_trace": True}, client_request_id="client-42"),
    )
    assert traced.status_code == 200, traced.text
    output = traced.json()["databricks_output"]
    assert output["databricks_request_id"] == traced.headers["x-request-id"]
    spans = output["trace"]["data"]["spans"]
    assert any(s["name"] == "echo" for s in spans), [s["name"] for s in spans]
    assert _text(traced) == "v1: traced"

    served = admin_module.post(
        f"/serving-endpoints/{ENDPOINT}/served-models/main-tests-echo_1/invocations", json=_chat("direct")
    )
    assert served.status_code == 200 and _text(served) == "v1: direct"


def test_openai_chat_completions_and_stream(serving_server: ServerProcess, querier: Principal) -> None:
    client = openai.OpenAI(base_url=f"{serving_server.url}/serving-endpoints", api_key=querier.token)
    messages = [
        {"role": "system", "content": CONTEXT},
        {"role": "user", "content": "How long do refunds take?"},
    ]
    completion = client.chat.completions.create(model=RESPONDER, messages=messages)
    assert completion.choices[0].message.content == "Refunds take 5 days."
    stream = client.chat.completions.create(model=RESPONDER, messages=messages, stream=True)
    text = "".join(chunk.choices[0].delta.content or "" for chunk in stream if chunk.choices)
    assert text == "Refunds take 5 days."
    echoed = client.chat.completions.create(model=ENDPOINT, messages=[{"role": "user", "content": "hi"}])
    assert echoed.choices[0].message.content == "v1: hi"


def test_openai_responses(serving_server: ServerProcess, querier: Principal) -> None:
    client = openai.OpenAI(base_url=f"{serving_server.url}/serving-endpoints", api_key=querier.token)
    response = client.responses.create(
        model=RESPONDER, instructions=CONTEXT, input="How long do refunds take?"
    )
    assert response.output_text == "Refunds take 5 days."


def test_databricks_sdk_query_parses_choices(serving_server: ServerProcess, querier: Principal) -> None:
    w = WorkspaceClient(host=serving_server.url, token=querier.token, auth_type="pat")
    answer = w.serving_endpoints.query(
        RESPONDER,
        messages=[
            ChatMessage(role=ChatMessageRole.SYSTEM, content=CONTEXT),
            ChatMessage(role=ChatMessageRole.USER, content="Is shipping free?"),
        ],
    )
    assert answer.choices[0].message.content == "Shipping is free for orders over 50 euros."


def test_query_needs_can_query_and_a_revoke_applies_at_once(
    serving_server: ServerProcess, admin_module: httpx.Client, endpoint: dict
) -> None:
    user = create_principal(admin_module, "gateway-revoked")
    with httpx.Client(
        base_url=serving_server.url, headers={"Authorization": f"Bearer {user.token}"}
    ) as client:
        denied = client.post(f"/serving-endpoints/{ENDPOINT}/invocations", json=_chat())
        assert "CAN_QUERY" in _assert_json_error(denied, 403, "PERMISSION_DENIED")["message"]
        chat = client.post("/serving-endpoints/chat/completions", json={"model": ENDPOINT, **_chat()})
        _assert_json_error(chat, 403)
        set_permission(admin_module, endpoint["id"], user, "CAN_QUERY")
        assert client.post(f"/serving-endpoints/{ENDPOINT}/invocations", json=_chat()).status_code == 200
        set_permission(admin_module, endpoint["id"], user, None)
        _assert_json_error(client.post(f"/serving-endpoints/{ENDPOINT}/invocations", json=_chat()), 403)
    _assert_json_error(
        httpx.post(f"{serving_server.url}/serving-endpoints/{ENDPOINT}/invocations", json=_chat()),
        401,
        "UNAUTHENTICATED",
    )


def test_error_paths(admin_module: httpx.Client, endpoint: dict) -> None:
    url = f"/serving-endpoints/{ENDPOINT}/invocations"
    body = _assert_json_error(admin_module.post("/serving-endpoints/nope/invocations", json=_chat()), 404)
    assert "nope" in body["message"]
    _assert_json_error(
        admin_module.post("/serving-endpoints/chat/completions", json={"model": "nope", **_chat()}), 404
    )
    _assert_json_error(
        admin_module.post(f"/serving-endpoints/{ENDPOINT}/served-models/zzz/invocations", json=_chat()), 404
    )
    assert (
        "Malformed JSON"
        in _assert_json_error(
            admin_module.post(url, content=b'{"messages": [', headers={"content-type": "application/json"}),
            400,
            "MALFORMED_REQUEST",
        )["message"]
    )
    _assert_json_error(admin_module.post(url, json=[1, 2]), 400, "MALFORMED_REQUEST")
    _assert_json_error(admin_module.post("/serving-endpoints/chat/completions", json=_chat()), 400)
    big = _chat("x" * (300 * 1024))  # the test server's limit is 256 KiB
    assert "limit" in _assert_json_error(admin_module.post(url, json=big), 413)["message"]
    started = time.monotonic()
    slow = admin_module.post(url, json=_chat("sleep 6"))  # the test server's timeout is 3 s
    _assert_json_error(slow, 504, "DEADLINE_EXCEEDED")
    assert time.monotonic() - started < 5.5
    failing = admin_module.post(url, json=_chat("raise"))
    assert failing.status_code == 500 and "asked to fail" in failing.json()["message"]
    assert "Traceback" not in failing.text
    assert admin_module.post(url, json=_chat()).status_code == 200, "the server keeps serving"


def test_rate_limit_429_with_retry_after(
    serving_server: ServerProcess, admin_module: httpx.Client, querier: Principal
) -> None:
    limits = {"rate_limits": [{"calls": 3, "key": "user", "renewal_period": "minute"}]}
    assert (
        admin_module.put(f"/api/2.0/serving-endpoints/{ENDPOINT}/ai-gateway", json=limits).status_code == 200
    )
    try:
        with httpx.Client(
            base_url=serving_server.url, headers={"Authorization": f"Bearer {querier.token}"}
        ) as c:
            codes = [
                c.post(f"/serving-endpoints/{ENDPOINT}/invocations", json=_chat()).status_code
                for _ in range(3)
            ]
            assert codes == [200, 200, 200]
            limited = c.post(f"/serving-endpoints/{ENDPOINT}/invocations", json=_chat())
            _assert_json_error(limited, 429, "REQUEST_LIMIT_EXCEEDED")
            assert 1 <= int(limited.headers["retry-after"]) <= 20
        # Per user: another caller still gets through.
        assert (
            admin_module.post(f"/serving-endpoints/{ENDPOINT}/invocations", json=_chat()).status_code == 200
        )
    finally:
        assert (
            admin_module.put(f"/api/2.0/serving-endpoints/{ENDPOINT}/ai-gateway", json={}).status_code == 200
        )


def _worker_pids(endpoint_id: str) -> list[int]:
    """Worker processes of an endpoint (their entity key starts with its id)."""
    return sorted(worker_processes(f"{endpoint_id[:12]}-"))


def test_killed_worker_gives_503_then_recovers_by_itself(admin_module: httpx.Client, endpoint: dict) -> None:
    pids = _worker_pids(endpoint["id"])
    assert pids, "the endpoint's worker process was not found"
    for pid in pids:
        os.kill(pid, signal.SIGKILL)
    url = f"/serving-endpoints/{ENDPOINT}/invocations"
    first = admin_module.post(url, json=_chat())
    saw_503 = first.status_code == 503
    if saw_503:
        assert first.headers.get("retry-after") and first.json()["error_code"] == "TEMPORARILY_UNAVAILABLE"
    deadline = time.monotonic() + 120
    while True:
        answer = admin_module.post(url, json=_chat())
        if answer.status_code == 200:
            break
        _assert_json_error(answer, 503)
        assert answer.headers.get("retry-after")
        saw_503 = True
        assert time.monotonic() < deadline, "the worker did not come back"
        time.sleep(0.1)
    assert saw_503, "a killed worker must answer 503 until it is back"
    assert _text(answer) == "v1: hello"


def test_config_update_under_traffic_has_no_failed_request(
    serving_server: ServerProcess, admin_module: httpx.Client
) -> None:
    name = "rolling"
    assert (
        admin_module.post(
            "/api/2.0/serving-endpoints", json={"name": name, "config": echo_config(1)}
        ).status_code
        == 200
    )
    assert wait_endpoint(admin_module, name)["state"]["ready"] == "READY"
    results: list[tuple[int, str]] = []
    stop = threading.Event()
    lock = threading.Lock()

    def client_loop() -> None:
        with serving_server.client() as client:
            while not stop.is_set():
                r = client.post(f"/serving-endpoints/{name}/invocations", json=_chat("load"))
                with lock:
                    results.append((r.status_code, _text(r) if r.status_code == 200 else r.text))
                time.sleep(0.01)

    threads = [threading.Thread(target=client_loop) for _ in range(4)]
    for t in threads:
        t.start()
    try:
        time.sleep(0.5)
        assert (
            admin_module.put(f"/api/2.0/serving-endpoints/{name}/config", json=echo_config(2)).status_code
            == 200
        )
        wait_endpoint(admin_module, name)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:  # keep the load on until a few hundred requests and v2 answers
            with lock:
                v2 = sum(1 for _, text in results if text == "v2: load")
                if len(results) >= 300 and v2 >= 50:
                    break
            time.sleep(0.1)
    finally:
        stop.set()
        for t in threads:
            t.join()
    failed = [r for r in results if r[0] != 200]
    assert not failed, f"{len(failed)} of {len(results)} requests failed: {failed[:3]}"
    answers = {text for _, text in results}
    assert answers == {"v1: load", "v2: load"}, answers
    assert len(results) >= 300
    final = admin_module.get(f"/api/2.0/serving-endpoints/{name}").json()
    assert final["config"]["config_version"] == 2 and final["state"]["config_update"] == "NOT_UPDATING"
    assert not _worker_pids_of_entity(final["id"], "main-tests-echo_1"), (
        "the removed entity's worker was stopped"
    )
    assert admin_module.delete(f"/api/2.0/serving-endpoints/{name}").status_code == 200


def _worker_pids_of_entity(endpoint_id: str, served: str) -> list[int]:
    deadline = time.monotonic() + 15
    while True:
        pids = [p for p, key in worker_processes(f"{endpoint_id[:12]}-").items() if f"-{served}-" in key]
        if not pids or time.monotonic() > deadline:
            return pids
        time.sleep(0.2)
