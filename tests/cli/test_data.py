"""The real `agentdeploy` command against a real server: tables from CSV, SQL, secrets via stdin."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from pathlib import Path

import httpx

from tests.harness import REPO, ServerProcess
from tests.workspace.data_helpers import make_schema, make_warehouse, unique_name

AGENTDEPLOY = Path(sys.executable).parent / "agentdeploy"


def agentdeploy(
    server: ServerProcess, *args: str, stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AGENTDEPLOY_", "DATABRICKS_"))}
    env.update(
        AGENTDEPLOY_HOST=server.url,
        AGENTDEPLOY_TOKEN=server.admin_token,
        AGENTDEPLOY_HOME=str(server.home.parent / "cli-data-home"),
        COLUMNS="250",
        NO_COLOR="1",
    )
    return subprocess.run(
        [str(AGENTDEPLOY), *args],
        cwd=REPO,
        env=env,
        input=stdin or "",
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_tables_create_from_csv_then_sql(server: ServerProcess, admin: httpx.Client, tmp_path: Path) -> None:
    catalog = unique_name("cli")
    make_schema(admin, catalog, "docs")
    warehouse = make_warehouse(admin, unique_name("cli-wh"))
    csv = tmp_path / "faq.csv"
    csv.write_text("question,answer,votes\nWhat is it?,A deployer,3\nWhy?,Because,7\n")
    created = agentdeploy(server, "tables", "create", f"{catalog}.docs.faq", "--from", str(csv))
    assert created.returncode == 0, created.stderr
    assert "2 row(s) written" in created.stdout and "votes bigint" in created.stdout

    result = agentdeploy(
        server,
        "sql",
        "SELECT question, votes FROM docs.faq WHERE votes > :v ORDER BY votes",
        "--warehouse",
        warehouse,
        "--catalog",
        catalog,
        "--param",
        "v:INT=5",
    )
    assert result.returncode == 0, result.stderr
    assert "Why?" in result.stdout and "What is it?" not in result.stdout and "1 row(s)" in result.stdout
    refused = agentdeploy(server, "sql", f"DROP TABLE {catalog}.docs.faq", "--warehouse", warehouse)
    assert refused.returncode == 1 and "DROP" in refused.stderr


def test_secrets_put_reads_the_value_from_stdin_never_argv(
    server: ServerProcess, admin: httpx.Client
) -> None:
    scope = unique_name("cli-scope")
    value = f"cli-secret-{uuid.uuid4().hex}"
    assert admin.post("/api/2.0/secrets/scopes/create", json={"scope": scope}).status_code == 200
    put = agentdeploy(server, "secrets", "put", scope, "api-key", stdin=value + "\n")
    assert put.returncode == 0, put.stderr
    listed = agentdeploy(server, "secrets", "list", scope)
    assert listed.returncode == 0 and "api-key" in listed.stdout and value not in listed.stdout
    # What was stored is the value without echo's newline: the deploy path reads it back.
    from agentdeploy.settings import Settings
    from agentdeploy.workspace import secrets
    from agentdeploy.workspace.context import Workspace

    ws = Workspace(Settings(home=server.home, port=server.port))
    try:
        me = ws.identities.by_name[("user", "admin")]
        assert secrets.read_secret(ws, me, scope, "api-key").get_secret_value() == value
    finally:
        ws.close()
