"""Authentication over real HTTP: PAT and JWT lifecycle, forged tokens, bad input.

Every refusal is a 401 (or 400 for bad input) with the Databricks error shape, and the very next
valid call succeeds: a hostile request never takes the server down.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from collections.abc import Iterator
from typing import Any

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

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

ME = f"{SCIM}/Me"


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def b64url_json(obj: dict[str, Any]) -> str:
    return b64url(json.dumps(obj, separators=(",", ":")).encode())


def b64url_decode(part: str) -> bytes:
    return base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))


def assert_refused(server: ServerProcess, token: str, *, path: str = ME) -> httpx.Response:
    response = httpx.get(f"{server.url}{path}", headers=as_bearer(token))
    assert response.status_code == 401, response.text
    assert response.json()["error_code"] == "UNAUTHENTICATED"
    # ...and the server keeps serving: the next valid call succeeds.
    assert httpx.get(f"{server.url}{ME}", headers=as_bearer(server.admin_token)).status_code == 200
    return response


@pytest.fixture(scope="module")
def agent(server: ServerProcess) -> dict[str, Any]:
    """A service principal with an OAuth secret and a valid access token."""
    with server.client() as admin:
        sp = create_service_principal(admin, unique("auth-agent"))
        secret = create_secret(admin, sp["id"])["secret"]
    token = access_token(server.url, sp["applicationId"], secret)
    return {"sp": sp, "secret": secret, "token": token}


@pytest.fixture(scope="module")
def signing_key(server: ServerProcess) -> Ed25519PrivateKey:
    """The server's own key (read from its home) to mint tokens that differ in one claim only."""
    key = serialization.load_pem_private_key((server.home / "keys" / "oauth-signing.pem").read_bytes(), None)
    assert isinstance(key, Ed25519PrivateKey)
    return key


@pytest.fixture(scope="module")
def valid_claims(server: ServerProcess, agent: dict[str, Any]) -> dict[str, Any]:
    return dict(jwt.decode(agent["token"], options={"verify_signature": False}))


@pytest.fixture(scope="module")
def kid(agent: dict[str, Any]) -> str:
    return str(jwt.get_unverified_header(agent["token"])["kid"])


def test_valid_access_token_and_pat_authenticate(server: ServerProcess, agent: dict[str, Any]) -> None:
    me = httpx.get(f"{server.url}{ME}", headers=as_bearer(agent["token"])).json()
    assert me["userName"] == agent["sp"]["applicationId"]
    # The basic `token:<token>` form of the Databricks docs' curl works for a JWT too.
    assert httpx.get(f"{server.url}{ME}", auth=("token", agent["token"])).status_code == 200


def test_a_token_minted_with_our_key_and_claims_is_accepted(
    server: ServerProcess, signing_key: Ed25519PrivateKey, valid_claims: dict[str, Any], kid: str
) -> None:
    # The control for the forgeries below: same key, same claims -> accepted.
    token = jwt.encode(valid_claims, signing_key, algorithm="EdDSA", headers={"kid": kid})
    assert httpx.get(f"{server.url}{ME}", headers=as_bearer(token)).status_code == 200


def test_tampered_payload_is_refused(server: ServerProcess, agent: dict[str, Any]) -> None:
    header, payload, signature = agent["token"].split(".")
    claims = json.loads(b64url_decode(payload))
    claims["exp"] += 3600  # a longer life, same signature
    assert_refused(server, f"{header}.{b64url_json(claims)}.{signature}")
    flipped = signature[:-2] + ("A" if signature[-2] != "A" else "B") + signature[-1]
    assert_refused(server, f"{header}.{payload}.{flipped}")


def test_token_signed_by_another_ed25519_key_is_refused(
    server: ServerProcess, valid_claims: dict[str, Any], kid: str
) -> None:
    other = Ed25519PrivateKey.generate()
    assert_refused(server, jwt.encode(valid_claims, other, algorithm="EdDSA", headers={"kid": kid}))
    # A key hint in the header is never followed.
    jwk = {
        "kty": "OKP",
        "crv": "Ed25519",
        "x": b64url(
            other.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        ),
    }
    assert_refused(
        server,
        jwt.encode(
            valid_claims,
            other,
            algorithm="EdDSA",
            headers={"kid": kid, "jwk": jwk, "jku": f"{server.url}/evil"},
        ),
    )


def test_alg_none_is_refused(server: ServerProcess, valid_claims: dict[str, Any], kid: str) -> None:
    for alg in ("none", "None", "NONE"):
        assert_refused(
            server, f"{b64url_json({'alg': alg, 'typ': 'JWT', 'kid': kid})}.{b64url_json(valid_claims)}."
        )


