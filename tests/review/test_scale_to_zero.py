"""Scale to zero: an idle scale_to_zero_enabled entity's worker is stopped (the endpoint state
says so), and the next requests are held while it starts, none refused."""

from __future__ import annotations

import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from agentdeploy.serving.backends.local import worker_processes
from tests.review.conftest import ReviewStack, endpoint_body
from tests.serving.conftest import wait_endpoint

NAME = "s2z-ep"
IDLE_S = 3.0  # AGENTDEPLOY_SCALE_TO_ZERO_IDLE_S of the review stack


def worker_pids(endpoint_id: str) -> set[int]:
    """Worker processes of the endpoint (their entity key starts with its id)."""
    return set(worker_processes(endpoint_id[:12]))


def agent_state(admin: httpx.Client) -> dict[str, str]:
    body = admin.get(f"/api/2.0/serving-endpoints/{NAME}").json()
    entity = next(e for e in body["config"]["served_entities"] if e["name"] == "agent")
    return {"ready": body["state"]["ready"], **entity["state"]}


@pytest.fixture(scope="module")
def s2z(review_stack: ReviewStack) -> Iterator[tuple[ReviewStack, str]]:
    with review_stack.admin() as admin:
        created = admin.post("/api/2.0/serving-endpoints", json=endpoint_body(NAME, scale_to_zero=True))
        assert created.status_code == 200, created.text
        body = wait_endpoint(admin, NAME)
        assert body["state"]["ready"] == "READY", body
        yield review_stack, body["id"]
        admin.delete(f"/api/2.0/serving-endpoints/{NAME}")


def test_idle_worker_stops_and_the_next_requests_wake_it(s2z: tuple[ReviewStack, str]) -> None:
    stack, endpoint_id = s2z
    query = {"input": [{"role": "user", "content": "are you awake?"}]}
    headers = {"Authorization": f"Bearer {stack.server.admin_token}"}
    with stack.admin() as admin, httpx.Client(base_url=stack.url, headers=headers, timeout=60) as http:
        assert http.post(f"/serving-endpoints/{NAME}/invocations", json=query).status_code == 200
        assert worker_pids(endpoint_id), "no worker process found for the endpoint"

        deadline = time.monotonic() + IDLE_S + 15
        while "Scaled to zero" not in agent_state(admin)["deployment_state_message"]:
            assert time.monotonic() < deadline, agent_state(admin)
            time.sleep(0.25)
        state = agent_state(admin)
        assert state["ready"] == "READY" and state["deployment"] == "DEPLOYMENT_READY"
        assert not worker_pids(endpoint_id), "the worker process is still running"

        # Several requests at once while it is scaled to zero: all held until it is up, none refused.
        started = time.monotonic()
        with ThreadPoolExecutor(4) as pool:
            answers = list(
                pool.map(lambda _: http.post(f"/serving-endpoints/{NAME}/invocations", json=query), range(4))
            )
        cold_start = time.monotonic() - started
        assert [a.status_code for a in answers] == [200] * 4, [a.text for a in answers]
        assert worker_pids(endpoint_id)
        print(f"cold start (scaled to zero -> first response): {cold_start:.2f}s")
        state = agent_state(admin)
        assert "Scaled to zero" not in state["deployment_state_message"]
        assert state["deployment"] == "DEPLOYMENT_READY"
        # The cold start's duration is kept and shown in the endpoint's state.
        assert "Last cold start:" in state["deployment_state_message"], state
