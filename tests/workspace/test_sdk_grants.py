"""The official databricks-sdk as the client of the catalog, grants, permissions and warehouses."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from databricks.sdk import WorkspaceClient
from databricks.sdk.errors import InvalidParameterValue, NotFound, PermissionDenied
from databricks.sdk.service.catalog import PermissionsChange, Privilege, SecurableType
from databricks.sdk.service.iam import AccessControlRequest, PermissionLevel
from databricks.sdk.service.sql import State, WarehouseAccessControlRequest, WarehousePermissionLevel

from tests.harness import ServerProcess
from tests.workspace.identities import create_secret, create_service_principal, pat_for

UID = uuid.uuid4().hex[:6]
CAT = f"sdk{UID}"


@pytest.fixture(scope="module")
def w(server: ServerProcess) -> WorkspaceClient:
    return WorkspaceClient(host=server.url, token=server.admin_token)


@pytest.fixture(scope="module")
def agent(server: ServerProcess) -> Iterator[dict[str, Any]]:
    """A service principal with a PAT and an OAuth secret (for M2M), and no grants."""
    with server.client() as admin:
        sp = create_service_principal(admin, f"sdk-agent-{UID}")
        sp["pat"] = pat_for(admin, sp["applicationId"])
        sp["secret"] = create_secret(admin, sp["id"])["secret"]
    yield sp


@pytest.fixture(scope="module")
def catalog(w: WorkspaceClient) -> str:
    w.catalogs.create(name=CAT, comment="made by the SDK")
    w.schemas.create(name="docs", catalog_name=CAT)
    w.registered_models.create(catalog_name=CAT, schema_name="docs", name="bot")
    w.api_client.do(
        "POST",
        "/api/2.1/unity-catalog/tables",
        body={
            "catalog_name": CAT,
            "schema_name": "docs",
            "name": "faq",
            "columns": [{"name": "question", "type_name": "STRING", "type_text": "string", "position": 0}],
        },
    )
    return CAT


def test_catalog_objects_read_back_through_the_sdk(w: WorkspaceClient, catalog: str) -> None:
    assert w.catalogs.get(catalog).comment == "made by the SDK"
    assert [s.full_name for s in w.schemas.list(catalog_name=catalog)] == [f"{catalog}.docs"]
    model = w.registered_models.get(f"{catalog}.docs.bot")
    assert model.catalog_name == catalog and model.owner == "admin"
    table = w.tables.get(f"{catalog}.docs.faq")
    assert table.columns is not None and table.columns[0].name == "question"
    assert [t.name for t in w.tables.list(catalog_name=catalog, schema_name="docs")] == ["faq"]
    with pytest.raises(NotFound):
        w.tables.get(f"{catalog}.docs.nope")


def test_grants_update_get_and_get_effective(
    server: ServerProcess, w: WorkspaceClient, catalog: str, agent: dict[str, Any]
) -> None:
    principal = agent["applicationId"]
    as_agent = WorkspaceClient(host=server.url, token=agent["pat"])
    with pytest.raises(PermissionDenied) as denied:
        as_agent.tables.get(f"{catalog}.docs.faq")
    assert f"USE_CATALOG on catalog '{catalog}'" in str(denied.value)

    w.grants.update(
        "catalog",
        catalog,
        changes=[PermissionsChange(principal=principal, add=[Privilege.USE_CATALOG, Privilege.USE_SCHEMA])],
    )
    updated = w.grants.update(
        "table",
        f"{catalog}.docs.faq",
        changes=[PermissionsChange(principal=principal, add=[Privilege.SELECT, Privilege.MODIFY])],
    )
    assert updated.privilege_assignments is not None
    assert {a.principal: set(a.privileges or []) for a in updated.privilege_assignments}[principal] == {
        Privilege.SELECT,
        Privilege.MODIFY,
    }

    assert as_agent.tables.get(f"{catalog}.docs.faq").full_name == f"{catalog}.docs.faq"

    direct = w.grants.get("table", f"{catalog}.docs.faq", principal=principal)
    assert [
        (a.principal, sorted(p.value for p in a.privileges or [])) for a in direct.privilege_assignments or []
    ] == [(principal, ["MODIFY", "SELECT"])]

    effective = w.grants.get_effective("table", f"{catalog}.docs.faq", principal=principal)
    privileges = [p for a in effective.privilege_assignments or [] for p in a.privileges or []]
    inherited = {(p.privilege, p.inherited_from_type, p.inherited_from_name) for p in privileges}
    assert (Privilege.USE_SCHEMA, SecurableType.CATALOG, catalog) in inherited
    assert (Privilege.SELECT, None, None) in inherited

    w.grants.update(
        "table",
        f"{catalog}.docs.faq",
        changes=[PermissionsChange(principal=principal, remove=[Privilege.SELECT, Privilege.MODIFY])],
    )
    with pytest.raises(PermissionDenied) as denied:
        as_agent.tables.get(f"{catalog}.docs.faq")
    assert str(denied.value).startswith(
        f"Service principal '{agent['displayName']}' does not have SELECT on table '{catalog}.docs.faq'."
    )


def test_oauth_m2m_principal_sees_its_effective_grants(
    server: ServerProcess, w: WorkspaceClient, catalog: str, agent: dict[str, Any]
) -> None:
    w.grants.update(
        "registered_model",
        f"{catalog}.docs.bot",
        changes=[PermissionsChange(principal=agent["applicationId"], add=[Privilege.EXECUTE])],
    )
    m2m = WorkspaceClient(
        host=server.url,
        client_id=agent["applicationId"],
        client_secret=agent["secret"],
        auth_type="oauth-m2m",
    )
    mine = m2m.grants.get_effective("registered_model", f"{catalog}.docs.bot")
    assert [a.principal for a in mine.privilege_assignments or []] == [agent["applicationId"]], (
        "a principal that may not manage the model sees only its own grants"
    )
    assert m2m.registered_models.get(f"{catalog}.docs.bot").full_name == f"{catalog}.docs.bot"
    with pytest.raises(PermissionDenied):  # only an owner/MANAGE may change grants
        m2m.grants.update(
            "registered_model",
            f"{catalog}.docs.bot",
            changes=[PermissionsChange(principal=agent["applicationId"], add=[Privilege.MANAGE])],
        )


def test_bad_grant_input_is_invalid_parameter(w: WorkspaceClient, catalog: str) -> None:
    with pytest.raises(InvalidParameterValue) as bad:
        w.grants.update(
            "table",
            f"{catalog}.docs.faq",
            changes=[PermissionsChange(principal="admins", add=[Privilege.USE_CATALOG])],
        )
    assert "USE_CATALOG does not apply to a table" in str(bad.value)
    with pytest.raises(InvalidParameterValue):
        w.grants.get("volume", f"{catalog}.docs.faq")


def test_warehouses_create_list_and_permissions_update(
    server: ServerProcess, w: WorkspaceClient, agent: dict[str, Any]
) -> None:
    created = w.warehouses.create_and_wait(
        name=f"sdk-{UID}", cluster_size="2X-Small", max_num_clusters=1, auto_stop_mins=10
    )
    assert created.state == State.RUNNING and created.id
    assert created.id in [wh.id for wh in w.warehouses.list()]

    as_agent = WorkspaceClient(host=server.url, token=agent["pat"])
    assert created.id not in [wh.id for wh in as_agent.warehouses.list()]
    acl = w.permissions.update(
        "warehouses",
        created.id,
        access_control_list=[
            AccessControlRequest(
                service_principal_name=agent["applicationId"], permission_level=PermissionLevel.CAN_USE
            )
        ],
    )
    levels = {
        e.service_principal_name: [p.permission_level for p in e.all_permissions or []]
        for e in acl.access_control_list or []
        if e.service_principal_name
    }
    assert levels == {agent["applicationId"]: [PermissionLevel.CAN_USE]}
    assert created.id in [wh.id for wh in as_agent.warehouses.list()]
    assert as_agent.warehouses.get(created.id).name == f"sdk-{UID}"

    # The warehouses API's own permission methods speak the same endpoint.
    w.warehouses.set_permissions(
        created.id,
        access_control_list=[
            WarehouseAccessControlRequest(
                service_principal_name=agent["applicationId"],
                permission_level=WarehousePermissionLevel.CAN_VIEW,
            )
        ],
    )
    mine = w.warehouses.get_permissions(created.id)
    assert any(
        e.service_principal_name == agent["applicationId"]
        and [p.permission_level.value for p in e.all_permissions or []] == ["CAN_VIEW"]
        for e in mine.access_control_list or []
    )
    with pytest.raises(PermissionDenied) as denied:
        as_agent.warehouses.start(created.id)
    assert "CAN_USE on sql warehouse" in str(denied.value)
    w.warehouses.delete(created.id)
    with httpx.Client(
        base_url=server.url, headers={"Authorization": f"Bearer {server.admin_token}"}
    ) as admin:
        assert admin.get(f"/api/2.0/sql/warehouses/{created.id}").status_code == 404
