"""Fixtures (imported by conftest.py) for the worker, the local backend, tracing and the example agents.

One session: the example models are logged once to a sqlite MLflow registry (in a subprocess,
as `agentdeploy examples register` would log them), downloaded with the backend's own
`download_model`, and served by one real `LocalProcessBackend` (real worker processes, real uids
when the tests run as root) whose event loop runs on a thread of its own.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
from collections.abc import Coroutine, Iterator
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest

from agentdeploy.serving.backends.base import ServedEntitySpec
from agentdeploy.serving.backends.local import LocalProcessBackend, download_model
from agentdeploy.settings import Settings
from tests.harness import REPO, ServerProcess

T = TypeVar("T")
PROBE_AGENT = Path(__file__).parent / "agents" / "probe.py"
CANARY = "canary-secret-of-the-server-process"

_LOG_MODELS = """
import json, sys
import mlflow
from agentdeploy import examples
mlflow.set_experiment("tests")
out = {}
out["responder"] = examples.log_responder().registered_model_version
out["support_bot"] = examples.log_support_bot("w-test-1").registered_model_version
with mlflow.start_run():
    out["probe"] = mlflow.pyfunc.log_model(name="probe", python_model=sys.argv[1], registered_model_name=
        "main.tests.probe", pip_requirements=["mlflow==3.17.2"]).registered_model_version
print("RESULT" + json.dumps(out))
"""


class LoopThread:
    """An event loop on its own thread: the backend's methods run there, tests call in."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="backend-loop", daemon=True)
        self.thread.start()

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = 180) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


@pytest.fixture(scope="session")
def registry() -> Iterator[dict[str, Any]]:
    """The examples and the probe agent logged once to a sqlite registry; their local copies."""
    # Not tmp_path_factory: concurrent pytest sessions on this machine prune each other's basetemp.
    root = Path(tempfile.mkdtemp(prefix="agentdeploy-mlflow-", dir="/tmp"))
    uri = f"sqlite:///{root / 'mlflow.db'}"
    env = {**os.environ, "MLFLOW_TRACKING_URI": uri, "MLFLOW_REGISTRY_URI": uri}
    done = subprocess.run(
        [sys.executable, "-c", _LOG_MODELS, str(PROBE_AGENT)],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    versions = json.loads(done.stdout.split("RESULT", 1)[1])
    names = {
        "responder": "main.agents.responder",
        "support_bot": "main.agents.support_bot",
        "probe": "main.tests.probe",
    }
    models: dict[str, Any] = {"tracking_uri": uri}
    for key, name in names.items():
        model_uri = f"models:/{name}/{versions[key]}"
        path = root / "downloads" / key
        path.parent.mkdir(exist_ok=True)
        download_model(model_uri, path, uri)
        models[key] = {"model_uri": model_uri, "path": path}
    yield models
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="session")
def stack_home() -> Iterator[ServerProcess]:
    """A real server's home in a world-traversable directory (the worst case for isolation:
    nothing but the modes the stack sets protects its files)."""
    parent = Path(tempfile.mkdtemp(prefix="agentdeploy-serving-", dir="/tmp"))
    parent.chmod(0o755)
    home = parent / "home"
    home.mkdir(mode=0o755)
    server = ServerProcess(home=home)
    server.start()
    # The stack's Prefect auth string, as `agentdeploy up` keeps it.
    from agentdeploy.workspace.keys import write_private_file

    write_private_file(Settings(home=home).prefect_auth_string_path, b"admin:prefect-auth-secret")
    yield server
    server.stop()
    shutil.rmtree(parent, ignore_errors=True)


@pytest.fixture(scope="session")
def loop_thread() -> Iterator[LoopThread]:
    loop = LoopThread()
    yield loop
    loop.close()


@pytest.fixture(scope="session")
def backend(stack_home: ServerProcess, loop_thread: LoopThread) -> Iterator[LocalProcessBackend]:
    os.environ["AGENTDEPLOY_TEST_CANARY"] = CANARY  # must not reach any worker
    workers_root = Path(tempfile.mkdtemp(prefix="agentdeploy-workers-", dir="/tmp"))
    settings = Settings(home=stack_home.home, port=stack_home.port)
    backend = LocalProcessBackend(settings, workers_root=workers_root, start_timeout_s=120)
    yield backend
    loop_thread.run(backend.close())
    shutil.rmtree(workers_root, ignore_errors=True)


def start_entity(loop_thread: LoopThread, backend: LocalProcessBackend, spec: ServedEntitySpec) -> str:
    loop_thread.run(backend.start(spec))
    return spec.name


@pytest.fixture(scope="session")
def responder(registry: dict[str, Any], backend: LocalProcessBackend, loop_thread: LoopThread) -> str:
    spec = ServedEntitySpec(
        name="responder-1",
        model_uri=registry["responder"]["model_uri"],
        model_path=registry["responder"]["path"],
    )
    return start_entity(loop_thread, backend, spec)


@pytest.fixture(scope="session")
def probe(registry: dict[str, Any], backend: LocalProcessBackend, loop_thread: LoopThread) -> str:
    name = "probe-1"
    backend.write_credentials(name, "first-token", 4102444800.0)
    spec = ServedEntitySpec(
        name=name,
        model_uri=registry["probe"]["model_uri"],
        model_path=registry["probe"]["path"],
        environment_vars={"USER_SETTING": "visible-to-agent"},
    )
    return start_entity(loop_thread, backend, spec)


def invoke(
    backend: LocalProcessBackend,
    name: str,
    body: dict[str, Any],
    *,
    api: str = "invocations",
    request_id: str = "req-1",
    timeout: float = 60,
) -> httpx.Response:
    address = backend.address(name)
    assert address is not None, backend.health(name)
    host, port = address
    return httpx.post(
        f"http://{host}:{port}/invocations",
        json=body,
        timeout=timeout,
        headers={"x-request-id": request_id, "x-agentdeploy-api": api},
    )


def split_answer(response: httpx.Response) -> tuple[Any, Any]:
    """(response JSON, trace JSON) of a worker's success answer, by its length header."""
    n = int(response.headers["x-agentdeploy-response-length"])
    return json.loads(response.content[:n]), json.loads(response.content[n:])


def probe_says(backend: LocalProcessBackend, name: str, text: str) -> dict[str, Any]:
    response = invoke(backend, name, {"input": [{"role": "user", "content": text}]})
    assert response.status_code == 200, response.text
    return split_answer(response)[0]["custom_outputs"]


__all__ = ["REPO", "CANARY", "LoopThread", "invoke", "split_answer", "probe_says", "start_entity"]
