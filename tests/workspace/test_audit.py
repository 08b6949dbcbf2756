"""The audit log, read as the table `system.access.audit` through the SQL statements API."""

from __future__ import annotations

import json

import httpx
import pytest

from tests.harness import ServerProcess
from tests.workspace.data_helpers import (
    grant_warehouse,
    make_warehouse,
    run_sql,
    service_principal,
    unique_name,
)


@pytest.fixture(scope="module")
def warehouse(server: ServerProcess) -> str:
    with server.client() as admin:
        return make_warehouse(admin, unique_name("audit-wh"))


def test_changes_are_audited_and_readable_by_admins_as_a_table(admin: httpx.Client, warehouse: str) -> None:
    scope = unique_name("audited")
    admin.post(
        "/api/2.0/secrets/scopes/create", json={"scope": scope}, headers={"User-Agent": "audit-test/1"}
    )
    admin.post("/api/2.0/secrets/put", json={"scope": scope, "key": "k", "string_value": "hush-1234"})
    admin.post(
        "/api/2.0/secrets/acls/put", json={"scope": scope, "principal": "admins", "permission": "READ"}
    )
    response = run_sql(
        admin,
        warehouse,
        """
        SELECT action_name, user_identity.email AS who, request_params['key'] AS key, source_ip_address,
               user_agent, service_name, response.status_code AS status, event_time
        FROM system.access.audit
        WHERE request_params['scope'] = :scope
        ORDER BY event_time, action_name""",
        parameters=[{"name": "scope", "value": scope}],
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["status"]["state"] == "SUCCEEDED", body
    rows = body["result"]["data_array"]
    assert [r[0] for r in rows] == ["createScope", "putSecret", "putAcl"]
    create, put, _ = rows
    assert create[1] == "admin" and create[3] == "127.0.0.1" and create[4] == "audit-test/1"
    assert put[2] == "k" and put[5] == "secrets" and put[6] == "200"
    assert create[7].endswith("Z")  # event_time is a UTC timestamp
    assert "hush-1234" not in response.text


def test_audit_columns_are_databricks_like(admin: httpx.Client, warehouse: str) -> None:
    body = run_sql(admin, warehouse, "SELECT * FROM system.access.audit LIMIT 1").json()
    columns = {c["name"]: c["type_name"] for c in body["manifest"]["schema"]["columns"]}
    assert columns["event_time"] == "TIMESTAMP" and columns["event_date"] == "DATE"
    assert columns["user_identity"] == "STRUCT" and columns["request_params"] == "MAP"
    assert columns["response"] == "STRUCT"
    for name in ("event_id", "action_name", "service_name", "source_ip_address", "user_agent"):
        assert columns[name] == "STRING"
    row = dict(zip(columns, body["result"]["data_array"][0], strict=True))
    assert json.loads(row["user_identity"])["email"]  # complex values are JSON text, as Databricks sends them


def test_grants_and_tokens_are_in_the_log(admin: httpx.Client, warehouse: str) -> None:
    token_id = admin.post("/api/2.0/token/create", json={"comment": "audited"}).json()["token_info"][
        "token_id"
    ]
    admin.post("/api/2.0/token/delete", json={"token_id": token_id})
    rows = run_sql(
        admin,
        warehouse,
        "SELECT action_name FROM system.access.audit "
        "WHERE request_params['full_name_arg'] = :t ORDER BY event_time",
        parameters=[{"name": "t", "value": token_id}],
    ).json()["result"]["data_array"]
    assert rows == [["generateToken"], ["revokeToken"]]


def test_non_admins_are_refused(server: ServerProcess, admin: httpx.Client, warehouse: str) -> None:
    outsider = service_principal(admin, server.url)
    grant_warehouse(admin, warehouse, outsider.application_id)
    response = run_sql(outsider.client, warehouse, "SELECT count(*) FROM system.access.audit")
    assert response.status_code == 403
    assert "system.access.audit" in response.json()["message"] and "admins" in response.json()["message"]
