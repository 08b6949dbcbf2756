"""SCIM identities over real HTTP: users, service principals, groups, Me; who may change them."""

from __future__ import annotations

import sqlite3
from typing import Any

import httpx
import pytest

from tests.harness import ServerProcess
from tests.workspace.identities import HIDDEN_EXTENSION, SCIM, create_service_principal, pat_for, unique

PATCH_OP = "urn:ietf:params:scim:api:messages:2.0:PatchOp"


def patch(*ops: dict[str, Any]) -> dict[str, Any]:
    return {"schemas": [PATCH_OP], "Operations": list(ops)}


def names(listing: dict[str, Any], key: str = "displayName") -> list[str]:
    return [r[key] for r in listing.get("Resources", [])]


@pytest.fixture(scope="module")
def non_admin(server: ServerProcess) -> dict[str, Any]:
    """A service principal outside `admins`, with a PAT."""
    with server.client() as admin:
        sp = create_service_principal(admin, unique("plain"))
        return {"sp": sp, "token": pat_for(admin, sp["applicationId"])}


def test_me_is_the_bootstrap_admin(admin: httpx.Client) -> None:
    me = admin.get(f"{SCIM}/Me").json()
    assert me["userName"] == "admin" and me["active"] is True
    assert {"admins", "account users"} <= {g["display"] for g in me["groups"]}


def test_user_lifecycle(admin: httpx.Client) -> None:
    user_name = unique("ana") + "@example.com"
    created = admin.post(f"{SCIM}/Users", json={"userName": user_name, "displayName": "Ana"})
    assert created.status_code == 201
    user = created.json()
    assert (
        user["userName"] == user_name
        and user["displayName"] == "Ana"
        and user["emails"][0]["value"] == user_name
    )
    assert "account users" in [g["display"] for g in user["groups"]]  # every user, implicitly
    assert admin.post(f"{SCIM}/Users", json={"userName": user_name}).status_code == 409

    found = admin.get(f"{SCIM}/Users", params={"filter": f'userName eq "{user_name}"'}).json()
    assert found["totalResults"] == 1 and found["Resources"][0]["id"] == user["id"]
    assert admin.get(f"{SCIM}/Users/{user['id']}").json()["displayName"] == "Ana"

    renamed = admin.patch(
        f"{SCIM}/Users/{user['id']}", json=patch({"op": "replace", "path": "displayName", "value": "Ana B."})
    )
    assert renamed.status_code == 200 and renamed.json()["displayName"] == "Ana B."
    replaced = admin.put(
        f"{SCIM}/Users/{user['id']}", json={"userName": user_name, "displayName": "Ana C.", "active": False}
    ).json()
    assert replaced["displayName"] == "Ana C." and replaced["active"] is False
    # A GET-then-PUT round trip (groups included, `account users` among them) changes nothing else.
    again = admin.put(f"{SCIM}/Users/{user['id']}", json=replaced)
    assert again.status_code == 200, again.text
    assert again.json()["groups"] == replaced["groups"]

    assert admin.delete(f"{SCIM}/Users/{user['id']}").status_code == 204
    assert admin.get(f"{SCIM}/Users/{user['id']}").status_code == 404
    assert admin.delete(f"{SCIM}/Users/{user['id']}").status_code == 404


def test_unknown_ids_are_404_whatever_their_shape(admin: httpx.Client) -> None:
    for path in ("Users/999999", "Users/abc", "Groups/0", "ServicePrincipals/not-a-uuid", "Users/-1"):
        response = admin.get(f"{SCIM}/{path}")
        assert response.status_code == 404, path
        assert response.json()["error_code"] == "RESOURCE_DOES_NOT_EXIST"
    # A group's id is not a user's id.
    group = admin.post(f"{SCIM}/Groups", json={"displayName": unique("g")}).json()
    assert admin.get(f"{SCIM}/Users/{group['id']}").status_code == 404


