"""`agentdeploy` commands for the catalog, warehouses and grants.

    agentdeploy catalogs list | create NAME | delete NAME [--force]
    agentdeploy schemas list CATALOG | create CATALOG.SCHEMA | delete CATALOG.SCHEMA [--force]
    agentdeploy warehouses list | create NAME | delete NAME_OR_ID
    agentdeploy grant SELECT[,PRIV...] on table main.docs.faq to reviewer
    agentdeploy revoke SELECT on table main.docs.faq from reviewer
    agentdeploy permissions show table main.docs.faq

Grants use `/api/2.1/unity-catalog/permissions/{type}/{name}` for every securable type
(workspace objects by name too), so one syntax covers tables, warehouses and secret scopes.
"""

from __future__ import annotations

from typing import Any

import typer

from agentdeploy.cli.output import connect, console, errors_as_exit, table
from agentdeploy.errors import NotFound

__all__ = ["register"]

UC = "/api/2.1/unity-catalog"

catalogs = typer.Typer(help="Unity Catalog catalogs.", no_args_is_help=True)
schemas = typer.Typer(help="Schemas inside a catalog.", no_args_is_help=True)
warehouses = typer.Typer(help="SQL warehouses (DuckDB in the server).", no_args_is_help=True)
permissions = typer.Typer(help="Grants on a securable.", no_args_is_help=True)


def _privileges(value: str) -> list[str]:
    out = [p.strip().upper() for p in value.split(",") if p.strip()]
    if not out:
        raise typer.BadParameter("name at least one privilege, e.g. SELECT or USE_CATALOG,USE_SCHEMA")
    return out


def _word(given: str, expected: str) -> None:
    if given.lower() != expected:
        raise typer.BadParameter(f"expected the word '{expected}', got {given!r}")


# Catalogs --------------------------------------------------------------------------------------
@catalogs.command("list")
def catalogs_list() -> None:
    """Catalogs you may use."""
    with errors_as_exit(), connect() as api:
        rows = api.get(f"{UC}/catalogs").get("catalogs", [])
    table(
        "Catalogs",
        ["name", "owner", "comment"],
        [[c["name"], c.get("owner"), c.get("comment")] for c in rows],
    )


@catalogs.command("create")
def catalogs_create(name: str, comment: str = typer.Option("", help="A description.")) -> None:
    """Create a catalog (admins)."""
    with errors_as_exit(), connect() as api:
        info = api.post(f"{UC}/catalogs", json={"name": name, "comment": comment or None})
    console.print(f"created catalog [bold]{info['full_name']}[/bold]")


@catalogs.command("delete")
def catalogs_delete(
    name: str, force: bool = typer.Option(False, help="Also delete its schemas and objects.")
) -> None:
    """Delete a catalog."""
    with errors_as_exit(), connect() as api:
        api.delete(f"{UC}/catalogs/{name}", params={"force": str(force).lower()})
    console.print(f"deleted catalog [bold]{name}[/bold]")


# Schemas ---------------------------------------------------------------------------------------
@schemas.command("list")
def schemas_list(catalog: str) -> None:
    """Schemas of a catalog that you may use."""
    with errors_as_exit(), connect() as api:
        rows = api.get(f"{UC}/schemas", params={"catalog_name": catalog}).get("schemas", [])
    table(
        f"Schemas in {catalog}",
        ["full_name", "owner", "comment"],
        [[s["full_name"], s.get("owner"), s.get("comment")] for s in rows],
    )


@schemas.command("create")
def schemas_create(full_name: str, comment: str = typer.Option("", help="A description.")) -> None:
    """Create CATALOG.SCHEMA (USE_CATALOG and CREATE_SCHEMA on the catalog)."""
    catalog_name, dot, name = full_name.partition(".")
    if not dot:
        raise typer.BadParameter("give the schema as CATALOG.SCHEMA", param_hint="FULL_NAME")
    with errors_as_exit(), connect() as api:
        info = api.post(
            f"{UC}/schemas", json={"catalog_name": catalog_name, "name": name, "comment": comment or None}
        )
    console.print(f"created schema [bold]{info['full_name']}[/bold]")


@schemas.command("delete")
def schemas_delete(
    full_name: str, force: bool = typer.Option(False, help="Also delete its objects.")
) -> None:
    """Delete a schema."""
    with errors_as_exit(), connect() as api:
        api.delete(f"{UC}/schemas/{full_name}", params={"force": str(force).lower()})
    console.print(f"deleted schema [bold]{full_name}[/bold]")


