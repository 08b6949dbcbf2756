"""`WorkspaceCredentials`: the identity a flow acts as (host + token), and the client it gives.

`agentdeploy up` saves one for the admin (`agentdeploy-admin`); each user can save their own with
`agentdeploy login --save-block NAME`, so a run started from the Prefect UI acts as the user whose
block it names, and permission checks apply to them.
"""

from __future__ import annotations

from prefect.blocks.core import Block
from pydantic import Field, SecretStr

from agentdeploy.client import AgentDeployClient

__all__ = ["WorkspaceCredentials", "ADMIN_BLOCK"]

ADMIN_BLOCK = "agentdeploy-admin"


class WorkspaceCredentials(Block):
    """Host and token of an agentdeploy workspace identity."""

    _block_type_name = "agentdeploy Workspace Credentials"
    _block_type_slug = "agentdeploy-workspace-credentials"
    _description = "The agentdeploy server URL and the token of the identity a flow acts as."

    host: str = Field(description="URL of the agentdeploy server, e.g. http://127.0.0.1:8765.")
    token: SecretStr = Field(description="A personal access token or OAuth access token of the identity.")

    def client(self) -> AgentDeployClient:
        return AgentDeployClient(self.host, self.token.get_secret_value())