def test_filters(admin: httpx.Client) -> None:
    prefix = unique("flt")
    for n in range(3):
        admin.post(f"{SCIM}/Groups", json={"displayName": f"{prefix}-{n}"})
    assert names(admin.get(f"{SCIM}/Groups", params={"filter": f'displayName eq "{prefix}-1"'}).json()) == [
        f"{prefix}-1"
    ]
    assert names(admin.get(f"{SCIM}/Groups", params={"filter": f'displayName sw "{prefix}"'}).json()) == [
        f"{prefix}-0",
        f"{prefix}-1",
        f"{prefix}-2",
    ]
    both = f'displayName sw "{prefix}" and displayName ne "{prefix}-0"'
    assert names(admin.get(f"{SCIM}/Groups", params={"filter": both}).json()) == [
        f"{prefix}-1",
        f"{prefix}-2",
    ]
    assert (
        admin.get(f"{SCIM}/Groups", params={"filter": 'displayName eq "nobody-here"'}).json()["totalResults"]
        == 0
    )
    for bad in (
        "displayName eq nobody",
        'displayName like "x"',
        'password eq "x"',
        'displayName eq "x" or id eq "1"',
    ):
        response = admin.get(f"{SCIM}/Groups", params={"filter": bad})
        assert response.status_code == 400 and "filter" in response.json()["message"], bad


def test_paging_follows_start_index_and_count(admin: httpx.Client) -> None:
    prefix = unique("page")
    for n in range(5):
        admin.post(f"{SCIM}/Groups", json={"displayName": f"{prefix}-{n}"})
    flt = {"filter": f'displayName sw "{prefix}"'}
    first = admin.get(f"{SCIM}/Groups", params={**flt, "startIndex": 1, "count": 2}).json()
    second = admin.get(f"{SCIM}/Groups", params={**flt, "startIndex": 3, "count": 2}).json()
    last = admin.get(f"{SCIM}/Groups", params={**flt, "startIndex": 5, "count": 2}).json()
    beyond = admin.get(f"{SCIM}/Groups", params={**flt, "startIndex": 6, "count": 2}).json()
    assert first["totalResults"] == 5 and first["itemsPerPage"] == 2 and first["startIndex"] == 1
    assert names(first) + names(second) + names(last) == [f"{prefix}-{n}" for n in range(5)]
    assert beyond.get("Resources") == [] and beyond["totalResults"] == 5


def test_service_principal_lifecycle(admin: httpx.Client) -> None:
    sp = create_service_principal(admin, unique("bot"))
    assert len(sp["applicationId"]) == 36 and sp["active"] is True
    by_app = admin.get(
        f"{SCIM}/ServicePrincipals", params={"filter": f'applicationId eq "{sp["applicationId"]}"'}
    )
    assert names(by_app.json()) == [sp["displayName"]]
    assert admin.get(f"{SCIM}/ServicePrincipals/{sp['applicationId']}").json()["id"] == sp["id"]
    duplicate = admin.post(f"{SCIM}/ServicePrincipals", json={"displayName": sp["displayName"]})
    assert duplicate.status_code == 409
    put = admin.put(
        f"{SCIM}/ServicePrincipals/{sp['id']}",
        json={"displayName": sp["displayName"] + "-x", "applicationId": sp["applicationId"]},
    )
    assert put.status_code == 200 and put.json()["displayName"] == sp["displayName"] + "-x"
    moved = admin.put(
        f"{SCIM}/ServicePrincipals/{sp['id']}",
        json={"displayName": "y", "applicationId": "00000000-0000-0000-0000-000000000000"},
    )
    assert moved.status_code == 400 and "applicationId" in moved.json()["message"]
    assert admin.delete(f"{SCIM}/ServicePrincipals/{sp['id']}").status_code == 204
    assert admin.get(f"{SCIM}/ServicePrincipals/{sp['id']}").status_code == 404


