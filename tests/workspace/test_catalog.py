"""The catalog over HTTP: catalogs, schemas, tables, functions and registered models, who may
create and see them, and the `agentdeploy catalogs/schemas/grant/revoke/permissions` commands."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.harness import ServerProcess
from tests.workspace.identities import create_service_principal, pat_for

UC = "/api/2.1/unity-catalog"
UID = uuid.uuid4().hex[:6]


def _ok(response: httpx.Response) -> Any:
    assert response.status_code == 200, f"{response.request.method} {response.request.url}: {response.text}"
    return response.json()


@pytest.fixture(scope="module")
def admin(server: ServerProcess) -> Iterator[httpx.Client]:
    with server.client() as client:
        yield client


@pytest.fixture(scope="module")
def member(server: ServerProcess, admin: httpx.Client) -> Iterator[tuple[str, httpx.Client]]:
    """A service principal with no grants yet, and a client acting as it."""
    sp = create_service_principal(admin, f"cat-member-{UID}")
    with server.client(pat_for(admin, sp["applicationId"])) as client:
        yield sp["applicationId"], client


def grant(admin: httpx.Client, securable_type: str, name: str, principal: str, *privileges: str) -> None:
    _ok(
        admin.patch(
            f"{UC}/permissions/{securable_type}/{name}",
            json={"changes": [{"principal": principal, "add": list(privileges)}]},
        )
    )


def test_catalog_schema_model_lifecycle_and_shapes(admin: httpx.Client) -> None:
    cat = f"life{UID}"
    created = _ok(
        admin.post(f"{UC}/catalogs", json={"name": cat, "comment": "demo", "properties": {"a": "b"}})
    )
    assert created["full_name"] == cat and created["owner"] == "admin" and created["comment"] == "demo"
    assert created["properties"] == {"a": "b"} and created["securable_type"] == "CATALOG"
    assert cat in [c["name"] for c in _ok(admin.get(f"{UC}/catalogs"))["catalogs"]]
    schema = _ok(admin.post(f"{UC}/schemas", json={"catalog_name": cat, "name": "Docs"}))
    assert schema["full_name"] == f"{cat}.docs", "Unity Catalog names are case-insensitive, stored lower-case"
    assert _ok(admin.get(f"{UC}/schemas/{cat}.DOCS"))["full_name"] == f"{cat}.docs"
    model = _ok(admin.post(f"{UC}/models", json={"catalog_name": cat, "schema_name": "docs", "name": "bot"}))
    assert model["full_name"] == f"{cat}.docs.bot" and model["catalog_name"] == cat
    listed = _ok(admin.get(f"{UC}/models", params={"catalog_name": cat, "schema_name": "docs"}))
    assert [m["full_name"] for m in listed["registered_models"]] == [f"{cat}.docs.bot"]
    function = _ok(
        admin.post(
            f"{UC}/functions",
            json={
                "function_info": {
                    "catalog_name": cat,
                    "schema_name": "docs",
                    "name": "lookup",
                    "data_type": "STRING",
                    "routine_body": "SQL",
                    "routine_definition": "'x'",
                }
            },
        )
    )
    assert function["full_name"] == f"{cat}.docs.lookup" and function["routine_definition"] == "'x'"
    table = _ok(
        admin.post(
            f"{UC}/tables",
            json={
                "catalog_name": cat,
                "schema_name": "docs",
                "name": "faq",
                "storage_location": "/data/faq",
                "columns": [{"name": "q", "type_name": "STRING"}],
            },
        )
    )
    assert (
        table["columns"] == [{"name": "q", "type_name": "STRING"}]
        and table["storage_location"] == "/data/faq"
    )
    assert _ok(admin.get(f"{UC}/tables/{cat}.docs.faq/exists")) == {"table_exists": True}
    assert (
        _ok(admin.get(f"{UC}/tables", params={"catalog_name": cat, "schema_name": "docs"}))["tables"][0][
            "full_name"
        ]
        == f"{cat}.docs.faq"
    )

    # 409 on a duplicate, 404 naming a missing parent.
    again = admin.post(f"{UC}/models", json={"catalog_name": cat, "schema_name": "docs", "name": "bot"})
    assert again.status_code == 409 and "already exists" in again.json()["message"]
    orphan = admin.post(f"{UC}/models", json={"catalog_name": cat, "schema_name": "nope", "name": "bot"})
    assert orphan.status_code == 404 and orphan.json()["message"] == f"Schema '{cat}.nope' does not exist."

    # A non-empty catalog is not deleted without force; with force, everything below goes.
    refused = admin.delete(f"{UC}/catalogs/{cat}")
    assert refused.status_code == 400 and "force" in refused.json()["message"]
    _ok(admin.delete(f"{UC}/catalogs/{cat}", params={"force": "true"}))
    for path in (
        f"catalogs/{cat}",
        f"schemas/{cat}.docs",
        f"models/{cat}.docs.bot",
        f"tables/{cat}.docs.faq",
    ):
        assert admin.get(f"{UC}/{path}").status_code == 404, path
    # The name is free again, and no grant survived the deletion.
    _ok(admin.post(f"{UC}/catalogs", json={"name": cat}))
    assert _ok(admin.get(f"{UC}/permissions/catalog/{cat}")) == {"privilege_assignments": []}


def test_creating_below_a_catalog_needs_use_and_create(
    admin: httpx.Client, member: tuple[str, httpx.Client]
) -> None:
    principal, client = member
    cat = f"crt{UID}"
    _ok(admin.post(f"{UC}/catalogs", json={"name": cat}))
    denied = client.post(f"{UC}/catalogs", json={"name": f"mine{UID}"})
    assert denied.status_code == 403 and "CREATE_CATALOG on the metastore" in denied.json()["message"]

    denied = client.post(f"{UC}/schemas", json={"catalog_name": cat, "name": "s"})
    assert denied.status_code == 403
    assert denied.json()["message"].endswith(
        f"USE_CATALOG on catalog '{cat}', CREATE_SCHEMA on catalog '{cat}'."
    )
    grant(admin, "catalog", cat, principal, "USE_CATALOG", "CREATE_SCHEMA")
    schema = _ok(client.post(f"{UC}/schemas", json={"catalog_name": cat, "name": "s"}))
    assert schema["owner"] == principal, "the creator owns what it creates"

    # The new owner needs no grant to create in its own schema (USE_SCHEMA and CREATE_MODEL are its own).
    _ok(client.post(f"{UC}/models", json={"catalog_name": cat, "schema_name": "s", "name": "m"}))
    # A model in the admin's schema needs CREATE_MODEL there.
    _ok(admin.post(f"{UC}/schemas", json={"catalog_name": cat, "name": "shared"}))
    denied = client.post(f"{UC}/models", json={"catalog_name": cat, "schema_name": "shared", "name": "m"})
    assert denied.status_code == 403
    assert denied.json()["message"].endswith(
        f"USE_SCHEMA on schema '{cat}.shared', CREATE_MODEL on schema '{cat}.shared'."
    )


def test_listings_hold_only_what_the_caller_may_use(
    admin: httpx.Client, member: tuple[str, httpx.Client]
) -> None:
    principal, client = member
    visible, hidden = f"vis{UID}", f"hid{UID}"
    for cat in (visible, hidden):
        _ok(admin.post(f"{UC}/catalogs", json={"name": cat}))
        _ok(admin.post(f"{UC}/schemas", json={"catalog_name": cat, "name": "s"}))
        for t in ("a", "b"):
            _ok(admin.post(f"{UC}/tables", json={"catalog_name": cat, "schema_name": "s", "name": t}))
    grant(admin, "catalog", visible, principal, "USE_CATALOG", "USE_SCHEMA")
    grant(admin, "table", f"{visible}.s.a", principal, "SELECT")
    names = [c["name"] for c in _ok(client.get(f"{UC}/catalogs"))["catalogs"]]
    assert visible in names and hidden not in names
    tables = _ok(client.get(f"{UC}/tables", params={"catalog_name": visible, "schema_name": "s"}))["tables"]
    assert [t["full_name"] for t in tables] == [f"{visible}.s.a"]
    assert _ok(client.get(f"{UC}/tables/{visible}.s.b/exists")) == {"table_exists": False}
    assert client.get(f"{UC}/tables/{hidden}.s.a").status_code == 403


def test_owner_transfer_and_update(admin: httpx.Client, member: tuple[str, httpx.Client]) -> None:
    principal, client = member
    cat = f"own{UID}"
    _ok(admin.post(f"{UC}/catalogs", json={"name": cat}))
    assert client.patch(f"{UC}/catalogs/{cat}", json={"comment": "mine"}).status_code == 403
    updated = _ok(admin.patch(f"{UC}/catalogs/{cat}", json={"owner": principal, "comment": "handed over"}))
    assert updated["owner"] == principal and updated["comment"] == "handed over"
    assert _ok(client.patch(f"{UC}/catalogs/{cat}", json={"comment": "mine"}))["comment"] == "mine"
    bad = admin.patch(f"{UC}/catalogs/{cat}", json={"owner": f"ghost-{UID}"})
    assert bad.status_code == 404 and "'owner'" in bad.json()["message"]
    bad = admin.patch(f"{UC}/catalogs/{cat}", json={"new_name": "other"})
    assert bad.status_code == 400 and "'new_name'" in bad.json()["message"]


@pytest.mark.parametrize(
    ("method", "path", "body", "field"),
    [
        ("post", f"{UC}/catalogs", {"name": "a.b"}, "name"),
        ("post", f"{UC}/catalogs", {"name": ""}, "name"),
        ("post", f"{UC}/schemas", {"catalog_name": "x/y", "name": "s"}, "catalog_name"),
        ("post", f"{UC}/models", {"catalog_name": "c", "schema_name": "s", "name": "a b"}, "name"),
        ("get", f"{UC}/tables/only.two", None, "full_name"),
        ("get", f"{UC}/schemas", None, "catalog_name"),
        ("get", f"{UC}/tables", None, "catalog_name"),
        (
            "post",
            "/api/2.0/agentdeploy/securables",
            {"securable_type": "cluster", "name": "x"},
            "securable_type",
        ),
    ],
)
def test_bad_input_is_a_400_naming_the_field(
    admin: httpx.Client, method: str, path: str, body: Any, field: str
) -> None:
    response = admin.request(method.upper(), path, json=body)
    assert response.status_code == 400, response.text
    assert f"'{field}'" in response.json()["message"]


class _Result:
    def __init__(self, exit_code: int, stdout: str, stderr: str) -> None:
        self.returncode, self.stdout, self.stderr = exit_code, stdout, stderr


def _cli(server: ServerProcess, token: str, *args: str) -> _Result:
    """The real `agentdeploy` command, run in-process (importing it once keeps this fast)."""
    from typer.testing import CliRunner

    from agentdeploy.cli import app

    env = {"AGENTDEPLOY_HOST": server.url, "AGENTDEPLOY_TOKEN": token, "COLUMNS": "200"}
    result = CliRunner().invoke(app, list(args), env=env)
    return _Result(result.exit_code, result.stdout, result.stderr)


def test_cli_catalogs_schemas_grant_revoke_and_show(
    server: ServerProcess, admin: httpx.Client, member: tuple[str, httpx.Client]
) -> None:
    principal, client = member
    cat = f"cli{UID}"
    token = server.admin_token
    assert _cli(server, token, "catalogs", "create", cat).returncode == 0
    assert _cli(server, token, "schemas", "create", f"{cat}.docs").returncode == 0
    _ok(admin.post(f"{UC}/tables", json={"catalog_name": cat, "schema_name": "docs", "name": "faq"}))
    listed = _cli(server, token, "schemas", "list", cat)
    assert f"{cat}.docs" in listed.stdout
    granted = _cli(server, token, "grant", "USE_CATALOG,USE_SCHEMA", "on", "catalog", cat, "to", principal)
    assert granted.returncode == 0, granted.stderr
    assert (
        _cli(server, token, "grant", "SELECT", "on", "table", f"{cat}.docs.faq", "to", principal).returncode
        == 0
    )
    assert client.get(f"{UC}/tables/{cat}.docs.faq").status_code == 200
    shown = _cli(server, token, "permissions", "show", "table", f"{cat}.docs.faq")
    assert "SELECT" in shown.stdout and f"catalog {cat}" in shown.stdout, shown.stdout
    revoked = _cli(server, token, "revoke", "SELECT", "on", "table", f"{cat}.docs.faq", "from", principal)
    assert revoked.returncode == 0, revoked.stderr
    assert client.get(f"{UC}/tables/{cat}.docs.faq").status_code == 403
    wrong = _cli(server, token, "grant", "SELEKT", "on", "table", f"{cat}.docs.faq", "to", principal)
    assert wrong.returncode == 1 and "unknown privilege 'SELEKT'" in wrong.stderr
    refused = _cli(server, token, "catalogs", "delete", cat)
    assert refused.returncode == 1 and "force" in refused.stderr
    assert _cli(server, token, "catalogs", "delete", cat, "--force").returncode == 0
