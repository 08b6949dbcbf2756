"""`agentdeploy tables | secrets | sql`: table data, secret scopes and SQL from the command line.

Everything goes through the REST API (the CLI may run on another machine than the server):
`tables create` reads the file locally with polars and uploads it as Parquet. Secret values are
read from stdin or a hidden prompt, never from the command line (argv is visible to every user
of the machine in /proc/<pid>/cmdline).
"""

from __future__ import annotations

import getpass
import io
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from agentdeploy.cli.output import connect, console, err_console, errors_as_exit, table
from agentdeploy.client import AgentDeployClient
from agentdeploy.errors import InvalidParameterValue, NotFound

__all__ = ["register", "tables_app", "secrets_app", "file_as_parquet", "default_warehouse"]

tables_app = typer.Typer(help="Delta tables of the catalog: create from a file, list.", no_args_is_help=True)
secrets_app = typer.Typer(
    help="Secret scopes, secrets and their ACLs (values never shown).", no_args_is_help=True
)


# Tables ----------------------------------------------------------------------------------------


def file_as_parquet(path: Path) -> bytes:
    """The file's rows as Parquet: `.parquet` is sent as it is, `.csv` is read with polars."""
    suffix = path.suffix.lower()
    if not path.is_file():
        raise InvalidParameterValue(f"--from: {path} is not a file.")
    if suffix in (".parquet", ".pq"):
        return path.read_bytes()
    if suffix in (".csv", ".tsv"):
        import polars as pl

        try:
            frame = pl.read_csv(path, separator="\t" if suffix == ".tsv" else ",", try_parse_dates=True)
        except Exception as exc:  # polars raises many kinds; the user needs the message
            raise InvalidParameterValue(f"--from: cannot read {path} as CSV: {exc}") from None
        out = io.BytesIO()
        frame.write_parquet(out)
        return out.getvalue()
    raise InvalidParameterValue(f"--from: {path.name} is neither .parquet nor .csv.")


@tables_app.command("create")
def tables_create(
    name: Annotated[str, typer.Argument(help="catalog.schema.table")],
    source: Annotated[Path, typer.Option("--from", help="A .parquet or .csv file.")],
    replace: bool = typer.Option(False, "--replace", help="Replace the table's rows and schema."),
    append: bool = typer.Option(False, "--append", help="Add the rows to the existing table."),
) -> None:
    """Create the Delta table NAME from a Parquet or CSV file (you need CREATE_TABLE on the schema)."""
    if replace and append:
        err_console.print("[red]error:[/red] give --replace or --append, not both.")
        raise typer.Exit(2)
    mode = "overwrite" if replace else "append" if append else "create"
    with errors_as_exit():
        body = file_as_parquet(source)
        with connect() as client:
            info = client.request(
                "POST",
                f"/api/2.0/agentdeploy/tables/{name}",
                params={"mode": mode},
                content=body,
                headers={"Content-Type": "application/vnd.apache.parquet"},
            )
    columns = ", ".join(f"{c['name']} {c['type_text']}" for c in info.get("columns", []))
    console.print(f"{info['full_name']}: {info.get('num_rows_written', 0)} row(s) written ({columns}).")


@tables_app.command("list")
def tables_list(
    catalog: str = typer.Option(None, "--catalog", help="Only this catalog."),
    schema: str = typer.Option(None, "--schema", help="Only this schema (needs --catalog)."),
) -> None:
    """The tables you may read."""
    with errors_as_exit(), connect() as client:
        params = {k: v for k, v in (("catalog_name", catalog), ("schema_name", schema)) if v}
        found = client.get("/api/2.0/agentdeploy/tables", params=params).get("tables", [])
    table(
        "Tables",
        ["name", "columns", "data"],
        [
            [
                t["full_name"],
                ", ".join(c["name"] for c in t.get("columns", [])),
                "yes" if t.get("has_data") else "no",
            ]
            for t in found
        ],
    )


# Secrets ---------------------------------------------------------------------------------------


def _read_secret_value() -> str:
    if sys.stdin.isatty():
        value = getpass.getpass("Secret value: ")
        if getpass.getpass("Again: ") != value:
            raise InvalidParameterValue("The two values differ; nothing was stored.")
    else:
        value = sys.stdin.read()
        value = value[:-1] if value.endswith("\n") else value  # `echo` adds one
    if not value:
        raise InvalidParameterValue("The secret value is empty; pipe it on stdin or type it at the prompt.")
    return value


@secrets_app.command("create-scope")
def secrets_create_scope(scope: str) -> None:
    """Create a secret scope; you manage it."""
    with errors_as_exit(), connect() as client:
        client.post("/api/2.0/secrets/scopes/create", json={"scope": scope})
    console.print(f"Created secret scope {scope}.")


@secrets_app.command("list-scopes")
def secrets_list_scopes() -> None:
    """The scopes you may read."""
    with errors_as_exit(), connect() as client:
        scopes = client.get("/api/2.0/secrets/scopes/list").get("scopes", [])
    table("Secret scopes", ["scope", "backend"], [[s["name"], s.get("backend_type", "")] for s in scopes])


@secrets_app.command("delete-scope")
def secrets_delete_scope(scope: str) -> None:
    """Delete a scope and every secret in it (needs MANAGE)."""
    with errors_as_exit(), connect() as client:
        client.post("/api/2.0/secrets/scopes/delete", json={"scope": scope})
    console.print(f"Deleted secret scope {scope}.")


