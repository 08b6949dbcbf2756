"""`agentdeploy users | service-principals | groups | tokens`: identities and credentials.

Every command is one REST call (or two, to turn a name into an id) through the one client.
A token or OAuth secret value is printed once, by the command that creates it; listings never
hold one.
"""

from __future__ import annotations

import json
from typing import Any

import typer

from agentdeploy.cli.output import connect, console, err_console, errors_as_exit, table
from agentdeploy.client import AgentDeployClient
from agentdeploy.errors import NotFound

__all__ = ["register", "users", "service_principals", "groups", "tokens"]

SCIM = "/api/2.0/preview/scim/v2"
PATCH_OP = "urn:ietf:params:scim:api:messages:2.0:PatchOp"

users = typer.Typer(help="Users of the workspace.", no_args_is_help=True)
service_principals = typer.Typer(
    help="Service principals (machine identities) and their OAuth secrets.", no_args_is_help=True
)
groups = typer.Typer(help="Groups and their members.", no_args_is_help=True)
tokens = typer.Typer(help="Your personal access tokens.", no_args_is_help=True)


def _quote(value: str) -> str:
    return json.dumps(value)  # a SCIM filter string literal


def _resolve(client: AgentDeployClient, kind: str, ref: str, *attributes: str) -> dict[str, Any]:
    """A SCIM resource by id, or by the first of `attributes` that matches exactly."""
    if ref.isdigit():
        return dict(client.get(f"{SCIM}/{kind}/{ref}"))
    for attribute in attributes:
        found = client.get(f"{SCIM}/{kind}", params={"filter": f"{attribute} eq {_quote(ref)}"}).get(
            "Resources"
        )
        if found:
            return dict(found[0])
    raise NotFound(f"No {kind[:-1].lower()} with id or {' or '.join(attributes)} {ref!r}.")


def _principal(client: AgentDeployClient, ref: str) -> dict[str, Any]:
    """A user, service principal or group by id, user name, display name or application id."""
    if ref.isdigit():
        for kind in ("Users", "ServicePrincipals", "Groups"):
            try:
                return dict(client.get(f"{SCIM}/{kind}/{ref}"))
            except NotFound:
                continue
        raise NotFound(f"No principal with id {ref}.")
    for kind, attributes in (
        ("Users", ("userName",)),
        ("ServicePrincipals", ("applicationId", "displayName")),
        ("Groups", ("displayName",)),
    ):
        try:
            return _resolve(client, kind, ref, *attributes)
        except NotFound:
            continue
    raise NotFound(f"No user, service principal or group named {ref!r}.")


def _group_names(resource: dict[str, Any]) -> str:
    return ", ".join(g.get("display", g.get("value", "")) for g in resource.get("groups", []))


# users ------------------------------------------------------------------------------------------
@users.command("list")
def users_list(
    filter: str | None = typer.Option(None, "--filter", help='SCIM filter, e.g. userName sw "ana"'),  # noqa: A002
) -> None:
    """List users."""
    with errors_as_exit(), connect() as client:
        found = client.get(f"{SCIM}/Users", params={"filter": filter} if filter else None).get(
            "Resources", []
        )
    table(
        "users",
        ["id", "userName", "displayName", "active", "groups"],
        [(u["id"], u["userName"], u.get("displayName"), u.get("active"), _group_names(u)) for u in found],
    )


@users.command("create")
def users_create(
    user_name: str = typer.Argument(..., help="The user's name, usually an email address."),
    display_name: str | None = typer.Option(None, "--display-name"),
) -> None:
    """Create a user (admins only)."""
    body: dict[str, Any] = {"userName": user_name}
    if display_name:
        body["displayName"] = display_name
    with errors_as_exit(), connect() as client:
        user = client.post(f"{SCIM}/Users", json=body)
    console.print(f"Created user {user['userName']!r} (id {user['id']}).")


@users.command("delete")
def users_delete(user: str = typer.Argument(..., help="Id or userName.")) -> None:
    """Delete a user; their tokens stop working at once."""
    with errors_as_exit(), connect() as client:
        found = _resolve(client, "Users", user, "userName")
        client.delete(f"{SCIM}/Users/{found['id']}")
    console.print(f"Deleted user {found['userName']!r}.")


# service principals -----------------------------------------------------------------------------
@service_principals.command("list")
def service_principals_list(
    filter: str | None = typer.Option(None, "--filter", help='SCIM filter, e.g. displayName sw "ci"'),  # noqa: A002
) -> None:
    """List service principals (the platform's hidden per-agent principals are left out)."""
    with errors_as_exit(), connect() as client:
        found = client.get(f"{SCIM}/ServicePrincipals", params={"filter": filter} if filter else None).get(
            "Resources", []
        )
    table(
        "service principals",
        ["id", "applicationId", "displayName", "active", "groups"],
        [
            (p["id"], p["applicationId"], p.get("displayName"), p.get("active"), _group_names(p))
            for p in found
        ],
    )


@service_principals.command("create")
def service_principals_create(display_name: str = typer.Argument(..., help="A unique display name.")) -> None:
    """Create a service principal (admins only)."""
    with errors_as_exit(), connect() as client:
        sp = client.post(f"{SCIM}/ServicePrincipals", json={"displayName": display_name})
    console.print(
        f"Created service principal {sp['displayName']!r} (id {sp['id']}, "
        f"application id {sp['applicationId']})."
    )


@service_principals.command("delete")
def service_principals_delete(
    principal: str = typer.Argument(..., help="Id, application id or display name."),
) -> None:
    """Delete a service principal; its tokens and secrets stop working at once."""
    with errors_as_exit(), connect() as client:
        found = _resolve(client, "ServicePrincipals", principal, "applicationId", "displayName")
        client.delete(f"{SCIM}/ServicePrincipals/{found['id']}")
    console.print(f"Deleted service principal {found['displayName']!r}.")


