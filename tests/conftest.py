from __future__ import annotations

import os
import shutil
from collections.abc import Iterator

import httpx
import pytest

from tests.harness import (
    MlflowServer,
    ServerProcess,
    drain_prefect_workers,
    private_dir,
    start_mlflow_server,
    stop_mlflow_server,
)


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """One real agentdeploy server for the session (HTTP on loopback, its own home)."""
    proc = ServerProcess(home=tmp_path_factory.mktemp("agentdeploy-home"))
    proc.start()
    yield proc
    proc.stop()


@pytest.fixture()
def admin(server: ServerProcess) -> Iterator[httpx.Client]:
    """An httpx client authenticated as the bootstrap admin."""
    with server.client() as client:
        yield client


@pytest.fixture(scope="session")
def mlflow_server() -> Iterator[MlflowServer]:
    """One MLflow tracking server for the session; each test package registers its models on it
    (tests/serving, tests/review) or logs traces to it (tests/flows). TESTS_MLFLOW_PORT reuses a
    running one that already holds them (quick re-runs)."""
    reuse = os.environ.get("TESTS_MLFLOW_PORT")
    if reuse:
        yield MlflowServer(url=f"http://127.0.0.1:{reuse}", port=int(reuse), proc=None)
        return
    store = private_dir("agentdeploy-mlflow-")
    server = start_mlflow_server(store)
    try:
        yield server
    finally:
        stop_mlflow_server(server)
        shutil.rmtree(store, ignore_errors=True)


def pytest_unconfigure(config: pytest.Config) -> None:
    """Never let Prefect's exit hook hold the run: drop logs and events still buffered for a
    server that a fixture has already stopped."""
    import sys

    if "prefect" in sys.modules:
        drain_prefect_workers(timeout=2)
