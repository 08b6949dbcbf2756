"""`PrincipalSecret`: an agent service principal's OAuth client secret, kept by the orchestration
(never in the endpoint or the worker). Flows use it to mint short-lived access tokens."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import httpx
from prefect.blocks.core import Block
from pydantic import Field, SecretStr

from agentdeploy.errors import Unauthenticated, Unavailable
from agentdeploy.naming import principal_block_name

__all__ = ["PrincipalSecret", "block_name_for", "MintedToken"]


def block_name_for(application_id: str) -> str:
    """One block per principal."""
    return principal_block_name(application_id)


class MintedToken:
    __slots__ = ("access_token", "expires_at")

    def __init__(self, access_token: str, expires_at: datetime) -> None:
        self.access_token = access_token
        self.expires_at = expires_at

    def __repr__(self) -> str:
        return f"MintedToken(expires_at={self.expires_at.isoformat()})"


class PrincipalSecret(Block):
    """OAuth M2M client credentials of one agent service principal."""

    _block_type_name = "agentdeploy Principal Secret"
    _block_type_slug = "agentdeploy-principal-secret"
    _description = "OAuth client id and secret of an agent's service principal, used to mint its tokens."

    host: str = Field(description="URL of the agentdeploy server.")
    principal_id: str = Field(description="The service principal's SCIM id.")
    client_id: str = Field(description="The service principal's application id (OAuth client id).")
    secret_id: str = Field(description="Id of the OAuth secret at the server (for rotation and deletion).")
    client_secret: SecretStr = Field(description="The OAuth client secret.")
    created_at: datetime = Field(default_factory=lambda: datetime.now(UTC),
                                 description="When the secret was created (it is rotated on a longer period).")

    def mint_token(self, *, timeout: float = 30.0) -> MintedToken:
        """A fresh access token through the OAuth client-credentials flow (`POST /oidc/v1/token`)."""
        try:
            response = httpx.post(
                f"{self.host.rstrip('/')}/oidc/v1/token",
                data={"grant_type": "client_credentials", "scope": "all-apis"},
                auth=(self.client_id, self.client_secret.get_secret_value()),
                timeout=timeout,
            )
        except httpx.TransportError as exc:
            raise Unavailable(f"Cannot reach {self.host} to mint a token: {exc.__class__.__name__}.") from None
        if response.status_code in (400, 401, 403):
            raise Unauthenticated(f"The OAuth secret of principal {self.client_id} was refused.")
        if response.status_code >= 500:
            raise Unavailable(f"The token endpoint answered {response.status_code}.")
        body = response.json()
        expires_at = datetime.now(UTC) + timedelta(seconds=int(body["expires_in"]))
        return MintedToken(body["access_token"], expires_at)