@service_principals.command("create-secret")
def service_principals_create_secret(
    principal: str = typer.Argument(..., help="Id, application id or display name."),
    lifetime_seconds: int | None = typer.Option(None, "--lifetime-seconds", help="Default: 730 days."),
) -> None:
    """Create an OAuth secret (client id = application id); the value is shown once."""
    body = {"lifetime": f"{lifetime_seconds}s"} if lifetime_seconds else {}
    with errors_as_exit(), connect() as client:
        found = _resolve(client, "ServicePrincipals", principal, "applicationId", "displayName")
        created = client.post(
            f"/api/2.0/accounts/servicePrincipals/{found['id']}/credentials/secrets", json=body
        )
    console.print(f"client_id:     {found['applicationId']}")
    typer.echo(f"client_secret: {created['secret']}")
    err_console.print("Store the secret now: it is not shown again.")


# groups -----------------------------------------------------------------------------------------
@groups.command("list")
def groups_list() -> None:
    """List groups and their members."""
    with errors_as_exit(), connect() as client:
        found = client.get(f"{SCIM}/Groups").get("Resources", [])
    table(
        "groups",
        ["id", "displayName", "members"],
        [
            (g["id"], g["displayName"], ", ".join(m.get("display", m["value"]) for m in g.get("members", [])))
            for g in found
        ],
    )


@groups.command("create")
def groups_create(display_name: str = typer.Argument(...)) -> None:
    """Create a group (admins only)."""
    with errors_as_exit(), connect() as client:
        group = client.post(f"{SCIM}/Groups", json={"displayName": display_name})
    console.print(f"Created group {group['displayName']!r} (id {group['id']}).")


@groups.command("delete")
def groups_delete(group: str = typer.Argument(..., help="Id or display name.")) -> None:
    """Delete a group."""
    with errors_as_exit(), connect() as client:
        found = _resolve(client, "Groups", group, "displayName")
        client.delete(f"{SCIM}/Groups/{found['id']}")
    console.print(f"Deleted group {found['displayName']!r}.")


def _change_membership(group: str, member: str, op: str) -> None:
    with errors_as_exit(), connect() as client:
        found = _resolve(client, "Groups", group, "displayName")
        who = _principal(client, member)
        operation: dict[str, Any] = (
            {"op": "add", "path": "members", "value": [{"value": who["id"]}]}
            if op == "add"
            else {"op": "remove", "path": f'members[value eq "{who["id"]}"]'}
        )
        client.patch(f"{SCIM}/Groups/{found['id']}", json={"schemas": [PATCH_OP], "Operations": [operation]})
    name = who.get("userName") or who.get("displayName")
    console.print(
        f"{'Added' if op == 'add' else 'Removed'} {name!r} {'to' if op == 'add' else 'from'} "
        f"group {found['displayName']!r}."
    )


@groups.command("add-member")
def groups_add_member(
    group: str = typer.Argument(..., help="Group id or display name."),
    member: str = typer.Argument(..., help="Id, userName, application id or display name."),
) -> None:
    """Add a user, service principal or group to a group."""
    _change_membership(group, member, "add")


@groups.command("remove-member")
def groups_remove_member(
    group: str = typer.Argument(..., help="Group id or display name."),
    member: str = typer.Argument(..., help="Id, userName, application id or display name."),
) -> None:
    """Remove a member from a group."""
    _change_membership(group, member, "remove")


# tokens -----------------------------------------------------------------------------------------
def _when(ms: int) -> str:
    from datetime import UTC, datetime

    return (
        "never"
        if ms is None or ms < 0
        else datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%d %H:%M UTC")
    )


@tokens.command("list")
def tokens_list() -> None:
    """List your tokens (never their values)."""
    with errors_as_exit(), connect() as client:
        infos = client.get("/api/2.0/token/list").get("token_infos", [])
    table(
        "tokens",
        ["token_id", "comment", "created", "expires"],
        [
            (
                t["token_id"],
                t.get("comment", ""),
                _when(t.get("creation_time", -1)),
                _when(t.get("expiry_time", -1)),
            )
            for t in infos
        ],
    )


@tokens.command("create")
def tokens_create(
    comment: str = typer.Option("", "--comment", help="What the token is for."),
    lifetime_seconds: int | None = typer.Option(None, "--lifetime-seconds", help="Default: no expiry."),
) -> None:
    """Create a personal access token; its value is printed once, on stdout."""
    body: dict[str, Any] = {"comment": comment}
    if lifetime_seconds is not None:
        body["lifetime_seconds"] = lifetime_seconds
    with errors_as_exit(), connect() as client:
        created = client.post("/api/2.0/token/create", json=body)
    err_console.print(
        f"Created token {created['token_info']['token_id']}; store its value now, it is not shown again:"
    )
    typer.echo(created["token_value"])  # plain stdout, so `TOKEN=$(agentdeploy tokens create)` works


@tokens.command("delete")
def tokens_delete(token_id: str = typer.Argument(...)) -> None:
    """Revoke one of your tokens; it stops working at once."""
    with errors_as_exit(), connect() as client:
        client.post("/api/2.0/token/delete", json={"token_id": token_id})
    console.print(f"Revoked token {token_id}.")


def register(app: typer.Typer) -> None:
    app.add_typer(users, name="users")
    app.add_typer(service_principals, name="service-principals")
    app.add_typer(groups, name="groups")
    app.add_typer(tokens, name="tokens")
