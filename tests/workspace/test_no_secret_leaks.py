"""Token and secret values appear in the response that creates them and nowhere else: not in any
listing, not in the server log, not in the workspace database or any other file under the home."""

from __future__ import annotations

import secrets
from pathlib import Path

import httpx
from databricks.sdk import WorkspaceClient

from tests.harness import ServerProcess
from tests.workspace.identities import SCIM, as_bearer, create_service_principal, unique

SECRETS = "/api/2.0/accounts/servicePrincipals/{}/credentials/secrets"


def test_values_never_leave_their_creating_response(server: ServerProcess, admin: httpx.Client) -> None:
    values: dict[str, str] = {}

    own = admin.post("/api/2.0/token/create", json={"comment": "leak-check"}).json()
    values["own PAT"] = own["token_value"]
    sp = create_service_principal(admin, unique("leak-sp"))
    obo = admin.post(
        "/api/2.0/token-management/on-behalf-of/tokens",
        json={"application_id": sp["applicationId"], "comment": "leak-check"},
    ).json()
    values["on-behalf-of PAT"] = obo["token_value"]
    created = admin.post(SECRETS.format(sp["id"]), json={}).json()
    values["OAuth secret"] = created["secret"]
    issued = httpx.post(
        f"{server.url}/oidc/v1/token",
        auth=(sp["applicationId"], created["secret"]),
        data={"grant_type": "client_credentials", "scope": "all-apis"},
    ).json()
    values["access token"] = issued["access_token"]
    sdk = WorkspaceClient(host=server.url, token=server.admin_token, auth_type="pat")
    values["SDK OAuth secret"] = sdk.service_principal_secrets_proxy.create(sp["id"]).secret or ""
    values["SDK PAT"] = sdk.tokens.create(comment="leak-check-sdk").token_value or ""
    # Refused credentials are not logged either.
    values["refused secret"] = "dose" + secrets.token_hex(32)
    refused = httpx.post(
        f"{server.url}/oidc/v1/token",
        auth=(sp["applicationId"], values["refused secret"]),
        data={"grant_type": "client_credentials"},
    )
    assert refused.status_code == 401
    values["refused PAT"] = "dapi" + secrets.token_hex(32)
    assert httpx.get(f"{server.url}{SCIM}/Me", headers=as_bearer(values["refused PAT"])).status_code == 401
    assert all(values.values())

    # Every credential is used once, so it passes through the server's request handling.
    for name in ("own PAT", "on-behalf-of PAT", "access token", "SDK PAT"):
        assert httpx.get(f"{server.url}{SCIM}/Me", headers=as_bearer(values[name])).status_code == 200, name
    m2m = WorkspaceClient(
        host=server.url, client_id=sp["applicationId"], client_secret=values["SDK OAuth secret"]
    )
    assert m2m.current_user.me().id == sp["id"]

    # Every listing and read of the things just made.
    listings = {
        path: admin.get(path).text
        for path in (
            "/api/2.0/token/list",
            "/api/2.0/token-management/tokens",
            SECRETS.format(sp["id"]),
            SECRETS.format(sp["applicationId"]),
            f"{SCIM}/ServicePrincipals",
            f"{SCIM}/ServicePrincipals/{sp['id']}",
            f"{SCIM}/Users",
            f"{SCIM}/Groups",
            f"{SCIM}/Me",
            "/oidc/v1/keys",
            "/oidc/.well-known/oauth-authorization-server",
        )
    }
    listings["sdk tokens.list"] = repr(list(sdk.tokens.list()))
    listings["sdk secrets.list"] = repr(list(sdk.service_principal_secrets_proxy.list(sp["id"])))
    for name, value in values.items():
        for where, text in listings.items():
            assert value not in text, f"{name} appears in {where}"

    # The log, the database (with its WAL) and every other file under the home. The credentials
    # file holds only the bootstrap admin's token, by design.
    files = [p for p in Path(server.home).rglob("*") if p.is_file() and p.name != "credentials"]
    assert server.log_path in files and any(p.name.startswith("workspace.db") for p in files)
    for path in files:
        data = path.read_bytes()
        for name, value in values.items():
            assert value.encode() not in data, f"{name} found in {path}"