def test_hs256_signed_with_the_public_key_is_refused(
    server: ServerProcess, signing_key: Ed25519PrivateKey, valid_claims: dict[str, Any], kid: str
) -> None:
    public = signing_key.public_key()
    candidates = [
        public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw),
        public.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo),
        json.dumps(httpx.get(f"{server.url}/oidc/v1/keys").json()["keys"][0]).encode(),
    ]
    for secret in candidates:
        signing_input = (
            f"{b64url_json({'alg': 'HS256', 'typ': 'JWT', 'kid': kid})}.{b64url_json(valid_claims)}"
        )
        mac = hmac.new(secret, signing_input.encode(), hashlib.sha256).digest()
        assert_refused(server, f"{signing_input}.{b64url(mac)}")


@pytest.mark.parametrize(
    "change",
    [
        {"iss": "https://evil.example/oidc"},
        {"aud": "some-other-service"},
        {"token_type": "refresh"},
        {"nbf": int(time.time()) + 3600},
        {"exp": int(time.time()) - 10},
        {"sub": "00000000-0000-0000-0000-000000000000"},
    ],
    ids=["wrong-issuer", "wrong-audience", "wrong-token-type", "not-yet-valid", "expired", "unknown-subject"],
)
def test_claims_that_do_not_check_out_are_refused(
    server: ServerProcess,
    signing_key: Ed25519PrivateKey,
    valid_claims: dict[str, Any],
    kid: str,
    change: dict[str, Any],
) -> None:
    claims = {**valid_claims, **change}
    assert_refused(server, jwt.encode(claims, signing_key, algorithm="EdDSA", headers={"kid": kid}))


@pytest.mark.parametrize("missing", ["exp", "iss", "aud", "sub", "nbf"])
def test_a_token_missing_a_required_claim_is_refused(
    server: ServerProcess,
    signing_key: Ed25519PrivateKey,
    valid_claims: dict[str, Any],
    kid: str,
    missing: str,
) -> None:
    claims = {k: v for k, v in valid_claims.items() if k != missing}
    assert_refused(server, jwt.encode(claims, signing_key, algorithm="EdDSA", headers={"kid": kid}))


@pytest.mark.parametrize(
    "token",
    ["a.b.c", "....", "dapi" + "0" * 64, "x" * 20_000, "é.é.é", "eyJhbGciOiJFZERTQSJ9.e30."],
    ids=["garbage-jwt", "dots", "unknown-pat", "huge", "non-ascii", "empty-claims"],
)
def test_garbage_tokens_are_refused_without_error(server: ServerProcess, token: str) -> None:
    response = httpx.get(f"{server.url}{ME}", headers={"Authorization": f"Bearer {token}".encode()})
    assert response.status_code == 401
    assert httpx.get(f"{server.url}{ME}", headers=as_bearer(server.admin_token)).status_code == 200


@pytest.mark.parametrize(
    "header",
    [None, "Bearer", "Basic !!!", "Basic " + base64.b64encode(b"admin:pw").decode(), "Digest x"],
    ids=["missing", "empty-bearer", "bad-base64", "not-token-user", "unknown-scheme"],
)
def test_missing_or_malformed_credentials_are_401(server: ServerProcess, header: str | None) -> None:
    headers = {"Authorization": header} if header is not None else {}
    response = httpx.get(f"{server.url}{ME}", headers=headers)
    assert response.status_code == 401 and response.json()["error_code"] == "UNAUTHENTICATED"


def test_revoked_pat_is_refused(server: ServerProcess, admin: httpx.Client) -> None:
    created = admin.post("/api/2.0/token/create", json={"comment": "to revoke"}).json()
    value = created["token_value"]
    assert httpx.get(f"{server.url}{ME}", headers=as_bearer(value)).status_code == 200
    assert (
        admin.post("/api/2.0/token/delete", json={"token_id": created["token_info"]["token_id"]}).status_code
        == 200
    )
    assert_refused(server, value)


