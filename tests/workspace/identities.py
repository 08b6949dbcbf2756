"""Helpers for identity tests: make principals, secrets and tokens through the real HTTP API."""

from __future__ import annotations

import uuid
from typing import Any

import httpx

__all__ = [
    "unique",
    "create_service_principal",
    "create_secret",
    "access_token",
    "pat_for",
    "as_bearer",
    "HIDDEN_EXTENSION",
    "SCIM",
]

SCIM = "/api/2.0/preview/scim/v2"
HIDDEN_EXTENSION = "urn:agentdeploy:scim:schemas:extension:2.0:ServicePrincipal"


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def create_service_principal(
    client: httpx.Client, name: str | None = None, *, hidden: bool = False
) -> dict[str, Any]:
    body: dict[str, Any] = {"displayName": name or unique("sp")}
    if hidden:
        body[HIDDEN_EXTENSION] = {"hidden": True}
    response = client.post(f"{SCIM}/ServicePrincipals", json=body)
    assert response.status_code == 201, response.text
    return dict(response.json())


def create_secret(client: httpx.Client, principal_id: str, **body: Any) -> dict[str, Any]:
    response = client.post(
        f"/api/2.0/accounts/servicePrincipals/{principal_id}/credentials/secrets", json=body
    )
    assert response.status_code == 200, response.text
    return dict(response.json())


def access_token(base_url: str, client_id: str, client_secret: str) -> str:
    response = httpx.post(
        f"{base_url}/oidc/v1/token",
        auth=(client_id, client_secret),
        data={"grant_type": "client_credentials", "scope": "all-apis"},
    )
    assert response.status_code == 200, response.text
    return str(response.json()["access_token"])


def pat_for(admin: httpx.Client, application_id: str, *, lifetime_seconds: int | None = None) -> str:
    """A PAT owned by a service principal (token-management on-behalf-of)."""
    body: dict[str, Any] = {"application_id": application_id, "comment": "test"}
    if lifetime_seconds is not None:
        body["lifetime_seconds"] = lifetime_seconds
    response = admin.post("/api/2.0/token-management/on-behalf-of/tokens", json=body)
    assert response.status_code == 200, response.text
    return str(response.json()["token_value"])


def as_bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}
