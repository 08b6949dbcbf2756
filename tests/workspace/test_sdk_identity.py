"""The official databricks-sdk as a real client of identities, tokens and OAuth M2M."""

from __future__ import annotations

import pytest
from databricks.sdk import WorkspaceClient
from databricks.sdk.errors import InvalidParameterValue, NotFound, PermissionDenied, Unauthenticated
from databricks.sdk.service import iam

from tests.harness import ServerProcess
from tests.workspace.identities import unique


@pytest.fixture(scope="module")
def w(server: ServerProcess) -> WorkspaceClient:
    return WorkspaceClient(host=server.url, token=server.admin_token, auth_type="pat")


def test_pat_auth_current_user(w: WorkspaceClient) -> None:
    me = w.current_user.me()
    assert me.user_name == "admin" and me.active
    assert "admins" in {g.display for g in me.groups or []}


def test_service_principals_create_get_list_delete(w: WorkspaceClient) -> None:
    name = unique("sdk-sp")
    sp = w.service_principals.create(display_name=name)
    assert sp.id and sp.application_id and sp.display_name == name and sp.active
    assert w.service_principals.get(sp.id).application_id == sp.application_id
    assert sp.id in [p.id for p in w.service_principals.list()]
    assert [p.id for p in w.service_principals.list(filter=f'displayName eq "{name}"')] == [sp.id]
    # The SDK's Patch.as_dict drops a falsy value, so `value=False` would arrive as no value (a 400
    # that says so); the string form is what works.
    w.service_principals.patch(
        sp.id,
        operations=[iam.Patch(op=iam.PatchOp.REPLACE, path="active", value="false")],
        schemas=[iam.PatchSchema.URN_IETF_PARAMS_SCIM_API_MESSAGES_2_0_PATCH_OP],
    )
    assert w.service_principals.get(sp.id).active is False
    with pytest.raises(InvalidParameterValue, match="string"):
        w.service_principals.patch(
            sp.id, operations=[iam.Patch(op=iam.PatchOp.REPLACE, path="active", value=False)]
        )
    w.service_principals.delete(sp.id)
    with pytest.raises(NotFound):
        w.service_principals.get(sp.id)


def test_users_and_groups(w: WorkspaceClient) -> None:
    user_name = unique("sdk-user") + "@example.com"
    user = w.users.create(user_name=user_name, display_name="SDK user")
    assert [u.id for u in w.users.list(filter=f'userName eq "{user_name}"')] == [user.id]
    group = w.groups.create(display_name=unique("sdk-group"))
    w.groups.patch(
        group.id,
        operations=[iam.Patch(op=iam.PatchOp.ADD, path="members", value=[{"value": user.id}])],
        schemas=[iam.PatchSchema.URN_IETF_PARAMS_SCIM_API_MESSAGES_2_0_PATCH_OP],
    )
    assert [m.value for m in w.groups.get(group.id).members or []] == [user.id]
    assert group.id in {g.value for g in w.users.get(user.id).groups or []}
    w.groups.patch(
        group.id,
        operations=[iam.Patch(op=iam.PatchOp.REMOVE, path=f'members[value eq "{user.id}"]')],
        schemas=[iam.PatchSchema.URN_IETF_PARAMS_SCIM_API_MESSAGES_2_0_PATCH_OP],
    )
    assert not w.groups.get(group.id).members
    assert group.id in [g.id for g in w.groups.list()]
    w.groups.delete(group.id)
    w.users.delete(user.id)
    assert user.id not in [u.id for u in w.users.list()]


def test_tokens_create_list_delete(server: ServerProcess, w: WorkspaceClient) -> None:
    created = w.tokens.create(comment="sdk", lifetime_seconds=600)
    assert created.token_value and created.token_info and created.token_info.token_id
    listed = list(w.tokens.list())
    assert created.token_info.token_id in [t.token_id for t in listed]
    own = WorkspaceClient(host=server.url, token=created.token_value, auth_type="pat")
    assert own.current_user.me().user_name == "admin"
    w.tokens.delete(created.token_info.token_id)
    assert created.token_info.token_id not in [t.token_id for t in w.tokens.list()]
    with pytest.raises(Unauthenticated):
        own.current_user.me()


def test_oauth_m2m_login_with_client_id_and_secret(server: ServerProcess, w: WorkspaceClient) -> None:
    sp = w.service_principals.create(display_name=unique("sdk-m2m"))
    secret = w.service_principal_secrets_proxy.create(sp.id)
    assert secret.secret and secret.id
    assert [s.id for s in w.service_principal_secrets_proxy.list(sp.id)] == [secret.id]
    # No auth_type: the SDK detects oauth-m2m from client_id/client_secret and walks discovery.
    m2m = WorkspaceClient(host=server.url, client_id=sp.application_id, client_secret=secret.secret)
    me = m2m.current_user.me()
    assert me.id == sp.id and me.user_name == sp.application_id
    # A non-admin principal is refused admin work with a 403 the SDK maps.
    with pytest.raises(PermissionDenied):
        m2m.users.create(user_name=unique("nope") + "@example.com")
    w.service_principal_secrets_proxy.delete(sp.id, secret.id)
    assert list(w.service_principal_secrets_proxy.list(sp.id)) == []
    # The token already issued stays valid until it expires; the principal's deletion ends it.
    w.service_principals.delete(sp.id)
    with pytest.raises(Unauthenticated):
        m2m.current_user.me()


def test_m2m_with_a_wrong_secret_fails_with_the_oauth_error(
    server: ServerProcess, w: WorkspaceClient
) -> None:
    sp = w.service_principals.create(display_name=unique("sdk-bad"))
    bad = WorkspaceClient(
        host=server.url, client_id=sp.application_id, client_secret="dose" + "0" * 64, auth_type="oauth-m2m"
    )
    with pytest.raises(Exception, match="invalid_client"):
        bad.current_user.me()
