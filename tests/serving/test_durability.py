"""Durability of the payload log: kill -9 under load, a torn spool tail, an unwritable spool.

A server of its own (own home) serves the echo agent with inference tables on. Each cycle sends
200 concurrent requests, kills the server with SIGKILL once some have been answered, restarts it,
and checks that every request whose response the client received has exactly one row (matched
by `x-request-id`). bench/durability_cycles.py runs many more cycles with the same code.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import polars as pl
import pytest

from tests.harness import MlflowServer, ServerProcess, inference_table_config, private_dir
from tests.serving.conftest import ECHO_MODEL, start_serving_server, wait_endpoint

pytestmark = pytest.mark.slow

UC = "/api/2.1/unity-catalog"
CATALOG, SCHEMA, PREFIX = "durable", "logs", "echo"
ENDPOINT = "durable-echo"
TABLE_DIR = ("warehouse", CATALOG, SCHEMA, f"{PREFIX}_payload")


@dataclass
class Durable:
    server: ServerProcess
    received: set[str] = field(default_factory=set)  # x-request-id of every response a client got

    @property
    def table(self) -> Path:
        return self.server.home.joinpath(*TABLE_DIR)

    @property
    def spool(self) -> Path:
        return self.server.home / "spool"

    def counts(self) -> dict[str, int]:
        if not (self.table / "_delta_log").is_dir():
            return {}
        frame = pl.scan_delta(str(self.table)).group_by("databricks_request_id").len().collect()
        return dict(zip(frame["databricks_request_id"], frame["len"], strict=True))

    def wait_rows(self, ids: set[str], timeout: float = 60.0) -> dict[str, int]:
        deadline = time.monotonic() + timeout
        while True:
            counts = self.counts()
            if ids <= counts.keys() or time.monotonic() > deadline:
                return counts
            time.sleep(0.2)


def setup_endpoint(server: ServerProcess) -> None:
    with server.client() as admin:
        for path, body in (
            (f"{UC}/catalogs", {"name": CATALOG}),
            (f"{UC}/schemas", {"name": SCHEMA, "catalog_name": CATALOG}),
        ):
            response = admin.post(path, json=body)
            assert response.status_code == 200, response.text
        created = admin.post(
            "/api/2.0/serving-endpoints",
            json={
                "name": ENDPOINT,
                "config": {
                    "served_entities": [
                        {
                            "entity_name": ECHO_MODEL,
                            "entity_version": "1",
                            "workload_size": "Small",
                            "scale_to_zero_enabled": False,
                        }
                    ]
                },
                "ai_gateway": {"inference_table_config": inference_table_config(CATALOG, SCHEMA, PREFIX)},
            },
        )
        assert created.status_code == 200, created.text
    wait_ready(server)


def wait_ready(server: ServerProcess, timeout: float = 180.0) -> None:
    """Until a query is answered 200 (the worker is back after a restart)."""
    deadline = time.monotonic() + timeout
    with server.client() as admin:
        wait_endpoint(admin, ENDPOINT, timeout)
        while True:
            answer = admin.post(
                f"/serving-endpoints/{ENDPOINT}/invocations",
                json={"messages": [{"role": "user", "content": "ready?"}]},
            )
            if answer.status_code == 200:
                return
            assert time.monotonic() < deadline, answer.text
            time.sleep(0.2)


async def _load(server: ServerProcess, n: int, kill_after: int | None) -> set[str]:
    """n concurrent requests; SIGKILL the server once `kill_after` were answered. The ids received."""
    received: set[str] = set()
    answered = asyncio.Event()
    limits = httpx.Limits(max_connections=n, max_keepalive_connections=n)
    headers = {"Authorization": f"Bearer {server.admin_token}"}
    async with httpx.AsyncClient(base_url=server.url, headers=headers, limits=limits, timeout=60) as client:

        async def one(i: int) -> None:
            try:
                response = await client.post(
                    f"/serving-endpoints/{ENDPOINT}/invocations",
                    json={
                        "messages": [{"role": "user", "content": f"load {i}"}],
                        "client_request_id": f"c{i}",
                    },
                )
            except httpx.TransportError:
                return  # no response received: nothing is promised
            received.add(response.headers["x-request-id"])
            if kill_after is not None and len(received) >= kill_after:
                answered.set()

        async def killer() -> None:
            await answered.wait()
            assert server.proc is not None
            os.kill(server.proc.pid, signal.SIGKILL)

        kill = asyncio.ensure_future(killer())
        await asyncio.gather(*(one(i) for i in range(n)))
        kill.cancel()
    return received


@dataclass
class Cycle:
    received: int  # responses the clients got before the kill
    checked: int  # answered requests so far, each looked up in the table
    missing: int  # of those, without a row
    duplicated: int  # of those, with more than one row


def run_cycle(durable: Durable, n: int = 200, kill_after: int = 60) -> Cycle:
    """Load, kill -9 mid-load, restart, count the rows of every answered request so far."""
    server = durable.server
    received = asyncio.run(_load(server, n, kill_after))
    assert server.proc is not None
    server.proc.wait(timeout=30)
    server.proc = None
    server.start()
    durable.received |= received
    counts = durable.wait_rows(durable.received)
    return Cycle(len(received), len(durable.received), len(durable.received - counts.keys()),
                 sum(1 for v in counts.values() if v != 1))


def kill_cycle(durable: Durable, n: int = 200, kill_after: int = 60) -> Cycle:
    """One cycle that must lose nothing and duplicate nothing; leaves the endpoint serving."""
    cycle = run_cycle(durable, n, kill_after)
    assert cycle.missing == 0, f"{cycle.missing} answered requests have no row"
    assert cycle.duplicated == 0, f"{cycle.duplicated} requests have more than one row"
    wait_ready(durable.server)
    return cycle


@pytest.fixture(scope="module")
def durable(mlflow_server: MlflowServer) -> Iterator[Durable]:
    """One server for the module (starting one and its worker costs 20-60 s here): each test
    leaves it serving."""
    parent = private_dir("agentdeploy-durable-")
    server = start_serving_server(parent / "home", mlflow_server)
    try:
        setup_endpoint(server)
        yield Durable(server)
    finally:
        server.stop()
        subprocess.run(["chattr", "-R", "-i", str(parent)], capture_output=True)
        shutil.rmtree(parent, ignore_errors=True)


def test_kill_9_under_load_loses_no_answered_request(durable: Durable) -> None:
    for _ in range(3):
        cycle = kill_cycle(durable)
        assert cycle.received >= 60, "the kill came after some responses"
    assert cycle.checked >= 180


def test_a_row_is_visible_to_polars_within_2_seconds(durable: Durable) -> None:
    with durable.server.client() as admin:
        lags = []
        for i in range(5):
            answer = admin.post(
                f"/serving-endpoints/{ENDPOINT}/invocations",
                json={"messages": [{"role": "user", "content": f"lag {i}"}]},
            )
            answered = time.monotonic()
            request_id = answer.headers["x-request-id"]
            while request_id not in durable.counts():
                assert time.monotonic() - answered < 2.0, "a row must be visible within 2 s"
                time.sleep(0.02)
            lags.append(time.monotonic() - answered)
    assert max(lags) < 2.0


def test_a_torn_spool_tail_is_skipped_not_a_crash(durable: Durable) -> None:
    server = durable.server
    with server.client() as admin:
        answer = admin.post(
            f"/serving-endpoints/{ENDPOINT}/invocations",
            json={"messages": [{"role": "user", "content": "before the tear"}]},
        )
    before = answer.headers["x-request-id"]
    assert server.proc is not None
    os.kill(server.proc.pid, signal.SIGKILL)
    server.proc.wait(timeout=30)
    server.proc = None
    segments = sorted(durable.spool.glob("*.seg"))
    assert segments, "the spool holds segments"
    with open(segments[-1], "ab") as tail:  # a frame header promising more bytes than follow
        tail.write(b"\xffAS1" + (5000).to_bytes(4, "little") + b"\x00\x00\x00\x00" + b'{"torn')
    server.start()
    wait_ready(server)
    with server.client() as admin:
        after = admin.post(
            f"/serving-endpoints/{ENDPOINT}/invocations",
            json={"messages": [{"role": "user", "content": "after the tear"}]},
        )
    assert after.status_code == 200
    counts = durable.wait_rows({before, after.headers["x-request-id"]})
    assert counts.get(before) == 1 and counts.get(after.headers["x-request-id"]) == 1
    # And again: the damaged segment does not make the next start fail either.
    server.restart()
    wait_ready(server)


@pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("chattr") is None,
    reason="needs root and chattr to make the spool unwritable (root ignores modes)",
)
def test_an_unwritable_spool_refuses_with_503_then_recovers(durable: Durable) -> None:
    server = durable.server
    url = f"/serving-endpoints/{ENDPOINT}/invocations"
    body: dict[str, Any] = {"messages": [{"role": "user", "content": "logged?"}]}
    # Immutable spool (directory and segments): writes fail with EPERM, as on a full or read-only disk.
    targets = [str(durable.spool), *map(str, durable.spool.glob("*.seg"))]
    subprocess.run(["chattr", "+i", *targets], check=True)
    try:
        with server.client() as admin:
            refused = admin.post(url, json=body)
            assert refused.status_code == 503, refused.text
            assert refused.json()["error_code"] == "TEMPORARILY_UNAVAILABLE"
            assert "spool" in refused.json()["message"]
            refused_id = refused.headers["x-request-id"]
    finally:
        subprocess.run(["chattr", "-i", *targets], check=True)
    time.sleep(0.6)  # the spool retries its directory after a short back-off
    with server.client() as admin:
        served = admin.post(url, json=body)
    assert served.status_code == 200, served.text
    counts = durable.wait_rows({served.headers["x-request-id"]})
    assert counts.get(served.headers["x-request-id"]) == 1
    assert refused_id not in counts, "a refused request was not served, and has no row"


def test_an_unwritable_spool_at_start_answers_503_not_unlogged(durable: Durable) -> None:
    """Started on a spool it cannot write: the server runs and refuses queries with 503. Then,
    the spool writable again, a restart serves and logs."""
    if os.geteuid() != 0 or shutil.which("chattr") is None:
        pytest.skip("needs root and chattr")
    server = durable.server
    server.stop()
    shutil.rmtree(durable.spool)  # every row is committed already (the tests above waited for them)
    durable.spool.mkdir()
    subprocess.run(["chattr", "+i", str(durable.spool)], check=True)
    try:
        server.start()
        with server.client() as admin:
            wait_endpoint(admin, ENDPOINT)
            deadline = time.monotonic() + 120
            while True:
                answer = admin.post(
                    f"/serving-endpoints/{ENDPOINT}/invocations",
                    json={"messages": [{"role": "user", "content": "x"}]},
                )
                if answer.status_code == 503 and "spool" in answer.json()["message"]:
                    break
                assert answer.status_code in (503,), answer.text  # never 200 without logging
                assert time.monotonic() < deadline
                time.sleep(0.5)
    finally:
        subprocess.run(["chattr", "-i", str(durable.spool)], capture_output=True)
    server.restart()
    wait_ready(server)
    with server.client() as admin:
        served = admin.post(f"/serving-endpoints/{ENDPOINT}/invocations",
                            json={"messages": [{"role": "user", "content": "writable again"}]})
    assert served.status_code == 200, served.text
    assert durable.wait_rows({served.headers["x-request-id"]}).get(served.headers["x-request-id"]) == 1


__all__ = ["Cycle", "Durable", "kill_cycle", "run_cycle", "setup_endpoint", "wait_ready"]
