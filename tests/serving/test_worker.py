"""The worker protocol, over HTTP, against real worker processes started by the local backend."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from typing import Any

import httpx

from agentdeploy.serving.backends.local import LocalProcessBackend
from tests.harness import REPO, free_port
from tests.serving.worker_fixtures import invoke, split_answer

QUESTION = {
    "messages": [
        {
            "role": "system",
            "content": "Context:\nRefunds are paid within 5 days. Shipping is free over 50 euros. "
            "Passwords are reset from the login page.",
        },
        {"role": "user", "content": "How long do refunds take?"},
    ]
}


def _spans(trace: dict[str, Any]) -> list[dict[str, Any]]:
    return list(trace["data"]["spans"])


def test_health_reports_the_agent_type(backend: LocalProcessBackend, responder: str, probe: str) -> None:
    for name, agent_type in ((responder, "ChatModel"), (probe, "ResponsesAgent")):
        host, port = backend.address(name)  # type: ignore[misc]
        answer = httpx.get(f"http://{host}:{port}/health")
        assert answer.status_code == 200
        assert answer.json() == {"status": "READY", "agent_type": agent_type}


def test_chat_model_answers_every_api_shape_with_its_trace(
    backend: LocalProcessBackend, responder: str
) -> None:
    for api in ("invocations", "chat.completions"):
        response = invoke(backend, responder, QUESTION, api=api, request_id=f"r-{api}")
        assert response.status_code == 200, response.text
        body, trace = split_answer(response)
        assert body["choices"][0]["message"]["content"] == "Refunds are paid within 5 days."
        assert body["object"] == "chat.completion"
        names = [span["name"] for span in _spans(trace)]
        assert "extract_answer" in names, names
    # The Responses shape in, the Responses shape out.
    response = invoke(
        backend,
        responder,
        {
            "model": "x",
            "instructions": QUESTION["messages"][0]["content"],
            "input": "How long do refunds take?",
        },
        api="responses",
    )
    body, trace = split_answer(response)
    assert body["object"] == "response"
    assert body["output"][0]["content"][0] == {
        "type": "output_text",
        "text": "Refunds are paid within 5 days.",
        "annotations": [],
    }
    assert trace is not None


def test_responses_agent_answers_chat_completions_and_responses(
    backend: LocalProcessBackend, probe: str
) -> None:
    response = invoke(
        backend, probe, {"messages": [{"role": "user", "content": "hello there"}]}, api="chat.completions"
    )
    body, trace = split_answer(response)
    assert body["choices"][0]["message"] == {"role": "assistant", "content": "echo: hello there"}
    assert body["choices"][0]["finish_reason"] == "stop"
    root = [s for s in _spans(trace) if s.get("parent_span_id") in (None, "")]
    assert len(root) == 1 and {s["name"] for s in _spans(trace)} >= {"echo"}
    response = invoke(backend, probe, {"model": "x", "input": "hi"}, api="responses")
    body, _ = split_answer(response)
    assert body["object"] == "response" and body["output"][0]["content"][0]["text"] == "echo: hi"
    # Native invocations: the ResponsesAgent's own output.
    body, _ = split_answer(invoke(backend, probe, {"input": [{"role": "user", "content": "x"}]}))
    assert body["output"][0]["type"] == "message" and "model" not in body  # as the agent returned it


def test_the_response_length_header_frames_the_response(backend: LocalProcessBackend, probe: str) -> None:
    response = invoke(backend, probe, {"input": [{"role": "user", "content": "frame"}]}, request_id="frame-1")
    n = int(response.headers["x-agentdeploy-response-length"])
    assert response.content[:1] == b"{" and response.content[n - 1 : n] == b"}"
    trace = json.loads(response.content[n:])
    assert trace["info"]["client_request_id"] == "frame-1" or "frame-1" in json.dumps(trace["info"])


def test_an_agent_that_raises_gives_a_json_error_without_its_stack(
    backend: LocalProcessBackend, probe: str
) -> None:
    response = invoke(backend, probe, {"input": [{"role": "user", "content": "raise"}]}, request_id="boom-1")
    assert response.status_code == 500
    assert response.json() == {
        "error_code": "AGENT_ERROR",
        "message": "ValueError: boom from the probe agent",
    }
    assert "Traceback" not in response.text
    time.sleep(0.2)
    log = backend.log_tail(probe, 200)
    assert "Traceback" in log and "boom-1" in log  # the stack went to the worker's log
    # The worker keeps serving.
    assert invoke(backend, probe, {"input": [{"role": "user", "content": "still here"}]}).status_code == 200


def test_bad_input_is_400_and_malformed_json_too(
    backend: LocalProcessBackend, probe: str, responder: str
) -> None:
    response = invoke(backend, probe, {"prompt": "no input field"})
    assert response.status_code == 400 and response.json()["error_code"] == "BAD_REQUEST"
    assert "input" in response.json()["message"]
    response = invoke(backend, responder, {"input": 5}, api="responses")
    assert response.status_code == 400 and response.json()["error_code"] == "BAD_REQUEST"
    host, port = backend.address(probe)  # type: ignore[misc]
    response = httpx.post(
        f"http://{host}:{port}/invocations", content=b"{not json", headers={"x-request-id": "m"}
    )
    assert response.status_code == 400 and response.json()["message"] == "Malformed JSON in the request body."


def _events(response: httpx.Response) -> list[tuple[str, Any]]:
    events = []
    for block in response.text.split("\n\n"):
        if not block.strip():
            continue
        kind = "data"
        for line in block.split("\n"):
            if line.startswith("event: "):
                kind = line[7:]
            elif line.startswith("data: "):
                events.append((kind, json.loads(line[6:])))
    return events


def test_stream_sends_chunks_then_the_trace(backend: LocalProcessBackend, responder: str, probe: str) -> None:
    response = invoke(
        backend, responder, {**QUESTION, "stream": True}, api="chat.completions", request_id="s-1"
    )
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/event-stream")
    events = _events(response)
    assert events[-1][0] == "trace" and events[-1][1]["data"]["spans"]
    text = "".join(e["choices"][0]["delta"]["content"] for kind, e in events[:-1])
    assert text == "Refunds are paid within 5 days." and len(events) > 3
    # A ResponsesAgent streamed to a chat client: deltas become chat chunks, the done item is dropped.
    response = invoke(
        backend,
        probe,
        {"messages": [{"role": "user", "content": "a b c"}], "stream": True},
        api="chat.completions",
    )
    events = _events(response)
    assert "".join(e["choices"][0]["delta"]["content"] for k, e in events if k == "data") == "echo: a b c"
    # A failure before the first chunk is a plain JSON error.
    response = invoke(backend, probe, {"input": [{"role": "user", "content": "raise"}], "stream": True})
    assert response.status_code == 500 and response.json()["error_code"] == "AGENT_ERROR"


def test_a_worker_answers_503_while_loading(registry: dict[str, Any]) -> None:
    """Started by hand with only its protocol environment: /health is 503, then 200."""
    port = free_port()
    env = {
        "PATH": "/usr/bin:/bin",
        "PYTHONPATH": str(REPO),
        "AGENTDEPLOY_WORKER_NAME": "standalone",
        "AGENTDEPLOY_WORKER_MODEL_PATH": str(registry["responder"]["path"]),
        "AGENTDEPLOY_WORKER_HOST": "127.0.0.1",
        "AGENTDEPLOY_WORKER_PORT": str(port),
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "agentdeploy.serving.worker"],
        env=env,
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    statuses: list[int] = []
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and 200 not in statuses:
            try:
                statuses.append(httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code)
            except httpx.TransportError:
                pass
            time.sleep(0.05)
    finally:
        proc.terminate()
        proc.wait(10)
    assert statuses[0] == 503 and statuses[-1] == 200, statuses
    assert os.environ.get("IS_IN_DB_MODEL_SERVING_ENV") is None  # the test process is untouched


def test_shape_conversions_of_the_chat_agent_flavour() -> None:
    """ChatAgent has no example model here: its conversions, checked on their own."""
    from agentdeploy.serving import schemas

    assert schemas.to_model_input(
        "ChatAgent",
        "responses",
        {"model": "e", "instructions": "be brief", "input": [{"role": "user", "content": "hi"}]},
    ) == {"messages": [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"}]}
    output = {"messages": [{"role": "assistant", "content": "hello", "id": "1"}], "custom_outputs": {"k": 1}}
    chat = schemas.to_client_output("ChatAgent", "chat.completions", output, model="e")
    assert chat["choices"][0]["message"] == {"role": "assistant", "content": "hello"}
    assert chat["custom_outputs"] == {"k": 1}
    assert schemas.to_client_output("ChatAgent", "invocations", output, model="e") is output
    chunk = schemas.to_client_chunk(
        "ChatAgent",
        "chat.completions",
        {"delta": {"role": "assistant", "content": "he", "id": "1"}},
        model="e",
        stream_id="s",
    )
    assert chunk["choices"][0]["delta"]["content"] == "he" and chunk["id"] == "s"
