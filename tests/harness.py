"""A real agentdeploy server in a subprocess, on a free loopback port, with its own home."""

from __future__ import annotations

import json
import os
import queue
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

REPO = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_http(url: str, timeout: float = 30.0, proc: subprocess.Popen[bytes] | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode} before {url} answered")
        try:
            if httpx.get(url, timeout=1.0).status_code < 500:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    raise TimeoutError(f"{url} did not answer within {timeout}s")


@dataclass
class ServerProcess:
    home: Path
    port: int = field(default_factory=free_port)
    extra_env: dict[str, str] = field(default_factory=dict)
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def log_path(self) -> Path:
        return self.home / "logs" / "server-test.log"

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("AGENTDEPLOY_")}
        env.update(
            AGENTDEPLOY_HOME=str(self.home),
            AGENTDEPLOY_PORT=str(self.port),
            AGENTDEPLOY_BIND="127.0.0.1",
            PYTHONUNBUFFERED="1",
        )
        env.update(self.extra_env)
        return env

    def start(self) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "uvicorn", "agentdeploy.server:app", "--host", "127.0.0.1",
             "--port", str(self.port), "--log-level", "info"],
            env=self.env(), cwd=str(REPO), stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )
        wait_http(f"{self.url}/api/health", proc=self.proc)

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, sig)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        self.proc = None

    def restart(self) -> None:
        self.stop()
        self.start()

    @property
    def admin_token(self) -> str:
        return str(json.loads((self.home / "credentials").read_text())["token"])

    def client(self, token: str | None = None) -> httpx.Client:
        return httpx.Client(base_url=self.url, headers={"Authorization": f"Bearer {token or self.admin_token}"},
                            timeout=60)


def drain_prefect_workers(timeout: float = 10.0) -> None:
    """Send the logs and events this process still buffers for Prefect, for at most `timeout`
    seconds per kind, then drop what is left. Call it before stopping a Prefect server that
    in-process flow runs talked to: Prefect retries each buffered batch toward a stopped server
    for about a minute, and its exit hook waits for all of them (73 batches held CI 74 minutes
    after the last test passed)."""
    from prefect.events.worker import EventsWorker
    from prefect.logging.handlers import APILogWorker

    for worker in (APILogWorker, EventsWorker):
        with worker._instance_lock:  # Prefect keeps no public list of its running services
            instances = list(worker._instances.values())
        try:
            worker.drain_all(timeout=timeout)
        except Exception:
            pass
        for instance in instances:
            _drop_queued_items(instance._queue)


def _drop_queued_items(items: queue.Queue[object]) -> None:
    """Empty a stopped service's queue, keeping its stop marker (None) so its loop still ends."""
    while True:
        try:
            items.get_nowait()
        except queue.Empty:
            break
        items.task_done()
    items.put_nowait(None)


@dataclass
class MlflowServer:
    url: str
    port: int
    proc: subprocess.Popen[bytes] | None  # None: a server this session reuses, not its own


def private_dir(prefix: str) -> Path:
    # Not tmp_path_factory: concurrent pytest sessions on this machine prune each other's basetemp.
    return Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))


def start_mlflow_server(store: Path) -> MlflowServer:
    """`mlflow server` as the stack runs it: sqlite store, served artifacts, one worker, loopback."""
    from agentdeploy.stack import MLFLOW_SERVER_ENV

    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "AGENTDEPLOY_"))}
    env.update(MLFLOW_SERVER_ENV)
    with open(store / "server.log", "ab") as log:
        proc = subprocess.Popen(
            [str(Path(sys.executable).with_name("mlflow")), "server", "--host", "127.0.0.1",
             "--port", str(port), "--backend-store-uri", f"sqlite:///{store / 'mlflow.db'}",
             "--serve-artifacts", "--artifacts-destination", str(store / "artifacts"), "--workers", "1",
             "--allowed-hosts", f"127.0.0.1,127.0.0.1:{port},localhost,localhost:{port}"],
            env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True, cwd=str(store),
        )
    server = MlflowServer(url=f"http://127.0.0.1:{port}", port=port, proc=proc)
    try:
        wait_http(f"{server.url}/health", timeout=180, proc=proc)
    except BaseException:
        stop_mlflow_server(server)
        raise
    return server


def stop_mlflow_server(server: MlflowServer) -> None:
    if server.proc is None or server.proc.poll() is not None:
        return
    os.killpg(server.proc.pid, signal.SIGTERM)  # the server and its uvicorn and job-runner children
    try:
        server.proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(server.proc.pid, signal.SIGKILL)
        server.proc.wait()


def run_mlflow_script(tracking_uri: str, script: str) -> None:
    """Log and register models from code in a child process, so this process keeps no MLflow state."""
    prelude = (f"import mlflow\nmlflow.set_tracking_uri({tracking_uri!r}); "
               f"mlflow.set_registry_uri({tracking_uri!r})\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "AGENTDEPLOY_"))}
    done = subprocess.run([sys.executable, "-c", prelude + script], env=env, cwd=str(REPO),
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]


def inference_table_config(catalog: str, schema: str, prefix: str) -> dict[str, Any]:
    """An endpoint's `ai_gateway.inference_table_config`, on: `{catalog}.{schema}.{prefix}_payload`."""
    return {"catalog_name": catalog, "schema_name": schema, "table_name_prefix": prefix, "enabled": True}
