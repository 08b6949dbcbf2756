"""OAuth M2M: discovery, JWKS, the client-credentials token endpoint, and service principal secrets.

The databricks-sdk's `oauth-m2m` login walks exactly this path:

    GET  /.well-known/databricks-config              -> {"oidc_endpoint": "<host>/oidc"}
    GET  /oidc/.well-known/oauth-authorization-server -> {"token_endpoint": ..., ...}
    POST /oidc/v1/token   (HTTP basic client auth, grant_type=client_credentials&scope=all-apis)

Client id = the service principal's application id; client secret = an OAuth secret made with
`POST /api/2.0/accounts/servicePrincipals/{id}/credentials/secrets` (the SDK's
`service_principal_secrets_proxy`), whose value is returned once and stored only as a keyed hash.
Token endpoint errors use the OAuth shape `{"error", "error_description"}` (RFC 6749 §5.2).
"""

from __future__ import annotations

import base64
import binascii
import logging
import re
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qs, unquote

from fastapi import APIRouter, Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, field_validator
from sqlalchemy.orm import Session

from agentdeploy.errors import InvalidParameterValue, PermissionDenied, Unauthenticated
from agentdeploy.workspace import audit, identity, oauth
from agentdeploy.workspace.api.deps import Caller, WorkspaceDep, get_workspace
from agentdeploy.workspace.api.scim import service_principal_by_ref
from agentdeploy.workspace.context import Workspace
from agentdeploy.workspace.identity import ADMINS, Identity, Principal

__all__ = ["router", "DEFAULT_SECRET_LIFETIME_S", "SUPPORTED_SCOPES"]

log = logging.getLogger("agentdeploy.oauth")
router = APIRouter(tags=["oauth"])

DEFAULT_SECRET_LIFETIME_S = 730 * 24 * 3600  # Databricks' default: 730 days
MAX_SECRET_LIFETIME_S = DEFAULT_SECRET_LIFETIME_S
# Every token grants what its principal's grants allow; `all-apis` is the one scope we issue.
SUPPORTED_SCOPES = frozenset({"all-apis"})
MAX_FORM_BYTES = 16 * 1024
_NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}


def _base_url(request: Request) -> str:
    return str(request.base_url).rstrip("/")


# Discovery --------------------------------------------------------------------------------------
@router.get("/.well-known/databricks-config", include_in_schema=False)
def databricks_config(request: Request) -> dict[str, Any]:
    return {"oidc_endpoint": f"{_base_url(request)}/oidc"}


@router.get("/oidc/.well-known/oauth-authorization-server", include_in_schema=False)
@router.get("/oidc/.well-known/openid-configuration", include_in_schema=False)
def authorization_server(request: Request) -> dict[str, Any]:
    base = _base_url(request)
    ws = get_workspace(request)
    return {
        "issuer": ws.issuer.issuer,
        "token_endpoint": f"{base}/oidc/v1/token",
        # No interactive (user) login: the endpoint is listed because clients expect the key.
        "authorization_endpoint": f"{base}/oidc/v1/authorize",
        "jwks_uri": f"{base}/oidc/v1/keys",
        "grant_types_supported": ["client_credentials"],
        "response_types_supported": ["token"],
        "token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post"],
        "scopes_supported": sorted(SUPPORTED_SCOPES),
        "id_token_signing_alg_values_supported": ["EdDSA"],
    }


@router.get("/oidc/v1/keys", include_in_schema=False)
def jwks(request: Request) -> dict[str, Any]:
    return get_workspace(request).issuer.jwks()


# Token endpoint ---------------------------------------------------------------------------------
class OAuthError(Exception):
    def __init__(self, status: int, error: str, description: str) -> None:
        super().__init__(description)
        self.status, self.error, self.description = status, error, description

    def response(self) -> JSONResponse:
        headers = dict(_NO_STORE)
        if self.error == "invalid_client":
            headers["WWW-Authenticate"] = 'Basic realm="agentdeploy"'
        return JSONResponse(
            {"error": self.error, "error_description": self.description},
            status_code=self.status,
            headers=headers,
        )


