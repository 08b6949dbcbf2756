"""Secret scopes over HTTP: ACL levels, encryption at rest, and the one internal read path."""

from __future__ import annotations

import sqlite3
import uuid

import httpx
import pytest

from agentdeploy.errors import PermissionDenied
from agentdeploy.settings import Settings
from agentdeploy.workspace import secrets
from agentdeploy.workspace.context import Workspace
from tests.harness import ServerProcess
from tests.workspace.data_helpers import Principal, service_principal, unique_name

S = "/api/2.0/secrets"


def _scope(admin: httpx.Client) -> str:
    scope = unique_name("scope")
    response = admin.post(f"{S}/scopes/create", json={"scope": scope})
    assert response.status_code == 200, response.text
    return scope


@pytest.fixture(scope="module")
def member(server: ServerProcess) -> Principal:
    with server.client() as admin:
        return service_principal(admin, server.url)


def test_scope_lifecycle_and_values_never_listed(admin: httpx.Client) -> None:
    scope = _scope(admin)
    value = f"sk-{uuid.uuid4().hex}"
    assert (
        admin.post(f"{S}/put", json={"scope": scope, "key": "api-key", "string_value": value}).status_code
        == 200
    )
    assert (
        admin.post(f"{S}/put", json={"scope": scope, "key": "blob", "bytes_value": "AAEC"}).status_code == 200
    )
    listed = admin.get(f"{S}/list", params={"scope": scope})
    assert [s["key"] for s in listed.json()["secrets"]] == ["api-key", "blob"]
    assert all(s["last_updated_timestamp"] > 1_600_000_000_000 for s in listed.json()["secrets"])
    assert value not in listed.text
    assert scope in [s["name"] for s in admin.get(f"{S}/scopes/list").json()["scopes"]]
    refused = admin.get(f"{S}/get", params={"scope": scope, "key": "api-key"})
    assert refused.status_code == 403 and value not in refused.text
    assert admin.post(f"{S}/delete", json={"scope": scope, "key": "blob"}).status_code == 200
    assert admin.post(f"{S}/delete", json={"scope": scope, "key": "blob"}).status_code == 404
    assert admin.post(f"{S}/scopes/create", json={"scope": scope}).status_code == 409
    assert admin.post(f"{S}/scopes/delete", json={"scope": scope}).status_code == 200
    assert admin.get(f"{S}/list", params={"scope": scope}).status_code == 404


def test_acl_levels_read_write_manage(admin: httpx.Client, member: Principal) -> None:
    scope = _scope(admin)
    admin.post(f"{S}/put", json={"scope": scope, "key": "k", "string_value": "v"})
    put = {"scope": scope, "key": "k2", "string_value": "v2"}
    # No ACL: nothing, and the scope is not even listed.
    denied = member.client.get(f"{S}/list", params={"scope": scope})
    assert denied.status_code == 403 and f"READ on secret scope '{scope}'" in denied.json()["message"]
    assert scope not in str(member.client.get(f"{S}/scopes/list").json())
    # READ: list keys, but not write.
    assert (
        admin.post(
            f"{S}/acls/put", json={"scope": scope, "principal": member.application_id, "permission": "READ"}
        ).status_code
        == 200
    )
    assert member.client.get(f"{S}/list", params={"scope": scope}).status_code == 200
    assert scope in str(member.client.get(f"{S}/scopes/list").json())
    denied = member.client.post(f"{S}/put", json=put)
    assert denied.status_code == 403 and "WRITE" in denied.json()["message"]
    # WRITE replaces READ (one level per principal); still no ACL management.
    admin.post(
        f"{S}/acls/put", json={"scope": scope, "principal": member.application_id, "permission": "WRITE"}
    )
    assert member.client.post(f"{S}/put", json=put).status_code == 200
    assert member.client.get(f"{S}/acls/list", params={"scope": scope}).status_code == 403
    acl = admin.get(f"{S}/acls/get", params={"scope": scope, "principal": member.application_id}).json()
    assert acl == {"principal": member.application_id, "permission": "WRITE"}
    items = admin.get(f"{S}/acls/list", params={"scope": scope}).json()["items"]
    assert {"principal": "admin", "permission": "MANAGE"} in items  # the creator owns it
    assert {"principal": member.application_id, "permission": "WRITE"} in items and len(items) == 2
    # Removing the ACL takes effect on the next request.
    assert (
        admin.post(f"{S}/acls/delete", json={"scope": scope, "principal": member.application_id}).status_code
        == 200
    )
    assert member.client.get(f"{S}/list", params={"scope": scope}).status_code == 403


