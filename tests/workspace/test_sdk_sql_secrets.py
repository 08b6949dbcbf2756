"""The official databricks-sdk as the client of SQL statements and secret scopes."""

from __future__ import annotations

import uuid

import pyarrow as pa
import pytest
from databricks.sdk import WorkspaceClient
from databricks.sdk.errors import BadRequest, NotFound, PermissionDenied
from databricks.sdk.service import catalog as uc
from databricks.sdk.service import iam
from databricks.sdk.service.sql import Disposition, Format, StatementParameterListItem, StatementState
from databricks.sdk.service.workspace import AclPermission

from tests.harness import ServerProcess
from tests.workspace.data_helpers import unique_name, upload_table


@pytest.fixture(scope="module")
def w(server: ServerProcess) -> WorkspaceClient:
    return WorkspaceClient(host=server.url, token=server.admin_token, auth_type="pat")


def test_execute_statement_as_a_service_principal_logged_in_with_oauth_m2m(
    server: ServerProcess, w: WorkspaceClient
) -> None:
    catalog = unique_name("sdk")
    w.catalogs.create(name=catalog)
    w.schemas.create(name="docs", catalog_name=catalog)
    table = f"{catalog}.docs.faq"
    with server.client() as admin:
        data = pa.table({"question": ["What is agentdeploy?", "How do I deploy?"], "votes": [3, 5]})
        assert upload_table(admin, table, data).status_code == 200
    warehouse = w.warehouses.create(name=unique_name("wh")).response

    sp = w.service_principals.create(display_name=unique_name("sdk-agent"))
    secret = w.service_principal_secrets_proxy.create(sp.id)
    agent = WorkspaceClient(host=server.url, client_id=sp.application_id, client_secret=secret.secret)

    def run() -> object:
        return agent.statement_execution.execute_statement(
            statement="SELECT question, votes FROM docs.faq WHERE votes > :min ORDER BY votes DESC",
            warehouse_id=warehouse.id,
            catalog=catalog,
            wait_timeout="30s",
            disposition=Disposition.INLINE,
            format=Format.JSON_ARRAY,
            parameters=[StatementParameterListItem(name="min", value="1", type="INT")],
        )

    with pytest.raises(PermissionDenied, match="CAN_USE"):
        run()
    w.permissions.update(
        "warehouses",
        warehouse.id,
        access_control_list=[
            iam.AccessControlRequest(
                service_principal_name=sp.application_id, permission_level=iam.PermissionLevel.CAN_USE
            )
        ],
    )
    with pytest.raises(PermissionDenied, match=f"SELECT on table '{table}'"):
        run()
    w.grants.update(
        "catalog",
        catalog,
        changes=[
            uc.PermissionsChange(
                principal=sp.application_id,
                add=[uc.Privilege.USE_CATALOG, uc.Privilege.USE_SCHEMA, uc.Privilege.SELECT],
            )
        ],
    )

    response = run()
    assert response.status.state == StatementState.SUCCEEDED
    assert [c.name for c in response.manifest.schema.columns] == ["question", "votes"]
    assert response.manifest.schema.columns[1].type_name.value == "LONG"
    assert response.result.data_array == [["How do I deploy?", "5"], ["What is agentdeploy?", "3"]]
    again = agent.statement_execution.get_statement(response.statement_id)
    assert again.result.data_array == response.result.data_array

    with pytest.raises(BadRequest, match="DROP"):
        agent.statement_execution.execute_statement(
            statement=f"DROP TABLE {table}", warehouse_id=warehouse.id
        )
    with pytest.raises(PermissionDenied, match="admins"):
        agent.statement_execution.execute_statement(
            statement="SELECT * FROM system.access.audit", warehouse_id=warehouse.id
        )


def test_secrets_create_put_list_acl_with_the_sdk(server: ServerProcess, w: WorkspaceClient) -> None:
    scope = unique_name("sdk-scope")
    value = f"sdk-secret-{uuid.uuid4().hex}"
    w.secrets.create_scope(scope=scope)
    w.secrets.put_secret(scope=scope, key="openai", string_value=value)
    w.secrets.put_secret(scope=scope, key="cert", bytes_value="AAECAw==")
    listed = list(w.secrets.list_secrets(scope=scope))
    assert sorted(s.key for s in listed) == ["cert", "openai"]
    assert value not in str([s.as_dict() for s in listed])  # metadata only
    assert all(s.last_updated_timestamp for s in listed)
    assert scope in [s.name for s in w.secrets.list_scopes()]

    sp = w.service_principals.create(display_name=unique_name("sdk-reader"))
    w.secrets.put_acl(scope=scope, principal=sp.application_id, permission=AclPermission.READ)
    acl = w.secrets.get_acl(scope=scope, principal=sp.application_id)
    assert acl.permission == AclPermission.READ
    assert {(a.principal, a.permission) for a in w.secrets.list_acls(scope=scope)} == {
        ("admin", AclPermission.MANAGE),
        (sp.application_id, AclPermission.READ),
    }

    token = w.token_management.create_obo_token(application_id=sp.application_id).token_value
    reader = WorkspaceClient(host=server.url, token=token, auth_type="pat")
    assert sorted(s.key for s in reader.secrets.list_secrets(scope=scope)) == ["cert", "openai"]
    with pytest.raises(PermissionDenied, match="WRITE"):
        reader.secrets.put_secret(scope=scope, key="openai", string_value="overwritten")
    with pytest.raises(PermissionDenied):
        reader.secrets.get_secret(scope=scope, key="openai")

    w.secrets.delete_acl(scope=scope, principal=sp.application_id)
    with pytest.raises(PermissionDenied):
        list(reader.secrets.list_secrets(scope=scope))
    w.secrets.delete_secret(scope=scope, key="cert")
    w.secrets.delete_scope(scope=scope)
    with pytest.raises(NotFound):
        list(w.secrets.list_secrets(scope=scope))