def _client_credentials(authorization: str | None, form: dict[str, str]) -> tuple[str, str]:
    """(client_id, client_secret) from HTTP basic auth, else from the form body."""
    if authorization and authorization.lower().startswith("basic "):
        try:
            decoded = base64.b64decode(authorization[6:].strip(), validate=True).decode()
        except (binascii.Error, UnicodeDecodeError):
            raise OAuthError(401, "invalid_client", "Malformed HTTP basic client credentials.") from None
        client_id, sep, client_secret = decoded.partition(":")
        if not sep:
            raise OAuthError(401, "invalid_client", "Malformed HTTP basic client credentials.")
        # RFC 6749 §2.3.1 form-encodes both before basic auth; most clients (requests) do not.
        return unquote(client_id), unquote(client_secret)
    client_id, client_secret = form.get("client_id", ""), form.get("client_secret", "")
    if not client_id or not client_secret:
        raise OAuthError(
            401,
            "invalid_client",
            "Client authentication required: HTTP basic auth with client id and secret.",
        )
    return client_id, client_secret


def _parse_form(raw: bytes, content_type: str) -> dict[str, str]:
    if len(raw) > MAX_FORM_BYTES:
        raise OAuthError(400, "invalid_request", "The request body is too large.")
    if content_type.split(";")[0].strip().lower() not in ("application/x-www-form-urlencoded", ""):
        raise OAuthError(
            400, "invalid_request", "Send the token request as application/x-www-form-urlencoded."
        )
    try:
        parsed = parse_qs(
            raw.decode("utf-8"), keep_blank_values=True, strict_parsing=False, max_num_fields=32
        )
    except (UnicodeDecodeError, ValueError):
        raise OAuthError(400, "invalid_request", "Malformed form body.") from None
    form: dict[str, str] = {}
    for key, values in parsed.items():
        if len(values) != 1:
            raise OAuthError(400, "invalid_request", f"Parameter {key[:40]!r} is repeated.")
        form[key] = values[0]
    return form


def _issue(ws: Workspace, client_id: str, client_secret: str, scope: str) -> dict[str, Any]:
    with ws.read() as session:
        try:
            principal = oauth.verify_client_secret(session, ws.hash_key, client_id, client_secret)
        except Unauthenticated:
            raise OAuthError(401, "invalid_client", "Invalid client credentials.") from None
        issued = ws.issuer.issue(principal, scope=scope)
    return {
        "access_token": issued.access_token,
        "token_type": "Bearer",
        "expires_in": issued.expires_in,
        "scope": scope,
    }


@router.post("/oidc/v1/token", include_in_schema=False)
async def token(request: Request) -> JSONResponse:
    try:
        form = _parse_form(await request.body(), request.headers.get("content-type", ""))
        grant_type = form.get("grant_type", "")
        if grant_type != "client_credentials":
            raise OAuthError(
                400,
                "unsupported_grant_type" if grant_type else "invalid_request",
                "Only grant_type=client_credentials is supported."
                if grant_type
                else "Missing grant_type; send grant_type=client_credentials.",
            )
        requested = form.get("scope", "").split() or ["all-apis"]
        unknown = [s for s in requested if s not in SUPPORTED_SCOPES]
        if unknown:
            raise OAuthError(400, "invalid_scope", f"Unsupported scope {unknown[0][:40]!r}; use 'all-apis'.")
        client_id, client_secret = _client_credentials(request.headers.get("authorization"), form)
        body = await run_in_threadpool(
            _issue, get_workspace(request), client_id, client_secret, " ".join(requested)
        )
    except OAuthError as exc:
        log.info("token request refused: %s", exc.error)  # never the credentials
        return exc.response()
    return JSONResponse(body, headers=_NO_STORE)