def test_creator_of_a_scope_manages_it(admin: httpx.Client, member: Principal) -> None:
    scope = unique_name("own")
    assert member.client.post(f"{S}/scopes/create", json={"scope": scope}).status_code == 200
    assert (
        member.client.post(
            f"{S}/acls/put", json={"scope": scope, "principal": "admins", "permission": "READ"}
        ).status_code
        == 200
    )
    assert member.client.post(f"{S}/scopes/delete", json={"scope": scope}).status_code == 200


def test_bad_input_is_400_naming_the_field(admin: httpx.Client) -> None:
    scope = _scope(admin)
    cases = [
        (f"{S}/scopes/create", {"scope": "has space"}, "scope"),
        (f"{S}/put", {"scope": scope, "key": "../x", "string_value": "v"}, "key"),
        (f"{S}/put", {"scope": scope, "key": "k"}, "string_value"),
        (f"{S}/put", {"scope": scope, "key": "k", "bytes_value": "***"}, "bytes_value"),
        (f"{S}/acls/put", {"scope": scope, "principal": "admins", "permission": "OWN"}, "permission"),
        (f"{S}/put", {"scope": scope, "key": "k", "string_value": "x" * (128 * 1024 + 1)}, "limit"),
    ]
    for path, body, field in cases:
        response = admin.post(path, json=body)
        assert response.status_code == 400, (path, body, response.text)
        assert field in response.json()["message"], response.text
    response = admin.post(
        f"{S}/acls/put", json={"scope": scope, "principal": "nobody-here", "permission": "READ"}
    )
    assert response.status_code == 404 and "principal" in response.json()["message"]


def test_read_secret_needs_read_and_is_audited(
    server: ServerProcess, admin: httpx.Client, member: Principal
) -> None:
    scope = _scope(admin)
    value = f"deploy-{uuid.uuid4().hex}"
    admin.post(f"{S}/put", json={"scope": scope, "key": "token", "string_value": value})
    admin.post(f"{S}/put", json={"scope": scope, "key": "raw", "bytes_value": "AAEC"})
    # The deploy path runs inside the server; here a second Workspace on the same home stands in.
    ws = Workspace(Settings(home=server.home, port=server.port))
    try:
        reader = ws.identities.by_application_id[member.application_id]
        with pytest.raises(PermissionDenied, match=f"READ on secret scope '{scope}'"):
            secrets.read_secret(ws, reader, scope, "token")
        admin.post(
            f"{S}/acls/put", json={"scope": scope, "principal": member.application_id, "permission": "READ"}
        )
        ws.refresh()
        secret = secrets.read_secret(ws, reader, scope, "token")
        assert secret.get_secret_value() == value and value not in repr(secret)
        assert secrets.read_secret(ws, reader, scope, "raw").get_secret_value() == "AAEC"
    finally:
        ws.close()
    db = sqlite3.connect(server.home / "workspace.db")
    try:
        rows = db.execute(
            "SELECT actor_name, request_params FROM audit_events WHERE action_name = 'getSecret' "
            "AND securable_name = ?",
            (scope,),
        ).fetchall()
    finally:
        db.close()
    assert len(rows) == 2 and "secret read by the deploy path" in rows[0][1] and value not in str(rows)


def test_no_secret_value_in_log_responses_or_database(server: ServerProcess, admin: httpx.Client) -> None:
    scope = _scope(admin)
    value = f"never-seen-{uuid.uuid4().hex}"
    responses = [
        admin.post(f"{S}/put", json={"scope": scope, "key": "k", "string_value": value}),
        admin.post(
            f"{S}/put", json={"scope": scope, "key": "k2", "string_value": value, "bytes_value": "AA"}
        ),
        admin.post(f"{S}/put", json={"scope": scope, "key": "bad key", "string_value": value}),
        admin.post(f"{S}/put", json={"scope": scope, "key": "k3", "string_value": {"nested": value}}),
        admin.get(f"{S}/list", params={"scope": scope}),
        admin.get(f"{S}/get", params={"scope": scope, "key": "k"}),
        admin.get(f"{S}/acls/list", params={"scope": scope}),
        admin.get(f"{S}/scopes/list"),
    ]
    warehouse = admin.post("/api/2.0/sql/warehouses", json={"name": unique_name("wh")}).json()["id"]
    responses.append(
        admin.post(
            "/api/2.0/sql/statements",
            json={"warehouse_id": warehouse, "statement": "SELECT * FROM system.access.audit"},
        )
    )
    assert responses[-1].json()["status"]["state"] == "SUCCEEDED"
    for response in responses:
        assert value not in response.text, response.request.url
    for path in server.home.rglob("*"):  # database, WAL, logs, key files, Delta tables
        if path.is_file():
            assert value.encode() not in path.read_bytes(), path
