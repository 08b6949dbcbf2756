"""The local backend: supervision (restart after kill -9), stop/start, failures, credentials, logs."""

from __future__ import annotations

import json
import os
import signal
import stat
import time
from pathlib import Path
from typing import Any

import pytest

from agentdeploy.serving.backends.base import EntityState, ServedEntitySpec, StartFailed
from agentdeploy.serving.backends.local import UID_BASE, UID_COUNT, LocalProcessBackend
from tests.serving.worker_fixtures import CANARY, LoopThread, invoke, probe_says, split_answer

ASK = {
    "messages": [
        {"role": "system", "content": "Context:\nThe sky is blue. Grass is green."},
        {"role": "user", "content": "What colour is the sky?"},
    ]
}


def _wait(predicate: Any, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError("condition not met in time")


def test_a_killed_worker_is_restarted_with_no_manual_step(
    backend: LocalProcessBackend, responder: str
) -> None:
    before = backend.health(responder)
    assert before.state == EntityState.READY and before.pid and before.last_start_s
    os.kill(before.pid, signal.SIGKILL)
    _wait(lambda: backend.health(responder).state != EntityState.READY, timeout=5)
    assert backend.address(responder) is None  # the gateway answers 503 meanwhile
    _wait(lambda: backend.health(responder).state == EntityState.READY)
    after = backend.health(responder)
    assert after.pid != before.pid and after.restarts == before.restarts + 1
    body, _ = split_answer(invoke(backend, responder, ASK))
    assert body["choices"][0]["message"]["content"] == "The sky is blue."


def test_stop_is_idempotent_and_start_brings_it_back(
    backend: LocalProcessBackend, loop_thread: LoopThread, registry: dict[str, Any], responder: str
) -> None:
    """What scale-to-zero does: stop an idle entity, start it again on the next request; the
    start uses the spare interpreter the backend keeps (mlflow already imported)."""
    pid = backend.health(responder).pid
    loop_thread.run(backend.stop(responder))
    loop_thread.run(backend.stop(responder))
    assert backend.health(responder).state == EntityState.STOPPED and backend.address(responder) is None
    assert pid is not None and not Path(f"/proc/{pid}").exists()
    loop_thread.run(backend.stop("never-started"))
    assert backend.health("never-started").state == EntityState.STOPPED
    spec = ServedEntitySpec(
        name=responder, model_uri=registry["responder"]["model_uri"], model_path=registry["responder"]["path"]
    )
    spare = backend.spare_pid
    assert spare is not None and os.readlink(f"/proc/{spare}/cwd") == "/", "a spare holds no entity's directory"
    spare_env = Path(f"/proc/{spare}/environ").read_bytes()
    assert b"AGENTDEPLOY_" not in spare_env and CANARY.encode() not in spare_env
    loop_thread.run(backend.start(spec))
    health = backend.health(responder)
    assert health.state == EntityState.READY and health.restarts == 0 and health.last_start_s
    assert health.pid == spare, "the start used the spare"
    assert backend.spare_pid not in (None, spare), "and a new spare is kept for the next one"
    assert invoke(backend, responder, ASK).status_code == 200


def test_a_model_that_cannot_load_fails_the_start_with_its_log(
    backend: LocalProcessBackend, loop_thread: LoopThread, tmp_path: Path
) -> None:
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "MLmodel").write_text("flavors:\n  python_function:\n    loader_module: no_such_module_here\n")
    spec = ServedEntitySpec(name="broken-1", model_uri="models:/main.tests.broken/1", model_path=broken)
    with pytest.raises(StartFailed) as failure:
        loop_thread.run(backend.start(spec))
    assert "no_such_module_here" in str(failure.value)  # the worker's last log lines
    health = backend.health("broken-1")
    assert health.state == EntityState.FAILED and "exited with code 3" in health.message
    loop_thread.run(backend.remove("broken-1"))
    assert not backend.entity_dir("broken-1").exists()


def test_credentials_are_atomic_private_and_picked_up(backend: LocalProcessBackend, probe: str) -> None:
    path = backend.credentials_path(probe)
    assert probe_says(backend, probe, "token")["token"] == "first-token"
    backend.write_credentials(probe, "second-token", 4102444800.0)
    assert probe_says(backend, probe, "token")["token"] == "second-token"
    st = path.stat()
    assert json.loads(path.read_text())["token"] == "second-token"
    assert not [p for p in path.parent.iterdir() if p.name.endswith(".tmp")]
    if os.geteuid() == 0:
        uid = backend.health(probe).pid and Path(f"/proc/{backend.health(probe).pid}").stat().st_uid
        assert st.st_uid == 0 and st.st_gid == uid and stat.S_IMODE(st.st_mode) == 0o640
        assert stat.S_IMODE(path.parent.stat().st_mode) == 0o750 and path.parent.stat().st_gid == uid
    else:
        assert stat.S_IMODE(st.st_mode) == 0o600


def test_each_worker_has_its_own_uid_and_log(
    backend: LocalProcessBackend, responder: str, probe: str
) -> None:
    if os.geteuid() != 0:
        pytest.skip("uids are switched only when the stack runs as root")
    uids = {Path(f"/proc/{backend.health(n).pid}").stat().st_uid for n in (responder, probe)}
    assert len(uids) == 2 and all(UID_BASE <= u < UID_BASE + UID_COUNT for u in uids)
    log = backend.log_path(probe)
    assert log.parent == backend.settings.logs_dir and stat.S_IMODE(log.stat().st_mode) == 0o600
    assert "starting worker for probe-1" in backend.log_tail(probe, 1000)
