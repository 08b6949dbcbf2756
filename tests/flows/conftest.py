"""Fixtures for flow tests: one real Prefect server per session, and one MLflow tracking server.

`prefect_server` starts `prefect server start` on a free loopback port with its own
PREFECT_HOME (task results and caches live there: a stale home made later sessions skip task
bodies), analytics off and no built-in block registration. Its database is a copy of a migrated
template kept in the temp directory per Prefect version, so only the first session on a machine
pays for the migrations (about 9 s idle, a minute on a loaded machine); later ones start in
about 3 s. This process's Prefect client points at it for the session (PREFECT_API_URL both in
the settings context and in os.environ, for subprocesses such as served flows).

    def test_my_flow(prefect_server):
        my_flow()                        # runs against the session's Prefect server
        prefect_server.api_url           # for a subprocess or a runner
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.harness import MlflowServer, drain_prefect_workers, free_port, wait_http

__all__ = ["PrefectServer", "prefect_server", "mlflow_tracking"]


@dataclass
class PrefectServer:
    url: str
    home: Path
    proc: subprocess.Popen[bytes]

    @property
    def api_url(self) -> str:
        return f"{self.url}/api"


def prefect_env(home: Path) -> dict[str, str]:
    """The environment of a Prefect process of the test session (server, CLI or served flows)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "AGENTDEPLOY_"))}
    env.update(
        PREFECT_HOME=str(home),
        PREFECT_SERVER_ANALYTICS_ENABLED="false",
        PREFECT_API_BLOCKS_REGISTER_ON_START="false",
        PREFECT_UI_ENABLED="false",
        PREFECT_LOGGING_LEVEL="WARNING",
        PYTHONUNBUFFERED="1",
    )
    return env


def _template_database() -> Path:
    """A migrated, empty Prefect database for this Prefect version (made once per machine)."""
    import prefect

    template = Path(tempfile.gettempdir()) / f"agentdeploy-tests-prefect-{prefect.__version__}.db"
    if template.exists():
        return template
    with tempfile.TemporaryDirectory(prefix="prefect-template-") as scratch:
        subprocess.run(
            [sys.executable, "-m", "prefect", "server", "database", "upgrade", "-y"],
            env=prefect_env(Path(scratch)),
            check=True,
            capture_output=True,
            timeout=600,
        )
        staged = template.with_suffix(f".{os.getpid()}.tmp")
        shutil.copyfile(Path(scratch) / "prefect.db", staged)
        os.replace(staged, template)  # atomic: concurrent sessions never see half a file
    return template


@pytest.fixture(scope="session")
def prefect_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrefectServer]:
    from prefect.settings import PREFECT_API_URL, PREFECT_HOME, temporary_settings

    home = tmp_path_factory.mktemp("prefect-home")
    shutil.copyfile(_template_database(), home / "prefect.db")
    port = free_port()
    log = open(home / "server.log", "ab")
    proc = subprocess.Popen(
        [sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1", "--port", str(port)],
        env=prefect_env(home),
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
        cwd=str(home),
    )
    server = PrefectServer(url=f"http://127.0.0.1:{port}", home=home, proc=proc)
    saved = {
        k: os.environ.get(k) for k in ("PREFECT_API_URL", "PREFECT_HOME", "PREFECT_SERVER_ANALYTICS_ENABLED")
    }
    try:
        wait_http(f"{server.api_url}/health", timeout=180, proc=proc)
        os.environ.update(
            PREFECT_API_URL=server.api_url, PREFECT_HOME=str(home), PREFECT_SERVER_ANALYTICS_ENABLED="false"
        )
        with temporary_settings(updates={PREFECT_API_URL: server.api_url, PREFECT_HOME: str(home)}):
            yield server
            drain_prefect_workers()
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        log.close()


@pytest.fixture(scope="session")
def mlflow_tracking(mlflow_server: MlflowServer) -> MlflowServer:
    """The session's MLflow tracking server (tests/conftest.py): the flows export traces to it."""
    return mlflow_server
