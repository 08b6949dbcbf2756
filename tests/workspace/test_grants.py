"""The one authorization function, through the real server over HTTP.

A privilege matrix generated over securable types x privileges x how the caller holds the
privilege. Every case gets a fresh service principal (its own PAT) so cases never see each
other's grants; the securables are built once per module. Each case asks the server through
`POST /api/2.0/agentdeploy/permissions/check` and, where a real endpoint needs exactly that
privilege (GET a table needs SELECT, PATCH grants needs MANAGE...), through that endpoint too.
Denials must be 403 with the exact message naming every missing privilege and its securable.
"""

from __future__ import annotations

import itertools
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from agentdeploy.workspace.grants import APPLICABLE, LEVELS
from tests.harness import ServerProcess
from tests.workspace.identities import SCIM, pat_for

UC = "/api/2.1/unity-catalog"
UID = uuid.uuid4().hex[:6]
K = 4  # identical worlds; one caller serves one case in each (their grants cannot meet)
UC_TYPES = ("catalog", "schema", "table", "function", "registered_model")
IN_SCHEMA = ("table", "function", "registered_model")
OBJECT_TYPES = ("connection", "serving_endpoint", "vector_search_index", "genie_space", "secret_scope")
_counter = itertools.count()


def names(k: int) -> dict[str, str]:
    """The securables of world k."""
    cat = f"g{UID}w{k}"
    sch = f"{cat}.s"
    return {
        "catalog": cat,
        "schema": sch,
        "table": f"{sch}.t",
        "function": f"{sch}.f",
        "registered_model": f"{sch}.m",
        "connection": f"conn-{UID}-{k}",
        "sql_warehouse": f"wh-{UID}-{k}",
        "serving_endpoint": f"ep-{UID}-{k}",
        "vector_search_index": f"{sch}.vsi",  # vector search indexes carry three-part names
        "genie_space": f"genie-{UID}-{k}",
        "secret_scope": f"scope-{UID}-{k}",
    }


NAMES = names(0)
CAT, SCH = NAMES["catalog"], NAMES["schema"]


def words(securable_type: str, name: str) -> str:
    return f"{securable_type.replace('_', ' ')} '{name}'"


def _ok(response: httpx.Response, status: int = 200) -> Any:
    assert response.status_code == status, (
        f"{response.request.method} {response.request.url}: {response.text}"
    )
    return response.json() if response.content else {}


# The worlds -----------------------------------------------------------------------------------
def create_uc(admin: httpx.Client, securable_type: str, full_name: str) -> None:
    parts = full_name.split(".")
    if securable_type == "catalog":
        _ok(admin.post(f"{UC}/catalogs", json={"name": full_name}))
    elif securable_type == "schema":
        _ok(admin.post(f"{UC}/schemas", json={"catalog_name": parts[0], "name": parts[1]}))
    elif securable_type == "table":
        _ok(
            admin.post(
                f"{UC}/tables",
                json={
                    "catalog_name": parts[0],
                    "schema_name": parts[1],
                    "name": parts[2],
                    "columns": [{"name": "q", "type_name": "STRING", "position": 0}],
                },
            )
        )
    elif securable_type == "function":
        _ok(
            admin.post(
                f"{UC}/functions",
                json={
                    "function_info": {
                        "catalog_name": parts[0],
                        "schema_name": parts[1],
                        "name": parts[2],
                        "data_type": "STRING",
                        "full_data_type": "STRING",
                        "routine_body": "SQL",
                        "routine_definition": "'hi'",
                    }
                },
            )
        )
    elif securable_type == "registered_model":
        _ok(
            admin.post(
                f"{UC}/models", json={"catalog_name": parts[0], "schema_name": parts[1], "name": parts[2]}
            )
        )
    else:
        raise AssertionError(securable_type)


def register_object(admin: httpx.Client, securable_type: str, name: str, owner: str | None = None) -> str:
    body: dict[str, Any] = {"securable_type": securable_type, "name": name}
    if owner:
        body["owner"] = owner
    return str(_ok(admin.post("/api/2.0/agentdeploy/securables", json=body))["object_id"])


def change(
    admin: httpx.Client,
    securable_type: str,
    name: str,
    principal: str,
    *,
    add: tuple[str, ...] = (),
    remove: tuple[str, ...] = (),
) -> None:
    _ok(
        admin.patch(
            f"{UC}/permissions/{securable_type}/{name}",
            json={"changes": [{"principal": principal, "add": list(add), "remove": list(remove)}]},
        )
    )