# Warehouses ------------------------------------------------------------------------------------
@warehouses.command("list")
def warehouses_list() -> None:
    """Warehouses you may see."""
    with errors_as_exit(), connect() as api:
        rows = api.get("/api/2.0/sql/warehouses").get("warehouses", [])
    table(
        "SQL warehouses",
        ["id", "name", "state", "creator"],
        [[w["id"], w["name"], w.get("state"), w.get("creator_name")] for w in rows],
    )


@warehouses.command("create")
def warehouses_create(name: str) -> None:
    """Create a warehouse (admins); prints its id."""
    with errors_as_exit(), connect() as api:
        answer = api.post("/api/2.0/sql/warehouses", json={"name": name})
    console.print(f"created warehouse [bold]{name}[/bold] with id {answer['id']}")


@warehouses.command("delete")
def warehouses_delete(name_or_id: str) -> None:
    """Delete a warehouse by name or id (CAN_MANAGE)."""
    with errors_as_exit(), connect() as api:
        rows = api.get("/api/2.0/sql/warehouses").get("warehouses", [])
        match = [w for w in rows if name_or_id in (w["id"], w["name"])]
        if not match:
            raise NotFound(f"No SQL warehouse named or with id {name_or_id!r} that you may see.")
        api.delete(f"/api/2.0/sql/warehouses/{match[0]['id']}")
    console.print(f"deleted warehouse [bold]{match[0]['name']}[/bold]")


# Grants ----------------------------------------------------------------------------------------
def _change(securable_type: str, name: str, principal: str, key: str, privileges: list[str]) -> Any:
    with errors_as_exit(), connect() as api:
        return api.patch(
            f"{UC}/permissions/{securable_type}/{name}",
            json={"changes": [{"principal": principal, key: privileges}]},
        )


def grant(
    privileges: str = typer.Argument(..., help="PRIV[,PRIV...], e.g. SELECT or USE_CATALOG,USE_SCHEMA"),
    on: str = typer.Argument(..., metavar="on"),
    securable_type: str = typer.Argument(
        ..., metavar="TYPE", help="catalog, schema, table, sql_warehouse..."
    ),
    name: str = typer.Argument(..., metavar="NAME"),
    to: str = typer.Argument(..., metavar="to"),
    principal: str = typer.Argument(..., metavar="PRINCIPAL", help="user name, group name or application id"),
) -> None:
    """Grant privileges: `agentdeploy grant SELECT on table main.docs.faq to reviewer`."""
    _word(on, "on")
    _word(to, "to")
    wanted = _privileges(privileges)
    _change(securable_type, name, principal, "add", wanted)
    console.print(f"granted {', '.join(wanted)} on {securable_type} {name} to {principal}")


def revoke(
    privileges: str = typer.Argument(..., help="PRIV[,PRIV...]"),
    on: str = typer.Argument(..., metavar="on"),
    securable_type: str = typer.Argument(..., metavar="TYPE"),
    name: str = typer.Argument(..., metavar="NAME"),
    from_: str = typer.Argument(..., metavar="from"),
    principal: str = typer.Argument(..., metavar="PRINCIPAL"),
) -> None:
    """Revoke privileges: `agentdeploy revoke SELECT on table main.docs.faq from reviewer`."""
    _word(on, "on")
    _word(from_, "from")
    wanted = _privileges(privileges)
    _change(securable_type, name, principal, "remove", wanted)
    console.print(f"revoked {', '.join(wanted)} on {securable_type} {name} from {principal}")


@permissions.command("show")
def permissions_show(
    securable_type: str = typer.Argument(..., metavar="TYPE"), name: str = typer.Argument(..., metavar="NAME")
) -> None:
    """Grants on a securable, with those inherited from its catalog and schema."""
    with errors_as_exit(), connect() as api:
        answer = api.get(f"{UC}/effective-permissions/{securable_type}/{name}")
    rows = []
    for assignment in answer.get("privilege_assignments", []):
        for p in assignment.get("privileges", []):
            inherited = (
                f"{p['inherited_from_type'].lower()} {p['inherited_from_name']}"
                if p.get("inherited_from_name")
                else ""
            )
            rows.append([assignment["principal"], p["privilege"], inherited])
    table(f"Permissions on {securable_type} {name}", ["principal", "privilege", "inherited from"], rows)


def register(app: typer.Typer) -> None:
    app.add_typer(catalogs, name="catalogs")
    app.add_typer(schemas, name="schemas")
    app.add_typer(warehouses, name="warehouses")
    app.add_typer(permissions, name="permissions")
    app.command("grant")(grant)
    app.command("revoke")(revoke)