def test_disabled_principal_is_refused_at_once_and_enabled_again(
    server: ServerProcess, admin: httpx.Client
) -> None:
    sp = create_service_principal(admin, unique("to-disable"))
    secret = create_secret(admin, sp["id"])["secret"]
    jwt_token, pat = (
        access_token(server.url, sp["applicationId"], secret),
        pat_for(admin, sp["applicationId"]),
    )
    for token in (jwt_token, pat):
        assert httpx.get(f"{server.url}{ME}", headers=as_bearer(token)).status_code == 200

    disable = {
        "schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
        "Operations": [{"op": "replace", "path": "active", "value": False}],
    }
    assert admin.patch(f"{SCIM}/ServicePrincipals/{sp['id']}", json=disable).status_code == 200
    for token in (jwt_token, pat):
        assert "disabled" in assert_refused(server, token).json()["message"]
    refused = httpx.post(
        f"{server.url}/oidc/v1/token",
        auth=(sp["applicationId"], secret),
        data={"grant_type": "client_credentials"},
    )
    assert refused.status_code == 401 and refused.json()["error"] == "invalid_client"

    enable = {"Operations": [{"op": "replace", "value": {"active": True}}]}
    assert admin.patch(f"{SCIM}/ServicePrincipals/{sp['id']}", json=enable).status_code == 200
    for token in (jwt_token, pat):
        assert httpx.get(f"{server.url}{ME}", headers=as_bearer(token)).status_code == 200


def test_deleted_principal_is_refused_at_once(server: ServerProcess, admin: httpx.Client) -> None:
    sp = create_service_principal(admin, unique("to-delete"))
    secret = create_secret(admin, sp["id"])["secret"]
    jwt_token, pat = (
        access_token(server.url, sp["applicationId"], secret),
        pat_for(admin, sp["applicationId"]),
    )
    assert httpx.get(f"{server.url}{ME}", headers=as_bearer(jwt_token)).status_code == 200
    assert admin.delete(f"{SCIM}/ServicePrincipals/{sp['id']}").status_code == 204
    assert_refused(server, jwt_token)
    assert_refused(server, pat)
    refused = httpx.post(
        f"{server.url}/oidc/v1/token",
        auth=(sp["applicationId"], secret),
        data={"grant_type": "client_credentials"},
    )
    assert refused.status_code == 401
    # A new principal with the same name does not inherit the old one's tokens.
    create_service_principal(admin, sp["displayName"])
    assert_refused(server, jwt_token)


# Expiry, with a real short lifetime --------------------------------------------------------------
@pytest.fixture(scope="module")
def short_lived_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    proc = ServerProcess(
        home=tmp_path_factory.mktemp("short-lived"), extra_env={"AGENTDEPLOY_ACCESS_TOKEN_LIFETIME_S": "5"}
    )
    proc.start()
    yield proc
    proc.stop()


def test_expired_access_token_and_pat_are_refused(short_lived_server: ServerProcess) -> None:
    server = short_lived_server
    with server.client() as admin:
        sp = create_service_principal(admin, unique("short"))
        secret = create_secret(admin, sp["id"])["secret"]
        pat = admin.post("/api/2.0/token/create", json={"comment": "short", "lifetime_seconds": 2}).json()
    issued = httpx.post(
        f"{server.url}/oidc/v1/token",
        auth=(sp["applicationId"], secret),
        data={"grant_type": "client_credentials"},
    ).json()
    assert issued["expires_in"] == 5
    token = issued["access_token"]
    assert httpx.get(f"{server.url}{ME}", headers=as_bearer(token)).status_code == 200
    assert httpx.get(f"{server.url}{ME}", headers=as_bearer(pat["token_value"])).status_code == 200
    exp = jwt.decode(token, options={"verify_signature": False})["exp"]
    time.sleep(max(0.0, exp - time.time()) + 1.1)
    for value in (token, pat["token_value"]):
        assert "expired" in assert_refused(server, value).json()["message"]


def test_disabled_user_pat_is_refused(short_lived_server: ServerProcess) -> None:
    """The bootstrap admin is the one user holding a PAT: another admin (a service principal)
    disables it, on a server of its own so no other test loses its admin."""
    server = short_lived_server
    with server.client() as admin:
        sp = create_service_principal(admin, unique("second-admin"))
        admins = admin.get(f"{SCIM}/Groups", params={"filter": 'displayName eq "admins"'}).json()[
            "Resources"
        ][0]
        add = {"Operations": [{"op": "add", "path": "members", "value": [{"value": sp["id"]}]}]}
        assert admin.patch(f"{SCIM}/Groups/{admins['id']}", json=add).status_code == 200
        me = admin.get(f"{SCIM}/Me").json()
        second = pat_for(admin, sp["applicationId"])
    with server.client(second) as other_admin:
        off = {
            "Operations": [{"op": "replace", "path": "active", "value": "False"}]
        }  # Entra ID's string form
        assert other_admin.patch(f"{SCIM}/Users/{me['id']}", json=off).status_code == 200
        refused = assert_refused_on(server, server.admin_token, check_with=second)
        assert "disabled" in refused.json()["message"]
        on = {"Operations": [{"op": "replace", "path": "active", "value": True}]}
        assert other_admin.patch(f"{SCIM}/Users/{me['id']}", json=on).status_code == 200
        assert httpx.get(f"{server.url}{ME}", headers=as_bearer(server.admin_token)).status_code == 200
        # Nobody deletes or disables themselves (an admin could lock the workspace out).
        assert other_admin.delete(f"{SCIM}/ServicePrincipals/{sp['id']}").status_code == 400