@dataclass
class World:
    server: ServerProcess
    admin: httpx.Client
    names: list[dict[str, str]]
    object_ids: list[dict[str, str]]
    use_groups: list[dict[str, str]]  # per world: "both" / "catalog" / "schema" -> group SCIM id
    callers: dict[int, Caller]


@pytest.fixture(scope="module")
def world(server: ServerProcess) -> Iterator[World]:
    admin = server.client()
    all_names, all_ids, all_groups = [], [], []
    for k in range(K):
        n = names(k)
        for securable_type in UC_TYPES:
            create_uc(admin, securable_type, n[securable_type])
        ids = {
            "sql_warehouse": str(
                _ok(admin.post("/api/2.0/sql/warehouses", json={"name": n["sql_warehouse"]}))["id"]
            )
        }
        for securable_type in OBJECT_TYPES:
            ids[securable_type] = register_object(admin, securable_type, n[securable_type])
        # Groups that give their members the USE_* privileges rule 4 asks for (or only one of them).
        groups = {}
        for label, grants in (
            ("both", ("USE_CATALOG", "USE_SCHEMA")),
            ("catalog", ("USE_CATALOG",)),
            ("schema", ("USE_SCHEMA",)),
        ):
            group = _ok(admin.post(f"{SCIM}/Groups", json={"displayName": f"use-{label}-{UID}-{k}"}), 201)
            if "USE_CATALOG" in grants:
                change(admin, "catalog", n["catalog"], group["displayName"], add=("USE_CATALOG",))
            if "USE_SCHEMA" in grants:
                change(admin, "schema", n["schema"], group["displayName"], add=("USE_SCHEMA",))
            groups[label] = group["id"]
        all_names.append(n)
        all_ids.append(ids)
        all_groups.append(groups)
    built = World(server, admin, all_names, all_ids, all_groups, {})
    yield built
    world_callers = list(built.callers.values())
    for caller in world_callers:
        caller.client.close()
    admin.close()


@dataclass
class Caller:
    name: str
    application_id: str
    scim_id: str
    client: httpx.Client


def new_caller(world: World, groups: list[str] = ()) -> Caller:  # type: ignore[assignment]
    body: dict[str, Any] = {
        "displayName": f"g-{UID}-{next(_counter)}",
        "groups": [{"value": g} for g in groups],
    }
    sp = _ok(world.admin.post(f"{SCIM}/ServicePrincipals", json=body), 201)
    token = pat_for(world.admin, sp["applicationId"])
    return Caller(sp["displayName"], sp["applicationId"], sp["id"], world.server.client(token))


def check(caller: Caller, securable_type: str, name: str, privilege: str) -> httpx.Response:
    return caller.client.post(
        "/api/2.0/agentdeploy/permissions/check",
        json={"checks": [{"securable_type": securable_type, "full_name": name, "privilege": privilege}]},
    )


def real_endpoint(
    caller: Caller, securable_type: str, name: str, privilege: str, object_id: str | None
) -> httpx.Response | None:
    """The response of an endpoint that needs exactly this privilege, if there is one."""
    gets = {
        ("catalog", "USE_CATALOG"): f"{UC}/catalogs/{name}",
        ("schema", "USE_SCHEMA"): f"{UC}/schemas/{name}",
        ("table", "SELECT"): f"{UC}/tables/{name}",
        ("function", "EXECUTE"): f"{UC}/functions/{name}",
        ("registered_model", "EXECUTE"): f"{UC}/models/{name}",
    }
    if (securable_type, privilege) in gets:
        return caller.client.get(gets[(securable_type, privilege)])
    if securable_type == "sql_warehouse" and privilege == "CAN_VIEW":
        return caller.client.get(f"/api/2.0/sql/warehouses/{object_id}")
    if securable_type == "sql_warehouse" and privilege == "CAN_MANAGE":
        return caller.client.patch(
            f"/api/2.0/permissions/warehouses/{object_id}", json={"access_control_list": []}
        )
    if securable_type == "sql_warehouse" and privilege == "CAN_USE":
        return caller.client.post(f"/api/2.0/sql/warehouses/{object_id}/start")
    if privilege == "MANAGE" and securable_type in (*UC_TYPES, "connection"):
        return caller.client.patch(f"{UC}/permissions/{securable_type}/{name}", json={"changes": []})
    return None


