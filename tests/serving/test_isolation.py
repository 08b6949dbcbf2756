"""From inside an agent: the platform's secrets are out of reach, and the worker is not root."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from agentdeploy.serving.backends.local import UID_BASE, UID_COUNT, LocalProcessBackend
from agentdeploy.settings import Settings
from tests.harness import ServerProcess
from tests.serving.worker_fixtures import CANARY, probe_says

# All a worker's environment may hold: the protocol's variables, the interpreter's, and the user's.
ALLOWED_ENV = {
    "AGENTDEPLOY_WORKER_NAME",
    "AGENTDEPLOY_WORKER_MODEL_PATH",
    "AGENTDEPLOY_WORKER_HOST",
    "AGENTDEPLOY_WORKER_PORT",
    "AGENTDEPLOY_HOST",
    "AGENTDEPLOY_CREDENTIALS_FILE",
    "PATH",
    "HOME",
    "TMPDIR",
    "LANG",
    "PYTHONPATH",
    "PYTHONUNBUFFERED",
    "USER_SETTING",  # the entity's environment_vars
}
# Set by the worker itself (traces kept in-process, no telemetry), never by the backend.
WORKER_SET_ENV = {"IS_IN_DB_MODEL_SERVING_ENV", "ENABLE_MLFLOW_TRACING", "MLFLOW_DISABLE_TELEMETRY"}
# A worker starts as the backend's spare interpreter (worker.py): its initial environment is the
# spare's, which holds nothing of an entity's.
SPARE_ENV = {"PATH", "LANG", "HOME", "PYTHONPATH", "PYTHONUNBUFFERED"}


def _probe(backend: LocalProcessBackend, probe: str, paths: list[str]) -> dict[str, Any]:
    return probe_says(backend, probe, "probe " + json.dumps(paths))


def test_the_platform_secrets_are_unreadable_from_an_agent(
    backend: LocalProcessBackend, probe: str, responder: str, stack_home: ServerProcess
) -> None:
    if os.geteuid() != 0:
        pytest.skip("file isolation needs workers under their own uid (the stack running as root)")
    settings = Settings(home=stack_home.home)
    assert stack_home.proc is not None
    secrets = {
        "admin credentials": settings.credentials_path,
        "keys dir": settings.keys_dir,
        "signing key": settings.keys_dir / "oauth-signing.pem",
        "token hash key": settings.keys_dir / "token-hash.key",
        "prefect auth string": settings.prefect_auth_string_path,
        "workspace database": settings.home_dir / "workspace.db",
        "workspace database wal": settings.home_dir / "workspace.db-wal",
        "server environment": f"/proc/{stack_home.proc.pid}/environ",
        "backend environment": f"/proc/{os.getpid()}/environ",
        "other worker's dir": backend.entity_dir(responder),
        "other worker's environment": f"/proc/{backend.health(responder).pid}/environ",
    }
    for label, path in secrets.items():
        assert os.path.exists(path), f"{label}: {path} should exist for this test to mean anything"
    seen = _probe(backend, probe, [str(p) for p in secrets.values()])
    readable = {label: seen[str(path)] for label, path in secrets.items() if seen[str(path)] != "denied"}
    assert readable == {}, f"readable from inside an agent: {readable}"
    # ... while its own credentials, model and home are.
    own = _probe(
        backend, probe, [str(backend.credentials_path(probe)), str(backend.entity_dir(probe) / "model")]
    )
    assert set(own.values()) == {"readable"}, own


def test_the_worker_runs_unprivileged_with_a_scrubbed_environment(
    backend: LocalProcessBackend, probe: str
) -> None:
    me = probe_says(backend, probe, "whoami")
    if os.geteuid() == 0:
        assert me["uid"] != 0 and UID_BASE <= me["uid"] < UID_BASE + UID_COUNT
        assert me["gid"] == me["uid"] and set(me["groups"]) <= {me["gid"]}
    assert me["cwd"] == str(backend.entity_dir(probe) / "home")
    # What the process started with (the spare's), and all it holds now.
    pid = backend.health(probe).pid
    started_with = {
        line.split(b"=", 1)[0].decode()
        for line in Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        if line
    }
    assert started_with <= SPARE_ENV, started_with - SPARE_ENV
    assert set(me["env"]) - WORKER_SET_ENV == ALLOWED_ENV, set(me["env"]) ^ ALLOWED_ENV
    assert "USER_SETTING" in me["env"] and "AGENTDEPLOY_CREDENTIALS_FILE" in me["env"]
    assert os.environ["AGENTDEPLOY_TEST_CANARY"] == CANARY  # set in the backend's process ...
    assert "AGENTDEPLOY_TEST_CANARY" not in me["env"]  # ... and not passed on