def assert_refused_on(server: ServerProcess, token: str, *, check_with: str) -> httpx.Response:
    response = httpx.get(f"{server.url}{ME}", headers=as_bearer(token))
    assert response.status_code == 401 and response.json()["error_code"] == "UNAUTHENTICATED"
    assert httpx.get(f"{server.url}{ME}", headers=as_bearer(check_with)).status_code == 200
    return response


# Bad input ------------------------------------------------------------------------------------------
BAD_NAMES = {
    "slash": "team/alpha",
    "dotdot": "up..there",
    "nul": "nul\x00byte",
    "too-long": "n" * 256,
}


@pytest.mark.parametrize(
    "kind,field", [("Users", "userName"), ("ServicePrincipals", "displayName"), ("Groups", "displayName")]
)
@pytest.mark.parametrize("bad", list(BAD_NAMES), ids=list(BAD_NAMES))
def test_bad_names_are_400_naming_the_field(admin: httpx.Client, kind: str, field: str, bad: str) -> None:
    response = admin.post(f"{SCIM}/{kind}", json={field: BAD_NAMES[bad]})
    assert response.status_code == 400, response.text
    body = response.json()
    assert body["error_code"] == "INVALID_PARAMETER_VALUE" and field in body["message"]
    assert ("255" in body["message"]) if bad == "too-long" else ("may not contain" in body["message"])
    # Nothing was created.
    listed = admin.get(f"{SCIM}/{kind}").json().get("Resources", [])
    assert all(BAD_NAMES[bad] not in (r.get("userName"), r.get("displayName")) for r in listed)


@pytest.mark.parametrize(
    "path", [f"{SCIM}/Users", f"{SCIM}/ServicePrincipals", f"{SCIM}/Groups", "/api/2.0/token/create"]
)
def test_malformed_json_is_400(admin: httpx.Client, path: str) -> None:
    response = admin.post(path, content=b'{"displayName": "x",', headers={"Content-Type": "application/json"})
    assert response.status_code == 400
    assert response.json()["message"] == "Malformed JSON in the request body."
    assert admin.get(f"{SCIM}/Me").status_code == 200


@pytest.mark.parametrize(
    "path,body,field",
    [
        (f"{SCIM}/Users", {"userName": 42}, "userName"),
        (f"{SCIM}/Users", {"userName": "a@example.com", "active": "maybe"}, "active"),
        (f"{SCIM}/ServicePrincipals", {"displayName": ["a"]}, "displayName"),
        (f"{SCIM}/Groups", {"displayName": "g", "members": "everyone"}, "members"),
        ("/api/2.0/token/create", {"lifetime_seconds": {"s": 1}}, "lifetime_seconds"),
        ("/api/2.0/token/create", {"comment": 7}, "comment"),
    ],
)
def test_fields_of_the_wrong_type_are_400_naming_them(
    admin: httpx.Client, path: str, body: Any, field: str
) -> None:
    response = admin.post(path, json=body)
    assert response.status_code == 400, response.text
    assert field in response.json()["message"]


def test_a_json_array_body_is_400(admin: httpx.Client) -> None:
    response = admin.post(f"{SCIM}/Users", json=["userName"])
    assert response.status_code == 400


def test_bad_patch_operations_are_400(admin: httpx.Client) -> None:
    sp = create_service_principal(admin)
    cases = [
        {"Operations": [{"op": "explode", "path": "active", "value": True}]},
        {"Operations": [{"op": "replace", "path": "active", "value": "sometimes"}]},
        {"Operations": [{"op": "replace", "path": "entitlements", "value": []}]},
        {"Operations": "replace"},
    ]
    for body in cases:
        response = admin.patch(f"{SCIM}/ServicePrincipals/{sp['id']}", json=body)
        assert response.status_code == 400, (body, response.text)
    assert admin.get(f"{SCIM}/ServicePrincipals/{sp['id']}").json()["active"] is True