# The matrix -----------------------------------------------------------------------------------
UC_HOWS = (
    "owner",
    "direct",
    "group",
    "inherited_from_catalog",
    "inherited_from_schema",
    "all_privileges",
    "missing_use_catalog",
    "missing_use_schema",
    "revoked",
)
OBJECT_HOWS = ("owner", "direct", "group", "higher_level", "lower_level", "revoked")
CONNECTION_HOWS = ("owner", "direct", "group", "all_privileges", "revoked")


def _applies(securable_type: str, privilege: str, how: str) -> bool:
    if how == "inherited_from_catalog":
        return securable_type != "catalog"
    if how == "inherited_from_schema":
        return securable_type in IN_SCHEMA
    if how == "missing_use_catalog":
        return (securable_type, privilege) != ("catalog", "USE_CATALOG")
    if how == "missing_use_schema":
        return securable_type != "catalog" and (securable_type, privilege) != ("schema", "USE_SCHEMA")
    if how == "higher_level":
        return privilege != LEVELS[securable_type][-1]
    if how == "lower_level":
        return privilege != LEVELS[securable_type][0]
    return True


def _cases() -> Iterator[tuple[str, str, str]]:
    for securable_type in (*UC_TYPES, "connection", *LEVELS):
        hows = (
            UC_HOWS
            if securable_type in UC_TYPES
            else CONNECTION_HOWS
            if securable_type == "connection"
            else OBJECT_HOWS
        )
        for privilege in sorted(APPLICABLE[securable_type] - {"ALL_PRIVILEGES"}):
            for how in hows:
                if _applies(securable_type, privilege, how):
                    yield securable_type, privilege, how


CASES = list(_cases())


def _use_group(securable_type: str, privilege: str, how: str) -> str | None:
    """Which USE_* group the caller of a case joins (rule 4), leaving out what the case tests."""
    if securable_type not in UC_TYPES:
        return None
    if how == "missing_use_catalog":
        return "schema" if securable_type != "catalog" else None
    if (
        how == "missing_use_schema"
        or securable_type == "catalog"
        or (securable_type, privilege) == ("schema", "USE_SCHEMA")
    ):
        return None if (securable_type, privilege) == ("catalog", "USE_CATALOG") else "catalog"
    return "both"


def caller_for(world: World, index: int) -> Caller:
    """Case i runs in world i % K as caller i // K: that caller's K cases never share a world."""
    slot = index // K
    if slot not in world.callers:
        groups = []
        for i in range(slot * K, min(len(CASES), slot * K + K)):
            label = _use_group(*CASES[i])
            if label:
                groups.append(world.use_groups[i % K][label])
        world.callers[slot] = new_caller(world, groups)
    return world.callers[slot]


def _owned_target(world: World, k: int, caller: Caller, securable_type: str) -> tuple[str, str | None]:
    """A fresh securable of the type, owned by the caller, inside world k's catalog/schema."""
    n, cat, sch = next(_counter), world.names[k]["catalog"], world.names[k]["schema"]
    if securable_type in UC_TYPES:
        name = {"catalog": f"go{UID}{n}", "schema": f"{cat}.o{n}"}.get(securable_type, f"{sch}.o{n}")
        create_uc(world.admin, securable_type, name)
        endpoint = {
            "catalog": "catalogs",
            "schema": "schemas",
            "table": "tables",
            "function": "functions",
            "registered_model": "models",
        }[securable_type]
        _ok(world.admin.patch(f"{UC}/{endpoint}/{name}", json={"owner": caller.application_id}))
        return name, None
    name = f"{securable_type}-o{UID}{n}"
    return name, register_object(world.admin, securable_type, name, owner=caller.application_id)