def test_application_id_must_be_a_uuid_and_unique(admin: httpx.Client) -> None:
    bad = admin.post(f"{SCIM}/ServicePrincipals", json={"displayName": unique("b"), "applicationId": "abc"})
    assert bad.status_code == 400 and "applicationId" in bad.json()["message"]
    app_id = "8d3b7a3e-7a43-4d36-9d1e-0b8d3e0f1c2a"
    first = admin.post(
        f"{SCIM}/ServicePrincipals", json={"displayName": unique("b"), "applicationId": app_id}
    )
    assert first.status_code == 201 and first.json()["applicationId"] == app_id
    second = admin.post(
        f"{SCIM}/ServicePrincipals", json={"displayName": unique("b"), "applicationId": app_id}
    )
    assert second.status_code == 409


def test_hidden_service_principals_are_left_out_of_listings(
    admin: httpx.Client, non_admin: dict[str, Any], server: ServerProcess
) -> None:
    with server.client(non_admin["token"]) as deployer:
        hidden = create_service_principal(deployer, unique("agent-v1"), hidden=True)
    assert hidden[HIDDEN_EXTENSION] == {"hidden": True}
    listed = admin.get(f"{SCIM}/ServicePrincipals").json()
    assert hidden["id"] not in [r["id"] for r in listed["Resources"]]
    assert non_admin["sp"]["id"] in [r["id"] for r in listed["Resources"]]
    # An exact lookup is not a listing: the platform finds its own principal again.
    for flt in (f'applicationId eq "{hidden["applicationId"]}"', f'displayName eq "{hidden["displayName"]}"'):
        assert [
            r["id"]
            for r in admin.get(f"{SCIM}/ServicePrincipals", params={"filter": flt}).json()["Resources"]
        ] == [hidden["id"]]
    assert hidden["id"] not in [
        r["id"]
        for r in admin.get(
            f"{SCIM}/ServicePrincipals", params={"filter": f'displayName sw "{hidden["displayName"][:8]}"'}
        )
        .json()
        .get("Resources", [])
    ]
    assert admin.get(f"{SCIM}/ServicePrincipals/{hidden['id']}").status_code == 200


def test_non_admins_read_but_do_not_manage(
    server: ServerProcess, admin: httpx.Client, non_admin: dict[str, Any]
) -> None:
    target = create_service_principal(admin, unique("target"))
    group = admin.post(f"{SCIM}/Groups", json={"displayName": unique("team")}).json()
    with server.client(non_admin["token"]) as caller:
        assert caller.get(f"{SCIM}/Users").status_code == 200
        assert caller.get(f"{SCIM}/Groups/{group['id']}").status_code == 200
        denied = [
            caller.post(f"{SCIM}/Users", json={"userName": unique("u")}),
            caller.post(f"{SCIM}/Groups", json={"displayName": unique("g")}),
            caller.post(f"{SCIM}/ServicePrincipals", json={"displayName": unique("visible")}),
            caller.delete(f"{SCIM}/ServicePrincipals/{target['id']}"),
            caller.patch(
                f"{SCIM}/ServicePrincipals/{target['id']}",
                json=patch({"op": "replace", "path": "active", "value": False}),
            ),
            caller.put(f"{SCIM}/Groups/{group['id']}", json={"displayName": "renamed"}),
            caller.delete(f"{SCIM}/Groups/{group['id']}"),
        ]
        for response in denied:
            assert response.status_code == 403, response.text
            assert (
                "admins" in response.json()["message"]
                and response.json()["error_code"] == "PERMISSION_DENIED"
            )
    assert admin.get(f"{SCIM}/ServicePrincipals/{target['id']}").json()["active"] is True


