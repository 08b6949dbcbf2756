"""Stack-level fixtures: the `Stack` helper (a home and its ports, driven through the CLI) and one
deploy-ready stack per module (`deploy_stack`: up, demo data, both examples registered), always
stopped with `agentdeploy down` at the end. Starting a stack costs over a minute: share it."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import httpx
import pytest

from agentdeploy.serving.backends.local import worker_processes
from agentdeploy.settings import Settings
from tests.harness import REPO, drain_prefect_workers, free_port

__all__ = ["Stack", "LiveStack", "CLI", "MARKER", "stack_logs", "healthy", "alive", "children", "worker_pids"]

CLI = str(Path(sys.executable).with_name("agentdeploy"))
MARKER = "AGENTDEPLOY_STACK_HOME"
_STACK_ENV_PREFIXES = ("AGENTDEPLOY_", "PREFECT_", "MLFLOW_")


@dataclass
class Stack:
    home: Path
    port: int
    prefect_port: int
    mlflow_port: int
    runner_port: int | None = None
    foreground: subprocess.Popen[bytes] | None = None  # `agentdeploy up` run in the foreground

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(_STACK_ENV_PREFIXES)}
        env.update(AGENTDEPLOY_HOME=str(self.home), AGENTDEPLOY_PORT=str(self.port),
                   AGENTDEPLOY_PREFECT_PORT=str(self.prefect_port),
                   AGENTDEPLOY_MLFLOW_PORT=str(self.mlflow_port), COLUMNS="200")
        if self.runner_port is not None:
            env["AGENTDEPLOY_RUNNER_PORT"] = str(self.runner_port)
        return env

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def cli(self, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        return subprocess.run([CLI, *args], env=self.env(), cwd=REPO, capture_output=True, text=True,
                              timeout=timeout)

    def start_foreground(self) -> subprocess.Popen[bytes]:
        """`agentdeploy up` in the foreground (it returns when the stack stops), output to
        logs/foreground-test.log; then wait until every service is healthy."""
        (self.home / "logs").mkdir(parents=True, exist_ok=True)
        with open(self.home / "logs" / "foreground-test.log", "ab") as log:
            self.foreground = subprocess.Popen([CLI, "up"], env=self.env(), cwd=REPO, stdout=log,
                                               stderr=subprocess.STDOUT, start_new_session=True)
        self.wait_healthy()
        return self.foreground

    def recorded_pids(self) -> dict[str, int]:
        state = json.loads((self.home / "run" / "stack.json").read_text())
        pids = {name: info["pid"] for name, info in state["services"].items() if info["pid"]}
        return {"supervisor": state["pid"], **pids}

    def processes(self) -> list[str]:
        """Live processes started for this home: the stack's marker in their environment, or
        the home path on their command line."""
        found = []
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit() or int(entry.name) == os.getpid():
                continue
            try:
                environ = (entry / "environ").read_bytes().split(b"\0")
                cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ")
                state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
            except OSError:
                continue
            marked = f"{MARKER}={self.home}".encode() in environ
            if state != "Z" and (marked or str(self.home).encode() in cmdline):
                found.append(f"{entry.name}: {cmdline.decode(errors='replace')[:200]}")
        return found

    def wait_healthy(self, timeout: float = 240) -> None:
        urls = [f"http://127.0.0.1:{self.port}/api/health", f"http://127.0.0.1:{self.prefect_port}/api/health",
                f"http://127.0.0.1:{self.mlflow_port}/health"]
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            state_file = self.home / "run" / "stack.json"
            if state_file.exists() and json.loads(state_file.read_text()).get("state") == "up":
                if all(healthy(url) for url in urls):
                    return
            time.sleep(0.2)
        raise TimeoutError(f"stack not healthy; log:\n{stack_logs(self.home)}")

    def use_in_process(self) -> dict[str, str | None]:
        """Point this process (SDK, Prefect client, MLflow) at the stack; returns what to restore."""
        from agentdeploy.settings import get_settings
        from agentdeploy.stack import prefect_client_env

        wanted = {k: v for k, v in self.env().items() if k.startswith("AGENTDEPLOY_")}
        saved = {k: os.environ.get(k) for k in os.environ if k.startswith(_STACK_ENV_PREFIXES)}
        for key in list(os.environ):
            if key.startswith(_STACK_ENV_PREFIXES):
                del os.environ[key]
        os.environ.update(wanted)
        get_settings.cache_clear()
        settings = get_settings()
        os.environ.update(prefect_client_env(settings))
        os.environ["MLFLOW_TRACKING_URI"] = os.environ["MLFLOW_REGISTRY_URI"] = settings.mlflow_tracking_uri
        for key in (*wanted, "PREFECT_API_URL", "PREFECT_API_AUTH_STRING", "PREFECT_HOME",
                    "MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI"):
            saved.setdefault(key, None)
        return saved


def restore_env(saved: dict[str, str | None]) -> None:
    from agentdeploy.settings import get_settings

    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value
    get_settings.cache_clear()


def alive(pid: int) -> bool:
    try:
        return (Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]) != "Z"
    except (OSError, IndexError):
        return False


def children(pid: int) -> set[int]:
    """Live processes whose parent is `pid`."""
    found = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if fields[0] != "Z" and int(fields[1]) == pid:
            found.add(int(entry.name))
    return found


def healthy(url: str) -> bool:
    try:
        return httpx.get(url, timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def stack_logs(home: Path, tail: int = 2000) -> str:
    logs = sorted((home / "logs").glob("*.log"))
    return "\n".join(f"== {p.name}\n{p.read_text(errors='replace')[-tail:]}" for p in logs)


def worker_pids(server_pid: int) -> set[int]:
    """Live serving workers started by the stack's agentdeploy server (its children serving an
    entity; the spare interpreter it keeps is not one)."""
    found = set()
    for pid in worker_processes():
        try:
            parent = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        if parent == server_pid:
            found.add(pid)
    return found


TOKEN_LIFETIME_S = 30
ROTATION_INTERVAL_S = 5  # a run costs seconds of process start-up: keep the gap well under a lifetime


class LiveStack(Stack):
    """The stack test_rotation.py and test_stack.py share: 30 s access tokens, rotation every 5 s."""

    up_output: str = ""  # what `agentdeploy up --detach` printed when it started it

    def env(self) -> dict[str, str]:
        env = super().env()
        env.update(AGENTDEPLOY_ACCESS_TOKEN_LIFETIME_S=str(TOKEN_LIFETIME_S),
                   AGENTDEPLOY_ROTATION_INTERVAL_S=str(ROTATION_INTERVAL_S))
        return env

    def settings(self) -> Settings:
        return Settings(home=self.home, port=self.port, prefect_port=self.prefect_port,
                        mlflow_port=self.mlflow_port, runner_port=self.runner_port)

    def admin(self) -> httpx.Client:
        creds = json.loads((self.home / "credentials").read_text())
        return httpx.Client(base_url=creds["host"], headers={"Authorization": f"Bearer {creds['token']}"},
                            timeout=60)

    def prefect(self) -> httpx.Client:
        user, _, password = (self.home / "keys" / "prefect-api-auth").read_text().strip().partition(":")
        return httpx.Client(base_url=f"http://127.0.0.1:{self.prefect_port}/api", auth=(user, password),
                            timeout=30)

    def token_expiry(self, entity: str) -> datetime:
        """When the token the server holds for `entity` expires (the token itself is not read out)."""
        body = json.loads((self.home / "agent-credentials" / f"{entity}.json").read_text())
        return datetime.fromisoformat(body["expires_at"])


@pytest.fixture(scope="session")
def live_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveStack]:
    """One stack started once for test_rotation.py, then test_stack.py (which ends by stopping
    it): a stack start with a fresh Prefect database costs one to two minutes here."""
    ports: set[int] = set()
    while len(ports) < 4:
        ports.add(free_port())
    port, prefect_port, mlflow_port, runner_port = sorted(ports)
    result = LiveStack(tmp_path_factory.mktemp("live-home"), port, prefect_port, mlflow_port, runner_port)
    started = result.cli("up", "--detach")
    result.up_output = started.stdout
    try:
        assert started.returncode == 0, started.stdout + started.stderr + stack_logs(result.home)
        yield result
    finally:
        result.cli("down")


@pytest.fixture(scope="module")
def deploy_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """A running stack with the demo data and both examples registered (version 1 each), this
    process pointed at it (SDK, Prefect client, MLflow). Started with `agentdeploy up` in the
    foreground: test_deploy.py's last test stops it with SIGTERM. `agentdeploy down` always runs."""
    ports: set[int] = set()
    while len(ports) < 4:
        ports.add(free_port())
    port, prefect_port, mlflow_port, runner_port = sorted(ports)
    stack = Stack(tmp_path_factory.mktemp("deploy-home"), port, prefect_port, mlflow_port, runner_port)
    saved: dict[str, str | None] | None = None
    try:
        stack.start_foreground()
        saved = stack.use_in_process()
        from agentdeploy.client import AgentDeployClient
        from agentdeploy.demo import create_demo_data

        create_demo_data(AgentDeployClient.from_environment())
        registered = stack.cli("examples", "register", timeout=300)
        assert registered.returncode == 0, registered.stdout + registered.stderr
        yield stack
    finally:
        drain_prefect_workers()  # in-process flow runs logged to this stack's Prefect
        if stack.foreground is not None and stack.foreground.poll() is None:
            stack.foreground.send_signal(signal.SIGTERM)
            try:
                stack.foreground.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(stack.foreground.pid, signal.SIGKILL)
                stack.foreground.wait()
        stack.cli("down", timeout=120)
        if saved is not None:
            restore_env(saved)