@pytest.mark.parametrize(
    ("index", "securable_type", "privilege", "how"),
    [pytest.param(i, *case, id="-".join(case)) for i, case in enumerate(CASES)],
)
def test_privilege_matrix(world: World, index: int, securable_type: str, privilege: str, how: str) -> None:
    k = index % K
    caller = caller_for(world, index)
    cat, sch = world.names[k]["catalog"], world.names[k]["schema"]
    name, object_id = world.names[k][securable_type], world.object_ids[k].get(securable_type)
    grantee = caller.application_id
    grants: list[tuple[str, str, str]] = []
    expected_missing: list[str] = []

    if how == "owner":
        name, object_id = _owned_target(world, k, caller, securable_type)
    elif how in ("direct", "group", "revoked", "missing_use_catalog", "missing_use_schema"):
        grants = [(securable_type, name, privilege)]
        if how == "missing_use_catalog":
            expected_missing = [f"USE_CATALOG on {words('catalog', cat)}"]
        elif how == "missing_use_schema":
            expected_missing = [f"USE_SCHEMA on {words('schema', sch)}"]
    elif how == "inherited_from_catalog":
        grants = [("catalog", cat, privilege)]
    elif how == "inherited_from_schema":
        grants = [("schema", sch, privilege)]
    elif how == "all_privileges":
        grants = [(securable_type, name, "ALL_PRIVILEGES")]
        if privilege == "MANAGE":  # ALL_PRIVILEGES covers everything but MANAGE, as in Databricks
            expected_missing = [f"MANAGE on {words(securable_type, name)}"]
    elif how == "higher_level":
        grants = [(securable_type, name, LEVELS[securable_type][-1])]
    elif how == "lower_level":
        ladder = LEVELS[securable_type]
        grants = [(securable_type, name, ladder[ladder.index(privilege) - 1])]
        expected_missing = [f"{privilege} on {words(securable_type, name)}"]

    if how == "group":
        group = _ok(
            world.admin.post(
                f"{SCIM}/Groups",
                json={"displayName": f"gg-{UID}-{next(_counter)}", "members": [{"value": caller.scim_id}]},
            ),
            201,
        )
        grantee = group["displayName"]
    for on_type, on_name, granted in grants:
        change(world.admin, on_type, on_name, grantee, add=(granted,))

    def expect(missing: list[str]) -> None:
        for response in (
            check(caller, securable_type, name, privilege),
            real_endpoint(caller, securable_type, name, privilege, object_id),
        ):
            if response is None:
                continue
            if not missing:
                assert response.status_code == 200, response.text
            else:
                assert response.status_code == 403, response.text
                assert response.json() == {
                    "error_code": "PERMISSION_DENIED",
                    "message": f"Service principal '{caller.name}' does not have {', '.join(missing)}.",
                }

    if how == "revoked":
        expect([])  # held first ...
        change(world.admin, securable_type, name, grantee, remove=(privilege,))
        expect([f"{privilege} on {words(securable_type, name)}"])  # ... and gone on the next request
    else:
        expect(expected_missing)


def _use_grants(securable_type: str) -> list[tuple[str, str, str]]:
    """USE_CATALOG / USE_SCHEMA on world 0's parents of a securable type (what rule 4 needs)."""
    out = [("catalog", CAT, "USE_CATALOG")]
    if securable_type != "catalog":
        out.append(("schema", SCH, "USE_SCHEMA"))
    return out


def test_the_matrix_covers_every_privilege_of_every_type() -> None:
    covered = {(t, p) for t, p, _ in CASES}
    expected = {
        (t, p) for t in (*UC_TYPES, "connection", *LEVELS) for p in APPLICABLE[t] - {"ALL_PRIVILEGES"}
    }
    assert covered == expected
    assert len(CASES) > 200


# The rules beyond the matrix ------------------------------------------------------------------
def test_no_grant_at_all_names_every_missing_privilege_top_down(world: World) -> None:
    caller = new_caller(world)
    response = caller.client.get(f"{UC}/tables/{NAMES['table']}")
    assert response.status_code == 403
    assert response.json()["message"] == (
        f"Service principal '{caller.name}' does not have USE_CATALOG on catalog '{CAT}', "
        f"USE_SCHEMA on schema '{SCH}', SELECT on table '{NAMES['table']}'."
    )


def test_nested_groups_pass_privileges_down(world: World) -> None:
    caller = new_caller(world)
    inner = _ok(
        world.admin.post(
            f"{SCIM}/Groups", json={"displayName": f"inner-{UID}", "members": [{"value": caller.scim_id}]}
        ),
        201,
    )
    outer = _ok(
        world.admin.post(
            f"{SCIM}/Groups", json={"displayName": f"outer-{UID}", "members": [{"value": inner["id"]}]}
        ),
        201,
    )
    for on_type, on_name, privilege in [*_use_grants("table"), ("table", NAMES["table"], "SELECT")]:
        change(world.admin, on_type, on_name, outer["displayName"], add=(privilege,))
    assert caller.client.get(f"{UC}/tables/{NAMES['table']}").status_code == 200