@secrets_app.command("put")
def secrets_put(scope: str, key: str) -> None:
    """Store a secret, its value read from stdin (`... | agentdeploy secrets put S K`) or a prompt."""
    with errors_as_exit():
        value = _read_secret_value()
        with connect() as client:
            client.post("/api/2.0/secrets/put", json={"scope": scope, "key": key, "string_value": value})
    console.print(f"Stored {scope}/{key}.")


@secrets_app.command("list")
def secrets_list(scope: str) -> None:
    """The keys in a scope (never their values)."""
    import datetime as dt

    with errors_as_exit(), connect() as client:
        found = client.get("/api/2.0/secrets/list", params={"scope": scope}).get("secrets", [])
    table(
        f"Secrets in {scope}",
        ["key", "updated"],
        [
            [
                s["key"],
                dt.datetime.fromtimestamp(s["last_updated_timestamp"] / 1000, dt.UTC).isoformat(
                    timespec="seconds"
                ),
            ]
            for s in found
        ],
    )


@secrets_app.command("delete")
def secrets_delete(scope: str, key: str) -> None:
    """Delete one secret (needs WRITE)."""
    with errors_as_exit(), connect() as client:
        client.post("/api/2.0/secrets/delete", json={"scope": scope, "key": key})
    console.print(f"Deleted {scope}/{key}.")


@secrets_app.command("put-acl")
def secrets_put_acl(
    scope: str,
    principal: str = typer.Argument(..., help="User name, group name or service principal application id."),
    permission: str = typer.Argument(..., help="READ, WRITE or MANAGE."),
) -> None:
    """Give a principal exactly one permission on a scope (needs MANAGE)."""
    with errors_as_exit(), connect() as client:
        client.post(
            "/api/2.0/secrets/acls/put",
            json={"scope": scope, "principal": principal, "permission": permission.upper()},
        )
    console.print(f"{principal} now has {permission.upper()} on {scope}.")


@secrets_app.command("list-acls")
def secrets_list_acls(scope: str) -> None:
    """Who holds what on a scope (needs MANAGE)."""
    with errors_as_exit(), connect() as client:
        items = client.get("/api/2.0/secrets/acls/list", params={"scope": scope}).get("items", [])
    table(f"ACLs on {scope}", ["principal", "permission"], [[a["principal"], a["permission"]] for a in items])


@secrets_app.command("delete-acl")
def secrets_delete_acl(scope: str, principal: str) -> None:
    """Remove a principal's permission on a scope (needs MANAGE)."""
    with errors_as_exit(), connect() as client:
        client.post("/api/2.0/secrets/acls/delete", json={"scope": scope, "principal": principal})
    console.print(f"Removed {principal} from {scope}.")


# SQL -------------------------------------------------------------------------------------------


def default_warehouse(client: AgentDeployClient) -> str:
    """The warehouse named `demo` if you may see it, else the first one, else a clear error."""
    warehouses = client.get("/api/2.0/sql/warehouses").get("warehouses", [])
    if not warehouses:
        raise NotFound(
            "No SQL warehouse you may use; create one (POST /api/2.0/sql/warehouses) or ask "
            "for CAN_USE on one, then pass --warehouse ID."
        )
    chosen = next((w for w in warehouses if w.get("name") == "demo"), warehouses[0])
    return str(chosen["id"])


def _parameters(values: list[str]) -> list[dict[str, Any]]:
    out = []
    for item in values:
        name, sep, value = item.partition("=")
        if not sep or not name:
            raise InvalidParameterValue(f"--param {item!r} must look like name=value (or name:TYPE=value).")
        name, _, type_ = name.partition(":")
        out.append({"name": name, "value": value, "type": type_.upper() or "STRING"})
    return out


def sql(
    statement: str = typer.Argument(..., help="One read-only query in Databricks SQL."),
    warehouse: str = typer.Option(
        None, "--warehouse", help="SQL warehouse id (default: 'demo', or the first)."
    ),
    catalog: str = typer.Option(None, "--catalog", help="Catalog for names without one."),
    schema: str = typer.Option(None, "--schema", help="Schema for names without one."),
    param: Annotated[
        list[str] | None, typer.Option("--param", help="name=value or name:TYPE=value, for :name markers.")
    ] = None,
    row_limit: int = typer.Option(None, "--limit", help="At most this many rows."),
) -> None:
    """Run SQL over the catalog's Delta tables, e.g. agentdeploy sql "SELECT * FROM main.docs.faq"."""
    with errors_as_exit(), connect() as client:
        body: dict[str, Any] = {
            "statement": statement,
            "warehouse_id": warehouse or default_warehouse(client),
            "parameters": _parameters(param or []),
        }
        body.update(
            {k: v for k, v in (("catalog", catalog), ("schema", schema), ("row_limit", row_limit)) if v}
        )
        response = client.post("/api/2.0/sql/statements", json=body)
    status = response.get("status", {})
    if status.get("state") != "SUCCEEDED":
        err_console.print(
            f"[red]error:[/red] {status.get('error', {}).get('message', 'the statement failed')}"
        )
        raise typer.Exit(1)
    columns = [c["name"] for c in response["manifest"]["schema"]["columns"]]
    rows = response.get("result", {}).get("data_array") or []
    table("", columns, rows)
    more = " (truncated)" if response["manifest"].get("truncated") else ""
    console.print(f"{len(rows)} row(s){more}.")


def register(app: typer.Typer) -> None:
    app.add_typer(tables_app, name="tables")
    app.add_typer(secrets_app, name="secrets")
    app.command("sql")(sql)
