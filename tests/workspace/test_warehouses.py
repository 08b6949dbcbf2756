"""SQL warehouses over HTTP and their object permissions (`/api/2.0/permissions/warehouses/{id}`)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.harness import ServerProcess
from tests.workspace.identities import create_service_principal, pat_for

WH = "/api/2.0/sql/warehouses"
UID = uuid.uuid4().hex[:6]


def _ok(response: httpx.Response) -> Any:
    assert response.status_code == 200, f"{response.request.method} {response.request.url}: {response.text}"
    return response.json()


@pytest.fixture(scope="module")
def admin(server: ServerProcess) -> Iterator[httpx.Client]:
    with server.client() as client:
        yield client


@pytest.fixture(scope="module")
def user(server: ServerProcess, admin: httpx.Client) -> Iterator[tuple[dict[str, Any], httpx.Client]]:
    sp = create_service_principal(admin, f"wh-user-{UID}")
    with server.client(pat_for(admin, sp["applicationId"])) as client:
        yield sp, client


def test_create_get_list_edit_stop_start_delete(admin: httpx.Client) -> None:
    name = f"life-{UID}"
    warehouse_id = _ok(admin.post(WH, json={"name": name, "cluster_size": "Small", "auto_stop_mins": 10}))[
        "id"
    ]
    info = _ok(admin.get(f"{WH}/{warehouse_id}"))
    assert info["name"] == name and info["state"] == "RUNNING" and info["cluster_size"] == "Small"
    assert info["auto_stop_mins"] == 10 and info["creator_name"] == "admin"
    assert info["odbc_params"]["path"] == f"/sql/1.0/warehouses/{warehouse_id}"
    assert warehouse_id in [w["id"] for w in _ok(admin.get(WH))["warehouses"]]
    _ok(admin.post(f"{WH}/{warehouse_id}/edit", json={"cluster_size": "Medium"}))
    assert _ok(admin.get(f"{WH}/{warehouse_id}"))["cluster_size"] == "Medium"
    _ok(admin.post(f"{WH}/{warehouse_id}/stop"))
    assert _ok(admin.get(f"{WH}/{warehouse_id}"))["state"] == "STOPPED"
    _ok(admin.post(f"{WH}/{warehouse_id}/start"))
    assert _ok(admin.get(f"{WH}/{warehouse_id}"))["state"] == "RUNNING"
    duplicate = admin.post(WH, json={"name": name})
    assert duplicate.status_code == 409
    _ok(admin.delete(f"{WH}/{warehouse_id}"))
    missing = admin.get(f"{WH}/{warehouse_id}")
    assert missing.status_code == 404 and warehouse_id in missing.json()["message"]


def test_bad_input(admin: httpx.Client) -> None:
    for body, field in (
        ({}, "name"),
        ({"name": "x", "auto_stop_mins": -1}, "auto_stop_mins"),
        ({"name": "a/b"}, "name"),
    ):
        response = admin.post(WH, json=body)
        assert response.status_code == 400, response.text
        assert f"'{field}'" in response.json()["message"]


def test_permissions_decide_what_a_principal_sees_and_does(
    admin: httpx.Client, user: tuple[dict[str, Any], httpx.Client]
) -> None:
    sp, client = user
    warehouse_id = _ok(admin.post(WH, json={"name": f"perm-{UID}"}))["id"]
    assert client.post(WH, json={"name": f"mine-{UID}"}).status_code == 403, "creating needs admins"
    assert warehouse_id not in [w["id"] for w in _ok(client.get(WH))["warehouses"]]
    denied = client.get(f"{WH}/{warehouse_id}")
    assert denied.status_code == 403
    assert denied.json()["message"] == (
        f"Service principal '{sp['displayName']}' does not have CAN_VIEW on sql warehouse 'perm-{UID}'."
    )

    acl = _ok(
        admin.patch(
            f"/api/2.0/permissions/warehouses/{warehouse_id}",
            json={
                "access_control_list": [
                    {"service_principal_name": sp["applicationId"], "permission_level": "CAN_USE"}
                ]
            },
        )
    )
    entries = {
        e.get("service_principal_name") or e.get("user_name") or e.get("group_name"): e["all_permissions"]
        for e in acl["access_control_list"]
    }
    assert entries[sp["applicationId"]] == [{"permission_level": "CAN_USE", "inherited": False}]
    assert entries["admin"] == [{"permission_level": "IS_OWNER", "inherited": False}]
    assert entries["admins"][0]["permission_level"] == "CAN_MANAGE" and entries["admins"][0]["inherited"]

    # CAN_USE: sees it, may start it, may not stop or delete it or change its permissions.
    assert warehouse_id in [w["id"] for w in _ok(client.get(WH))["warehouses"]]
    _ok(client.post(f"{WH}/{warehouse_id}/start"))
    stop = client.post(f"{WH}/{warehouse_id}/stop")
    assert stop.status_code == 403 and "CAN_MANAGE on sql warehouse" in stop.json()["message"]
    assert client.delete(f"{WH}/{warehouse_id}").status_code == 403
    assert (
        client.patch(
            f"/api/2.0/permissions/warehouses/{warehouse_id}", json={"access_control_list": []}
        ).status_code
        == 403
    )
    assert _ok(client.get(f"/api/2.0/permissions/warehouses/{warehouse_id}"))["object_id"].endswith(
        warehouse_id
    )

    # PUT replaces every direct permission: the principal loses CAN_USE at once.
    _ok(admin.put(f"/api/2.0/permissions/warehouses/{warehouse_id}", json={"access_control_list": []}))
    assert client.get(f"{WH}/{warehouse_id}").status_code == 403

    # IS_OWNER hands the warehouse over; the new owner manages it.
    _ok(
        admin.patch(
            f"/api/2.0/permissions/warehouses/{warehouse_id}",
            json={
                "access_control_list": [
                    {"service_principal_name": sp["applicationId"], "permission_level": "IS_OWNER"}
                ]
            },
        )
    )
    _ok(client.post(f"{WH}/{warehouse_id}/stop"))
    _ok(client.delete(f"{WH}/{warehouse_id}"))


def test_permission_levels_and_bad_acl(admin: httpx.Client) -> None:
    warehouse_id = _ok(admin.post(WH, json={"name": f"levels-{UID}"}))["id"]
    levels = _ok(admin.get(f"/api/2.0/permissions/warehouses/{warehouse_id}/permissionLevels"))
    assert [lv["permission_level"] for lv in levels["permission_levels"]] == [
        "CAN_VIEW",
        "CAN_USE",
        "CAN_MANAGE",
        "IS_OWNER",
    ]
    bad = admin.patch(
        f"/api/2.0/permissions/warehouses/{warehouse_id}",
        json={"access_control_list": [{"user_name": "admin", "permission_level": "CAN_QUERY"}]},
    )
    assert bad.status_code == 400 and "'access_control_list[0].permission_level'" in bad.json()["message"]
    bad = admin.patch(
        f"/api/2.0/permissions/warehouses/{warehouse_id}",
        json={
            "access_control_list": [
                {"user_name": "admin", "group_name": "admins", "permission_level": "CAN_USE"}
            ]
        },
    )
    assert bad.status_code == 400 and "exactly one" in bad.json()["message"]
    bad = admin.patch(
        f"/api/2.0/permissions/warehouses/{warehouse_id}",
        json={"access_control_list": [{"user_name": f"ghost-{UID}", "permission_level": "CAN_USE"}]},
    )
    assert bad.status_code == 404 and "'access_control_list[0].user_name'" in bad.json()["message"]