def test_catalog_owner_manages_grants_below_but_does_not_read(world: World) -> None:
    caller = new_caller(world)
    catalog = f"own{UID}"
    create_uc(world.admin, "catalog", catalog)
    create_uc(world.admin, "schema", f"{catalog}.s")
    create_uc(world.admin, "table", f"{catalog}.s.t")
    _ok(world.admin.patch(f"{UC}/catalogs/{catalog}", json={"owner": caller.application_id}))
    # Manages the grants of a table it does not own (ownership of the catalog) ...
    assert (
        caller.client.patch(
            f"{UC}/permissions/table/{catalog}.s.t",
            json={"changes": [{"principal": caller.application_id, "add": ["MODIFY"]}]},
        ).status_code
        == 200
    )
    # ... but ownership is not inherited: no SELECT, and USE_SCHEMA is still missing.
    response = check(caller, "table", f"{catalog}.s.t", "SELECT")
    assert response.status_code == 403
    assert response.json()["message"].endswith(
        f"does not have USE_SCHEMA on schema '{catalog}.s', SELECT on table '{catalog}.s.t'."
    )


def test_admins_manage_everything_but_read_data_only_when_granted(world: World) -> None:
    owner = new_caller(world)
    table, _ = _owned_target(world, 0, owner, "table")
    whoami = world.admin.get(f"{SCIM}/Me").json()["userName"]
    # MANAGE: an admin changes the grants of a table it does not own ...
    assert world.admin.patch(f"{UC}/permissions/table/{table}", json={"changes": []}).status_code == 200
    # ... but SELECT follows the rules (the admin owns the catalog and schema, so only SELECT lacks).
    response = world.admin.post(
        "/api/2.0/agentdeploy/permissions/check",
        json={"checks": [{"securable_type": "table", "full_name": table, "privilege": "SELECT"}]},
    )
    assert response.status_code == 403
    assert response.json()["message"] == f"User '{whoami}' does not have SELECT on table '{table}'."
    # Workspace objects: admins hold CAN_MANAGE, hence every level, on objects they do not own.
    name, _ = _owned_target(world, 0, owner, "serving_endpoint")
    response = world.admin.post(
        "/api/2.0/agentdeploy/permissions/check",
        json={
            "checks": [{"securable_type": "serving_endpoint", "full_name": name, "privilege": "CAN_QUERY"}]
        },
    )
    assert response.status_code == 200


def test_missing_privileges_are_all_reported_at_once(world: World) -> None:
    caller = new_caller(world)
    change(world.admin, "catalog", CAT, caller.application_id, add=("USE_CATALOG",))
    response = caller.client.post(
        "/api/2.0/agentdeploy/permissions/check",
        json={
            "checks": [
                {"securable_type": "table", "full_name": NAMES["table"], "privilege": "SELECT"},
                {
                    "securable_type": "sql_warehouse",
                    "full_name": NAMES["sql_warehouse"],
                    "privilege": "CAN_USE",
                },
                {"securable_type": "function", "full_name": NAMES["function"], "privilege": "EXECUTE"},
                {"securable_type": "table", "full_name": f"{SCH}.nope", "privilege": "SELECT"},
            ]
        },
    )
    assert response.status_code == 403
    assert response.json()["message"] == (
        f"Service principal '{caller.name}' does not have USE_SCHEMA on schema '{SCH}', "
        f"SELECT on table '{NAMES['table']}', CAN_USE on sql warehouse '{NAMES['sql_warehouse']}', "
        f"EXECUTE on function '{NAMES['function']}', SELECT on table '{SCH}.nope' (it does not exist)."
    )
    report = caller.client.post(
        "/api/2.0/agentdeploy/permissions/check",
        json={
            "fail_on_missing": False,
            "checks": [
                {"securable_type": "catalog", "full_name": CAT, "privilege": "USE_CATALOG"},
                {"securable_type": "schema", "full_name": SCH, "privilege": "USE_SCHEMA"},
            ],
        },
    )
    assert report.status_code == 200
    assert report.json() == {"authorized": False, "missing": [f"USE_SCHEMA on schema '{SCH}'"]}


