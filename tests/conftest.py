from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from tests.harness import ServerProcess, drain_prefect_workers


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


def pytest_unconfigure(config: pytest.Config) -> None:
    """Never let Prefect's exit hook hold the run: drop logs and events still buffered for a
    server that a fixture has already stopped."""
    import sys

    if "prefect" in sys.modules:
        drain_prefect_workers(timeout=2)