def test_nobody_joins_admins_by_editing_themselves(
    server: ServerProcess, admin: httpx.Client, non_admin: dict[str, Any]
) -> None:
    admins = admin.get(f"{SCIM}/Groups", params={"filter": 'displayName eq "admins"'}).json()["Resources"][0]
    me = non_admin["sp"]
    with server.client(non_admin["token"]) as caller:
        # Through the group...
        join = caller.patch(
            f"{SCIM}/Groups/{admins['id']}",
            json=patch({"op": "add", "path": "members", "value": [{"value": me["id"]}]}),
        )
        assert join.status_code == 403
        # ...through a principal it created (hidden agent principal), naming the group...
        mine = create_service_principal(caller, unique("mine"), hidden=True)
        via_groups = caller.patch(
            f"{SCIM}/ServicePrincipals/{mine['id']}",
            json=patch({"op": "add", "path": "groups", "value": [{"value": admins["id"]}]}),
        )
        assert via_groups.status_code == 403
        via_put = caller.put(
            f"{SCIM}/ServicePrincipals/{mine['id']}",
            json={"displayName": mine["displayName"], "groups": [{"value": admins["id"]}]},
        )
        assert via_put.status_code == 403
        assert "admins" not in [g["display"] for g in caller.get(f"{SCIM}/Me").json()["groups"]]
        # The creator does manage its own principal.
        assert caller.delete(f"{SCIM}/ServicePrincipals/{mine['id']}").status_code == 204
    members = [m["value"] for m in admin.get(f"{SCIM}/Groups/{admins['id']}").json()["members"]]
    assert me["id"] not in members and mine["id"] not in members


def test_group_membership_add_remove_replace(admin: httpx.Client, server: ServerProcess) -> None:
    user = admin.post(f"{SCIM}/Users", json={"userName": unique("m") + "@example.com"}).json()
    sp = create_service_principal(admin)
    inner = admin.post(f"{SCIM}/Groups", json={"displayName": unique("inner")}).json()
    group = admin.post(
        f"{SCIM}/Groups", json={"displayName": unique("outer"), "members": [{"value": user["id"]}]}
    )
    assert group.status_code == 201
    gid = group.json()["id"]
    assert [m["value"] for m in group.json()["members"]] == [user["id"]]

    added = admin.patch(
        f"{SCIM}/Groups/{gid}",
        json=patch({"op": "add", "path": "members", "value": [{"value": sp["id"]}, {"value": inner["id"]}]}),
    ).json()
    assert {m["value"] for m in added["members"]} == {user["id"], sp["id"], inner["id"]}
    assert any(g["value"] == gid for g in admin.get(f"{SCIM}/ServicePrincipals/{sp['id']}").json()["groups"])

    removed = admin.patch(
        f"{SCIM}/Groups/{gid}", json=patch({"op": "remove", "path": f'members[value eq "{user["id"]}"]'})
    ).json()
    assert {m["value"] for m in removed["members"]} == {sp["id"], inner["id"]}

    replaced = admin.patch(
        f"{SCIM}/Groups/{gid}",
        json=patch({"op": "replace", "path": "members", "value": [{"value": user["id"]}]}),
    ).json()
    assert [m["value"] for m in replaced["members"]] == [user["id"]]

    emptied = admin.put(
        f"{SCIM}/Groups/{gid}", json={"displayName": group.json()["displayName"], "members": []}
    )
    assert emptied.json().get("members", []) == []

    missing = admin.patch(
        f"{SCIM}/Groups/{gid}", json=patch({"op": "add", "path": "members", "value": [{"value": "999999"}]})
    )
    assert missing.status_code == 404 and "999999" in missing.json()["message"]
    itself = admin.patch(
        f"{SCIM}/Groups/{gid}", json=patch({"op": "add", "path": "members", "value": [{"value": gid}]})
    )
    assert itself.status_code == 400


