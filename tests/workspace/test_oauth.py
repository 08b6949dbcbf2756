"""OAuth M2M over real HTTP: discovery, JWKS, the token endpoint and service principal secrets."""

from __future__ import annotations

import sqlite3
import time
from typing import Any

import httpx
import jwt
import pytest

from tests.harness import ServerProcess
from tests.workspace.identities import (
    SCIM,
    access_token,
    as_bearer,
    create_secret,
    create_service_principal,
    pat_for,
    unique,
)

SECRETS = "/api/2.0/accounts/servicePrincipals/{}/credentials/secrets"


@pytest.fixture(scope="module")
def agent(server: ServerProcess) -> dict[str, Any]:
    with server.client() as admin:
        sp = create_service_principal(admin, unique("oauth-agent"))
        created = create_secret(admin, sp["id"])
    return {"sp": sp, "secret": created["secret"], "secret_id": created["id"]}


def token_request(server: ServerProcess, **kwargs: Any) -> httpx.Response:
    return httpx.post(f"{server.url}/oidc/v1/token", **kwargs)


def test_discovery_chain_points_at_this_server(server: ServerProcess) -> None:
    config = httpx.get(f"{server.url}/.well-known/databricks-config").json()
    assert config == {"oidc_endpoint": f"{server.url}/oidc"}
    meta = httpx.get(f"{config['oidc_endpoint']}/.well-known/oauth-authorization-server").json()
    assert meta["token_endpoint"] == f"{server.url}/oidc/v1/token"
    assert meta["jwks_uri"] == f"{server.url}/oidc/v1/keys"
    assert meta["issuer"] == f"{server.url}/oidc"
    assert "client_credentials" in meta["grant_types_supported"]
    assert meta["authorization_endpoint"].startswith(server.url)


def test_access_token_verifies_against_the_published_jwks(
    server: ServerProcess, agent: dict[str, Any]
) -> None:
    response = token_request(
        server,
        auth=(agent["sp"]["applicationId"], agent["secret"]),
        data={"grant_type": "client_credentials", "scope": "all-apis"},
    )
    assert response.status_code == 200
    assert response.headers["cache-control"] == "no-store"
    body = response.json()
    assert body["token_type"] == "Bearer" and body["scope"] == "all-apis"
    assert 3500 <= body["expires_in"] <= 3600
    keys = httpx.get(f"{server.url}/oidc/v1/keys").json()["keys"]
    assert len(keys) == 1 and keys[0]["kty"] == "OKP" and keys[0]["crv"] == "Ed25519" and "d" not in keys[0]
    key = jwt.PyJWK(keys[0])
    claims = jwt.decode(
        body["access_token"],
        key.key,
        algorithms=["EdDSA"],
        audience="agentdeploy-workspace",
        issuer=f"{server.url}/oidc",
    )
    assert claims["sub"] == agent["sp"]["applicationId"]
    assert claims["exp"] - claims["iat"] == body["expires_in"]
    me = httpx.get(f"{server.url}{SCIM}/Me", headers=as_bearer(body["access_token"])).json()
    assert me["id"] == agent["sp"]["id"]


def test_client_credentials_in_the_form_body_are_accepted(
    server: ServerProcess, agent: dict[str, Any]
) -> None:
    response = token_request(
        server,
        data={
            "grant_type": "client_credentials",
            "client_id": agent["sp"]["applicationId"],
            "client_secret": agent["secret"],
        },
    )
    assert response.status_code == 200 and response.json()["access_token"].count(".") == 2


@pytest.mark.parametrize(
    "credentials",
    [("wrong-secret",), ("unknown-client",), ("other-principals-secret",), ("empty",)],
    ids=lambda c: c[0],
)
def test_bad_client_credentials_are_401_invalid_client(
    server: ServerProcess, admin: httpx.Client, agent: dict[str, Any], credentials: tuple[str]
) -> None:
    app_id, secret = agent["sp"]["applicationId"], agent["secret"]
    case = credentials[0]
    if case == "wrong-secret":
        auth = (app_id, secret[:-1] + ("0" if secret[-1] != "0" else "1"))
    elif case == "unknown-client":
        auth = ("00000000-0000-0000-0000-000000000000", secret)
    elif case == "other-principals-secret":
        other = create_service_principal(admin)
        auth = (other["applicationId"], secret)  # a valid secret, but not this client's
    else:
        auth = ("", "")
    response = token_request(server, auth=auth, data={"grant_type": "client_credentials"})
    assert response.status_code == 401
    assert response.json()["error"] == "invalid_client"
    assert secret not in response.text


def test_missing_client_authentication_is_401(server: ServerProcess) -> None:
    response = token_request(server, data={"grant_type": "client_credentials"})
    assert response.status_code == 401 and response.json()["error"] == "invalid_client"
    assert "WWW-Authenticate" in response.headers


@pytest.mark.parametrize(
    "data,error",
    [
        ({"grant_type": "password", "username": "a", "password": "b"}, "unsupported_grant_type"),
        ({"grant_type": "refresh_token", "refresh_token": "x"}, "unsupported_grant_type"),
        ({}, "invalid_request"),
        ({"grant_type": "client_credentials", "scope": "admin-everything"}, "invalid_scope"),
    ],
)
def test_bad_token_requests_are_400(
    server: ServerProcess, agent: dict[str, Any], data: dict[str, str], error: str
) -> None:
    response = token_request(server, auth=(agent["sp"]["applicationId"], agent["secret"]), data=data)
    assert response.status_code == 400
    assert response.json()["error"] == error


