"""The local stack end to end: `agentdeploy up --detach | up | status | down`, on the session's
`live_stack` (tests/e2e/conftest.py) after test_rotation.py has used it; the test ends with `down`.
A foreground `up` stopped with SIGTERM: the last test of test_deploy.py (its stack runs in the
foreground)."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import stat
import time
from pathlib import Path

import httpx
import pytest

from tests.e2e.conftest import LiveStack, Stack, alive, healthy, stack_logs

pytestmark = pytest.mark.slow

def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture(scope="module")
def stack(live_stack: LiveStack) -> LiveStack:
    return live_stack


def _prefect_api(stack: Stack, auth: tuple[str, str] | None) -> httpx.Client:
    return httpx.Client(base_url=f"http://127.0.0.1:{stack.prefect_port}/api", auth=auth, timeout=30)


def test_detached_stack_up_status_secrets_restart_down(stack: LiveStack) -> None:
    for url in (f"http://127.0.0.1:{stack.port}", f"http://127.0.0.1:{stack.prefect_port}",
                f"http://127.0.0.1:{stack.mlflow_port}"):
        assert url in stack.up_output
    for url in (f"http://127.0.0.1:{stack.port}/api/health", f"http://127.0.0.1:{stack.prefect_port}/api/health",
                f"http://127.0.0.1:{stack.mlflow_port}/health"):
        assert healthy(url), url

    # Files: credentials and every key 0600, the credentials name this stack's server.
    credentials = stack.home / "credentials"
    assert _mode(credentials) == 0o600
    creds = json.loads(credentials.read_text())
    assert creds["host"] == f"http://127.0.0.1:{stack.port}"
    admin_token = creds["token"]
    keys = {p.name: p for p in (stack.home / "keys").iterdir()}
    for name in ("prefect-api-auth", "prefect-encryption-key", "mlflow-kek-passphrase"):
        assert _mode(keys[name]) == 0o600, name
    auth_string = keys["prefect-api-auth"].read_text().strip()
    encryption_key = keys["prefect-encryption-key"].read_text().strip()
    user, _, password = auth_string.partition(":")
    assert user == "agentdeploy" and len(password) >= 32

    # `up` again: says so, exit 0, nothing new started.
    pids = stack.recorded_pids()
    again = stack.cli("up", "--detach")
    assert again.returncode == 0 and "already up" in again.stdout
    again = stack.cli("up")
    assert again.returncode == 0 and "already up" in again.stdout
    assert stack.recorded_pids() == pids

    shown = stack.cli("status")
    assert shown.returncode == 0, shown.stdout
    for title in ("Prefect server", "MLflow tracking server", "agentdeploy server"):
        line = next(line for line in shown.stdout.splitlines() if title in line)
        assert " ok " in line, shown.stdout

    # The stack's servers answer real clients: agentdeploy with the admin token, MLflow over HTTP.
    me = httpx.get(f"http://127.0.0.1:{stack.port}/api/2.0/token/list", auth=("token", admin_token))
    assert me.status_code == 200
    experiments = httpx.get(f"http://127.0.0.1:{stack.mlflow_port}/api/2.0/mlflow/experiments/search",
                            params={"max_results": 5})
    assert experiments.status_code == 200 and "experiments" in experiments.json()

    # Prefect's API refuses calls without the auth string and accepts them with it.
    with _prefect_api(stack, None) as anonymous:
        assert anonymous.post("/flows/filter", json={}).status_code == 401
        assert anonymous.post("/flows/filter", json={}, auth=("agentdeploy", "wrong")).status_code == 401
    with _prefect_api(stack, (user, password)) as prefect:
        assert prefect.post("/flows/filter", json={}).status_code == 200
        # A Secret block: its value is encrypted with our key file's key, which is not stored
        # in Prefect's database.
        canary = "canary-" + os.urandom(8).hex()
        block_type = prefect.get("/block_types/slug/secret").json()
        schemas = prefect.post("/block_schemas/filter", json={
            "block_schemas": {"block_type_id": {"any_": [block_type["id"]]}}}).json()
        created = prefect.post("/block_documents/", json={
            "name": "stack-test", "block_type_id": block_type["id"], "block_schema_id": schemas[0]["id"],
            "data": {"value": canary}})
        assert created.status_code == 201, created.text
        read = prefect.get(f"/block_documents/{created.json()['id']}", params={"include_secrets": "true"})
        assert read.json()["data"]["value"] == canary

    prefect_db = stack.home / "prefect" / "prefect.db"
    with sqlite3.connect(prefect_db) as db:
        stored_keys = db.execute("select count(*) from configuration where key = 'ENCRYPTION_KEY'").fetchone()
        assert stored_keys[0] == 0

    # No secret in the Prefect or MLflow databases, any log, or any child's command line.
    stored = [p for p in (stack.home / "prefect").rglob("*") if p.is_file()]
    stored += [p for p in (stack.home / "mlflow").rglob("*") if p.is_file()]
    stored += list((stack.home / "logs").glob("*.log"))
    assert prefect_db in stored and (stack.home / "logs" / "server.log") in stored
    for path in stored:
        content = path.read_bytes()
        for name, value in (("admin token", admin_token), ("Prefect auth string", password),
                            ("Prefect encryption key", encryption_key), ("Secret block value", canary)):
            assert value.encode() not in content, f"{name} found in {path}"
    for name, pid in stack.recorded_pids().items():
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        assert password.encode() not in cmdline and encryption_key.encode() not in cmdline, name

    # A crashed child is restarted by the supervisor and healthy again.
    old_server = pids["server"]
    os.killpg(old_server, signal.SIGKILL)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        now = stack.recorded_pids().get("server")
        if now and now != old_server and healthy(f"http://127.0.0.1:{stack.port}/api/health"):
            break
        time.sleep(0.2)
    else:
        pytest.fail(f"the agentdeploy server was not restarted:\n{stack_logs(stack.home)}")

    # quickstart shows the way in without the token.
    guide = stack.cli("quickstart")
    assert guide.returncode == 0, guide.stdout + guide.stderr
    assert str(credentials) in guide.stdout and "-u token:$TOKEN" in guide.stdout
    assert "WorkspaceClient(host=" in guide.stdout
    assert admin_token not in guide.stdout + guide.stderr and password not in guide.stdout

    # down: the supervisor and every child gone, nothing of this home left.
    recorded = stack.recorded_pids()
    stopped = stack.cli("down")
    assert stopped.returncode == 0 and "stopped" in stopped.stdout
    assert not [name for name, pid in recorded.items() if alive(pid)]
    assert stack.processes() == []
    after = stack.cli("status")
    assert after.returncode == 1 and "not up" in after.stdout