# Service principal secrets ----------------------------------------------------------------------
class SecretCreate(BaseModel):
    model_config = ConfigDict(extra="ignore")
    lifetime: str | None = Field(default=None, description="Seconds, e.g. '3600s'; default 730 days.")
    scopes: list[str] | None = None

    @field_validator("lifetime")
    @classmethod
    def _seconds(cls, v: str | None) -> str | None:
        if v is not None and not re.fullmatch(r"\d{1,12}s?", v.strip()):
            raise ValueError("must be a number of seconds such as '3600s'")
        return v


def _timestamp(value: datetime | None) -> str | None:
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ") if value else None


def secret_info(record: oauth.OAuthSecret) -> dict[str, Any]:
    """The listing shape (the SDK's `SecretInfo`): never the value, and only a short hash prefix."""
    info: dict[str, Any] = {
        "id": record.id,
        "create_time": _timestamp(record.created_at),
        "update_time": _timestamp(record.created_at),
        "secret_hash": record.secret_hash[:8],
        "status": "ACTIVE",
        "scopes": ["all-apis"],
    }
    if record.expires_at is not None:
        info["expire_time"] = _timestamp(record.expires_at)
    return info


def _managed_principal(session: Session, caller: Identity, ref: str, action: str) -> Principal:
    sp = service_principal_by_ref(session, ref)
    if not identity.may_manage(caller, sp):
        raise PermissionDenied(
            f"{action} OAuth secrets of the service principal {sp.display_name!r} requires membership in "
            f"the group '{ADMINS}' or being the principal's creator."
        )
    return sp


SECRETS_PATH = "/api/2.0/accounts/servicePrincipals/{principal_id}/credentials/secrets"


@router.post(SECRETS_PATH)
def create_secret(principal_id: str, body: SecretCreate, caller: Caller, ws: WorkspaceDep) -> dict[str, Any]:
    lifetime = int(body.lifetime.strip().rstrip("s")) if body.lifetime else DEFAULT_SECRET_LIFETIME_S
    if not 0 < lifetime <= MAX_SECRET_LIFETIME_S:
        raise InvalidParameterValue(f"'lifetime' must be between 1s and {MAX_SECRET_LIFETIME_S}s.")
    if body.scopes and any(s not in SUPPORTED_SCOPES for s in body.scopes):
        raise InvalidParameterValue(
            "'scopes' supports only 'all-apis' (tokens carry the principal's grants)."
        )
    with ws.change() as session:
        sp = _managed_principal(session, caller, principal_id, "Creating")
        value, record = oauth.create_oauth_secret(session, ws.hash_key, sp, lifetime_seconds=lifetime)
        audit.record(
            session,
            actor=caller,
            action="createServicePrincipalSecret",
            securable_type="service_principal",
            securable_name=sp.name,
            params={
                "secret_id": record.id,
                "application_id": sp.application_id,
                "lifetime_seconds": lifetime,
            },
        )
        return {**secret_info(record), "secret": value}


@router.get(SECRETS_PATH)
def list_secrets(principal_id: str, caller: Caller, ws: WorkspaceDep) -> dict[str, Any]:
    with ws.read() as session:
        sp = _managed_principal(session, caller, principal_id, "Listing")
        return {"secrets": [secret_info(r) for r in oauth.list_oauth_secrets(session, sp)]}


@router.delete(SECRETS_PATH + "/{secret_id}")
def delete_secret(principal_id: str, secret_id: str, caller: Caller, ws: WorkspaceDep) -> Response:
    with ws.change() as session:
        sp = _managed_principal(session, caller, principal_id, "Deleting")
        oauth.delete_oauth_secret(session, sp, secret_id)
        audit.record(
            session,
            actor=caller,
            action="deleteServicePrincipalSecret",
            securable_type="service_principal",
            securable_name=sp.name,
            params={"secret_id": secret_id, "application_id": sp.application_id},
        )
    return Response(status_code=200, content=b"{}", media_type="application/json")
