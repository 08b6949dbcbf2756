"""The real `agentdeploy` command (a subprocess) against a real server: identities and tokens."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from pathlib import Path

import httpx

from tests.harness import REPO, ServerProcess

AGENTDEPLOY = Path(sys.executable).parent / "agentdeploy"  # the installed console script


def agentdeploy(
    server: ServerProcess, *args: str, token: str | None = None
) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AGENTDEPLOY_", "DATABRICKS_"))}
    env.update(
        AGENTDEPLOY_HOST=server.url,
        AGENTDEPLOY_TOKEN=token or server.admin_token,
        AGENTDEPLOY_HOME=str(server.home.parent / "cli-home"),
        COLUMNS="250",
        NO_COLOR="1",
    )
    return subprocess.run(
        [str(AGENTDEPLOY), *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=120
    )


def test_tokens_create_prints_the_value_once_and_list_never(server: ServerProcess) -> None:
    comment = f"cli-{uuid.uuid4().hex[:6]}"
    created = agentdeploy(server, "tokens", "create", "--comment", comment, "--lifetime-seconds", "600")
    assert created.returncode == 0, created.stderr
    value = created.stdout.strip()
    assert value.startswith("dapi") and len(value) == 68  # stdout is the value alone
    me = httpx.get(f"{server.url}/api/2.0/preview/scim/v2/Me", headers={"Authorization": f"Bearer {value}"})
    assert me.status_code == 200 and me.json()["userName"] == "admin"

    listed = agentdeploy(server, "tokens", "list")
    assert listed.returncode == 0, listed.stderr
    assert comment in listed.stdout and value not in listed.stdout + listed.stderr
    token_id = next(
        t["token_id"]
        for t in httpx.get(
            f"{server.url}/api/2.0/token/list", headers={"Authorization": f"Bearer {value}"}
        ).json()["token_infos"]
        if t["comment"] == comment
    )
    assert token_id in listed.stdout

    revoked = agentdeploy(server, "tokens", "delete", token_id)
    assert revoked.returncode == 0, revoked.stderr
    assert (
        httpx.get(
            f"{server.url}/api/2.0/preview/scim/v2/Me", headers={"Authorization": f"Bearer {value}"}
        ).status_code
        == 401
    )


def test_identity_commands_and_a_clear_error(server: ServerProcess) -> None:
    # Few invocations: each one starts a Python process (about a second on a loaded machine).
    suffix = uuid.uuid4().hex[:6]
    admin = {"Authorization": f"Bearer {server.admin_token}"}
    httpx.post(
        f"{server.url}/api/2.0/preview/scim/v2/Groups",
        json={"displayName": f"cli-team-{suffix}"},
        headers=admin,
    ).raise_for_status()
    created = agentdeploy(server, "service-principals", "create", f"cli-bot-{suffix}")
    assert created.returncode == 0, created.stderr
    added = agentdeploy(server, "groups", "add-member", f"cli-team-{suffix}", f"cli-bot-{suffix}")
    assert added.returncode == 0, added.stderr
    groups = agentdeploy(server, "groups", "list")
    row = next(line for line in groups.stdout.splitlines() if f"cli-team-{suffix}" in line)
    assert f"cli-bot-{suffix}" in row
    secret = agentdeploy(server, "service-principals", "create-secret", f"cli-bot-{suffix}")
    assert secret.returncode == 0 and "client_secret: dose" in secret.stdout
    assert agentdeploy(server, "service-principals", "delete", f"cli-bot-{suffix}").returncode == 0
    listed = httpx.get(f"{server.url}/api/2.0/preview/scim/v2/ServicePrincipals", headers=admin).json()
    assert f"cli-bot-{suffix}" not in str(listed)

    bad = agentdeploy(server, "groups", "create", "a/b")
    assert bad.returncode == 1 and "may not contain" in bad.stderr and "Traceback" not in bad.stderr
    denied = agentdeploy(server, "tokens", "list", token="dapi" + "0" * 64)
    assert denied.returncode == 1 and "error" in denied.stderr and "Traceback" not in denied.stderr