def test_require_admin_goes_through_the_same_decision(world: World) -> None:
    caller = new_caller(world)
    response = caller.client.get("/api/2.0/token-management/tokens")
    assert response.status_code == 403 and "admins" in response.json()["message"]
    response = caller.client.post(f"{UC}/catalogs", json={"name": f"nope{UID}"})
    assert response.status_code == 403
    assert "CREATE_CATALOG on the metastore" in response.json()["message"]


@pytest.mark.parametrize(
    ("method", "path", "body", "field"),
    [
        ("patch", f"{UC}/permissions/tabel/{CAT}.s.t", {"changes": []}, "securable_type"),
        ("get", f"{UC}/permissions/table/{CAT}.s", None, "full_name"),
        ("get", f"{UC}/effective-permissions/table/a.b.c.d", None, "full_name"),
        (
            "patch",
            f"{UC}/permissions/table/{CAT}.s.t",
            {"changes": [{"principal": "admins", "add": ["SELEKT"]}]},
            "changes[0].add",
        ),
        (
            "patch",
            f"{UC}/permissions/table/{CAT}.s.t",
            {"changes": [{"principal": "admins", "remove": ["CAN_USE"]}]},
            "changes[0].remove",
        ),
        (
            "post",
            "/api/2.0/agentdeploy/permissions/check",
            {"checks": [{"securable_type": "table", "full_name": f"{CAT}.s.t", "privilege": "USE"}]},
            "checks[0].privilege",
        ),
        ("patch", "/api/2.0/permissions/warehouses/whatever", {"access_control_list": []}, None),
        ("get", "/api/2.0/permissions/clusters/abc", None, "object_type"),
    ],
)
def test_bad_input_is_a_400_naming_the_field(
    world: World, method: str, path: str, body: Any, field: str | None
) -> None:
    response = world.admin.request(method.upper(), path, json=body)
    if field is None:  # an unknown object id
        assert response.status_code == 404, response.text
        return
    assert response.status_code == 400, response.text
    assert response.json()["error_code"] == "INVALID_PARAMETER_VALUE"
    assert f"'{field}'" in response.json()["message"]


def test_unknown_principal_and_securable_are_404s_naming_them(world: World) -> None:
    response = world.admin.patch(
        f"{UC}/permissions/table/{NAMES['table']}",
        json={"changes": [{"principal": f"ghost-{UID}", "add": ["SELECT"]}]},
    )
    assert response.status_code == 404 and "'changes[0].principal'" in response.json()["message"]
    response = world.admin.get(f"{UC}/permissions/table/{SCH}.ghost")
    assert response.status_code == 404 and f"Table '{SCH}.ghost' does not exist" in response.json()["message"]


def test_grants_listing_and_effective_permissions(world: World) -> None:
    caller = new_caller(world)
    change(world.admin, "catalog", CAT, caller.application_id, add=("USE_CATALOG", "SELECT"))
    change(world.admin, "schema", SCH, caller.application_id, add=("USE_SCHEMA",))
    change(world.admin, "table", NAMES["table"], caller.application_id, add=("MODIFY",))
    direct = _ok(
        world.admin.get(
            f"{UC}/permissions/table/{NAMES['table']}", params={"principal": caller.application_id}
        )
    )
    assert direct == {
        "privilege_assignments": [{"principal": caller.application_id, "privileges": ["MODIFY"]}]
    }
    effective = _ok(caller.client.get(f"{UC}/effective-permissions/table/{NAMES['table']}"))
    mine = {a["principal"]: a["privileges"] for a in effective["privilege_assignments"]}[
        caller.application_id
    ]
    assert {"privilege": "MODIFY"} in mine
    assert {"privilege": "SELECT", "inherited_from_type": "CATALOG", "inherited_from_name": CAT} in mine
    assert {"privilege": "USE_SCHEMA", "inherited_from_type": "SCHEMA", "inherited_from_name": SCH} in mine
    # A caller who may not manage the table sees only its own (and its groups') assignments.
    other = new_caller(world)
    change(world.admin, "table", NAMES["table"], other.application_id, add=("SELECT",))
    seen = _ok(caller.client.get(f"{UC}/permissions/table/{NAMES['table']}"))["privilege_assignments"]
    assert [a["principal"] for a in seen] == [caller.application_id]
