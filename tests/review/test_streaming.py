"""`stream: true` on invocations and chat/completions: chunks reach the client as the agent
produces them (the test agent sleeps 0.4 s between chunks), measured at the client."""

from __future__ import annotations

import json
import time
from typing import Any

import httpx
from openai import OpenAI

from tests.review.conftest import ReviewStack
from tests.review.review_agent import SLOW_CHUNK_S

QUESTION = "slow stream of words please"  # 6 words answered: 5 sleeps of 0.4 s


def test_openai_stream_first_chunk_before_the_agent_finishes(review_stack: ReviewStack) -> None:
    client = OpenAI(base_url=f"{review_stack.url}/serving-endpoints", api_key=review_stack.querier.token)
    started = time.monotonic()
    stream = client.chat.completions.create(
        model=review_stack.endpoint, messages=[{"role": "user", "content": QUESTION}], stream=True
    )
    arrivals, pieces = [], []
    for chunk in stream:
        if chunk.choices and chunk.choices[0].delta.content:
            arrivals.append(time.monotonic() - started)
            pieces.append(chunk.choices[0].delta.content)
    total = time.monotonic() - started
    assert "".join(pieces) == f"You asked: {QUESTION}"
    sleeps = (len(pieces) - 1) * SLOW_CHUNK_S
    # Not held back: the first chunk came well before the last (the agent's sleeps lie between).
    assert arrivals[-1] - arrivals[0] >= sleeps * 0.8, arrivals
    assert arrivals[0] < total - sleeps * 0.8, (arrivals[0], total)
    print(
        f"first chunk {arrivals[0] * 1000:.0f} ms, last {arrivals[-1] * 1000:.0f} ms, "
        f"total {total * 1000:.0f} ms"
    )


def test_invocations_stream_relays_events_as_they_come(review_stack: ReviewStack) -> None:
    headers = {"Authorization": f"Bearer {review_stack.querier.token}"}
    body = {"input": [{"role": "user", "content": QUESTION}], "stream": True}
    arrivals = []
    started = time.monotonic()
    with (
        httpx.Client(base_url=review_stack.url, headers=headers, timeout=60) as http,
        http.stream("POST", f"/serving-endpoints/{review_stack.endpoint}/invocations", json=body) as response,
    ):
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        events = []
        for line in response.iter_lines():
            if line.startswith("data: "):
                arrivals.append(time.monotonic() - started)
                events.append(json.loads(line[6:]))
            assert not line.startswith("event: trace")  # the trace is only for the log
    deltas = [e["delta"] for e in events if e.get("type") == "response.output_text.delta"]
    assert "".join(deltas) == f"You asked: {QUESTION}"
    assert arrivals[-1] - arrivals[0] >= (len(deltas) - 1) * SLOW_CHUNK_S * 0.8, arrivals


def _payload_row(stack: ReviewStack, request_id: str, timeout: float = 30.0) -> dict[str, Any]:
    from deltalake import DeltaTable

    table = stack.payload_table()
    deadline = time.monotonic() + timeout
    while True:
        if (table / "_delta_log").is_dir():
            rows = [r for r in DeltaTable(str(table)).to_pyarrow_table().to_pylist()
                    if r["databricks_request_id"] == request_id]
            if rows:
                return rows[0]
        assert time.monotonic() < deadline, f"no payload row for {request_id}"
        time.sleep(0.3)


def test_a_client_that_hangs_up_mid_stream_leaves_a_row_with_status_499(review_stack: ReviewStack) -> None:
    headers = {"Authorization": f"Bearer {review_stack.querier.token}"}
    body = {"input": [{"role": "user", "content": QUESTION}], "stream": True}
    received = []
    with (
        httpx.Client(base_url=review_stack.url, headers=headers, timeout=60) as http,
        http.stream("POST", f"/serving-endpoints/{review_stack.endpoint}/invocations", json=body) as response,
    ):
        assert response.status_code == 200
        request_id = response.headers["x-request-id"]
        for line in response.iter_lines():
            if line.startswith("data: "):
                received.append(json.loads(line[6:]))
                break  # one chunk, then hang up: leaving the block drops the connection mid-stream
    row = _payload_row(review_stack, request_id)
    assert row["status_code"] == 499, row["status_code"]  # client closed request
    logged = json.loads(row["response"])
    text = "".join(part["text"] for item in logged["output"] for part in item["content"])
    answer = f"You asked: {QUESTION}"
    # What the client got is logged, and the rest of the answer was never produced for it.
    assert received[0]["delta"] in text and answer.startswith(text) and text != answer, text