def test_group_membership_reaches_the_caller_at_once(server: ServerProcess, admin: httpx.Client) -> None:
    """Membership is part of who the caller is (the identity index is rebuilt after each change)."""
    sp = create_service_principal(admin)
    token = pat_for(admin, sp["applicationId"])
    group = admin.post(f"{SCIM}/Groups", json={"displayName": unique("reach")}).json()
    with server.client(token) as caller:
        assert caller.get("/api/2.0/token-management/tokens").status_code == 403
        admins = admin.get(f"{SCIM}/Groups", params={"filter": 'displayName eq "admins"'}).json()[
            "Resources"
        ][0]
        # Nested: sp -> group -> admins.
        admin.patch(
            f"{SCIM}/Groups/{group['id']}",
            json=patch({"op": "add", "path": "members", "value": [{"value": sp["id"]}]}),
        )
        admin.patch(
            f"{SCIM}/Groups/{admins['id']}",
            json=patch({"op": "add", "path": "members", "value": [{"value": group["id"]}]}),
        )
        assert caller.get("/api/2.0/token-management/tokens").status_code == 200
        admin.patch(
            f"{SCIM}/Groups/{admins['id']}",
            json=patch({"op": "remove", "path": f'members[value eq "{group["id"]}"]'}),
        )
        assert caller.get("/api/2.0/token-management/tokens").status_code == 403


def test_builtin_groups_are_protected(admin: httpx.Client) -> None:
    groups = {g["displayName"]: g for g in admin.get(f"{SCIM}/Groups").json()["Resources"]}
    everyone, admins = groups["account users"], groups["admins"]
    assert admin.delete(f"{SCIM}/Groups/{admins['id']}").status_code == 400
    assert admin.delete(f"{SCIM}/Groups/{everyone['id']}").status_code == 400
    assert admin.put(f"{SCIM}/Groups/{admins['id']}", json={"displayName": "root"}).status_code == 400
    sp = create_service_principal(admin)
    explicit = admin.patch(
        f"{SCIM}/Groups/{everyone['id']}",
        json=patch({"op": "add", "path": "members", "value": [{"value": sp["id"]}]}),
    )
    assert explicit.status_code == 400
    me = admin.get(f"{SCIM}/Me").json()
    assert me["id"] in [m["value"] for m in admin.get(f"{SCIM}/Groups/{everyone['id']}").json()["members"]]
    # The last thing an admin may do is lock itself out.
    leave = admin.patch(
        f"{SCIM}/Groups/{admins['id']}",
        json=patch({"op": "remove", "path": f'members[value eq "{me["id"]}"]'}),
    )
    assert leave.status_code == 400
    assert admin.delete(f"{SCIM}/Users/{me['id']}").status_code == 400
    disable = admin.patch(
        f"{SCIM}/Users/{me['id']}", json=patch({"op": "replace", "path": "active", "value": False})
    )
    assert disable.status_code == 400
    assert admin.get(f"{SCIM}/Me").status_code == 200


def test_identity_changes_are_audited(server: ServerProcess, admin: httpx.Client) -> None:
    sp = create_service_principal(admin, unique("audited"))
    admin.patch(
        f"{SCIM}/ServicePrincipals/{sp['id']}",
        json=patch({"op": "replace", "path": "active", "value": False}),
    )
    admin.delete(f"{SCIM}/ServicePrincipals/{sp['id']}")
    with sqlite3.connect(server.home / "workspace.db") as db:
        rows = db.execute(
            "SELECT action_name, actor_name FROM audit_events WHERE securable_name = ? ORDER BY event_time",
            (sp["displayName"],),
        ).fetchall()
    assert [r[0] for r in rows] == [
        "createServicePrincipal",
        "updateServicePrincipal",
        "deleteServicePrincipal",
    ]
    assert {r[1] for r in rows} == {"admin"}


def test_ids_are_never_reused(admin: httpx.Client) -> None:
    """Creator and owner references hold ids: a deleted principal's id must not pass to a newcomer."""
    first = create_service_principal(admin)
    assert admin.delete(f"{SCIM}/ServicePrincipals/{first['id']}").status_code == 204
    second = create_service_principal(admin)
    assert int(second["id"]) > int(first["id"])