def test_a_json_token_request_is_400(server: ServerProcess, agent: dict[str, Any]) -> None:
    response = token_request(
        server,
        auth=(agent["sp"]["applicationId"], agent["secret"]),
        json={"grant_type": "client_credentials"},
    )
    assert response.status_code == 400 and response.json()["error"] == "invalid_request"
    garbage = token_request(
        server, content=b"\xff\xfe" * 10, headers={"Content-Type": "application/x-www-form-urlencoded"}
    )
    assert garbage.status_code == 400


def test_secret_value_is_returned_once_and_listing_hides_it(
    server: ServerProcess, admin: httpx.Client
) -> None:
    sp = create_service_principal(admin)
    created = create_secret(admin, sp["id"], lifetime="3600s")
    assert created["secret"] and created["status"] == "ACTIVE"
    listed = admin.get(SECRETS.format(sp["id"])).json()["secrets"]
    assert [s["id"] for s in listed] == [created["id"]]
    assert created["secret"] not in str(listed) and "secret" not in listed[0]
    # The create answer carries an expiry matching the lifetime asked for.
    assert listed[0]["expire_time"] > listed[0]["create_time"]


def test_secrets_are_reachable_by_application_id_too(server: ServerProcess, admin: httpx.Client) -> None:
    sp = create_service_principal(admin)
    created = create_secret(admin, sp["applicationId"])
    assert [s["id"] for s in admin.get(SECRETS.format(sp["applicationId"])).json()["secrets"]] == [
        created["id"]
    ]
    assert [s["id"] for s in admin.get(SECRETS.format(sp["id"])).json()["secrets"]] == [created["id"]]


def test_deleted_secret_no_longer_issues_tokens(server: ServerProcess, admin: httpx.Client) -> None:
    sp = create_service_principal(admin)
    keep, drop = create_secret(admin, sp["id"]), create_secret(admin, sp["id"])
    access_token(server.url, sp["applicationId"], drop["secret"])
    assert admin.delete(SECRETS.format(sp["id"]) + f"/{drop['id']}").status_code == 200
    refused = token_request(
        server, auth=(sp["applicationId"], drop["secret"]), data={"grant_type": "client_credentials"}
    )
    assert refused.status_code == 401
    access_token(server.url, sp["applicationId"], keep["secret"])  # the other secret still works
    assert admin.delete(SECRETS.format(sp["id"]) + f"/{drop['id']}").status_code == 404


def test_expired_secret_is_refused(server: ServerProcess, admin: httpx.Client) -> None:
    sp = create_service_principal(admin)
    created = create_secret(admin, sp["id"], lifetime="1s")
    time.sleep(1.2)
    refused = token_request(
        server, auth=(sp["applicationId"], created["secret"]), data={"grant_type": "client_credentials"}
    )
    assert refused.status_code == 401 and refused.json()["error"] == "invalid_client"


@pytest.mark.parametrize("lifetime", ["forever", "-5s", "0s", str(10**11)])
def test_bad_secret_lifetimes_are_400(admin: httpx.Client, lifetime: str) -> None:
    sp = create_service_principal(admin)
    response = admin.post(SECRETS.format(sp["id"]), json={"lifetime": lifetime})
    assert response.status_code == 400 and "lifetime" in response.json()["message"]


def test_who_may_manage_secrets(server: ServerProcess, admin: httpx.Client) -> None:
    """Admins, or the principal's creator; no one else, not even the principal itself."""
    deployer_sp = create_service_principal(admin, unique("deployer"))
    deployer = pat_for(admin, deployer_sp["applicationId"])
    stranger = pat_for(admin, create_service_principal(admin, unique("stranger"))["applicationId"])
    with server.client(deployer) as as_deployer, server.client(stranger) as as_stranger:
        # A non-admin may create a hidden (agent) principal and manages its secrets.
        agent = create_service_principal(as_deployer, unique("agent"), hidden=True)
        created = create_secret(as_deployer, agent["id"])
        assert as_deployer.get(SECRETS.format(agent["id"])).status_code == 200
        # Someone else may not, and the 403 names the missing membership.
        for response in (
            as_stranger.post(SECRETS.format(agent["id"]), json={}),
            as_stranger.get(SECRETS.format(agent["id"])),
            as_stranger.delete(SECRETS.format(agent["id"]) + f"/{created['id']}"),
        ):
            assert response.status_code == 403 and "admins" in response.json()["message"]
        # Nor may the deployer touch a principal it did not create.
        denied = as_deployer.post(SECRETS.format(deployer_sp["id"]), json={})
        assert denied.status_code == 403
        assert as_deployer.delete(SECRETS.format(agent["id"]) + f"/{created['id']}").status_code == 200
    assert admin.get(SECRETS.format(agent["id"])).json().get("secrets", []) == []


def test_secrets_of_an_unknown_principal_are_404(admin: httpx.Client) -> None:
    assert admin.get(SECRETS.format("999999")).status_code == 404
    assert admin.post(SECRETS.format("00000000-0000-0000-0000-000000000000"), json={}).status_code == 404


def test_secret_changes_are_audited_without_values(server: ServerProcess, admin: httpx.Client) -> None:
    sp = create_service_principal(admin)
    created = create_secret(admin, sp["id"])
    assert admin.delete(SECRETS.format(sp["id"]) + f"/{created['id']}").status_code == 200
    with sqlite3.connect(server.home / "workspace.db") as db:
        rows = db.execute(
            "SELECT action_name, request_params FROM audit_events WHERE request_params LIKE ?",
            (f"%{created['id']}%",),
        ).fetchall()
    assert sorted(r[0] for r in rows) == ["createServicePrincipalSecret", "deleteServicePrincipalSecret"]
    assert all(created["secret"] not in r[1] for r in rows)
