"""`agents.set_permissions` / `agents.get_permissions` round-trip through the SDK onto the agent's
serving endpoint, and the levels take effect on the endpoint and in the review app."""

from __future__ import annotations

import httpx
import pytest

from agentdeploy import agents
from agentdeploy.agents import PermissionLevel
from agentdeploy.client import AgentDeployClient
from agentdeploy.errors import AgentDeployError
from tests.review.conftest import AGENT_MODEL, ReviewStack
from tests.serving.conftest import create_principal


def _levels(client: AgentDeployClient) -> dict[str, PermissionLevel]:
    return {p.principal: p.permission_level for p in agents.get_permissions(AGENT_MODEL, client=client)}


def test_set_and_get_permissions_round_trip(review_stack: ReviewStack) -> None:
    owner = AgentDeployClient(review_stack.url, review_stack.server.admin_token)
    with review_stack.admin() as admin:
        user = create_principal(admin, "perm-user")
    as_user = AgentDeployClient(review_stack.url, user.token)
    query = {"messages": [{"role": "user", "content": "hi"}]}
    url = f"/serving-endpoints/{review_stack.endpoint}/invocations"
    with httpx.Client(
        base_url=review_stack.url, headers={"Authorization": f"Bearer {user.token}"}, timeout=60
    ) as http:
        assert http.post(url, json=query).status_code == 403

        for level in (
            PermissionLevel.CAN_VIEW,
            PermissionLevel.CAN_QUERY,
            PermissionLevel.CAN_REVIEW,
            PermissionLevel.CAN_MANAGE,
        ):
            agents.set_permissions(AGENT_MODEL, [user.application_id], level, client=owner)
            assert _levels(owner)[user.application_id] == level  # exactly one level: the others were replaced
            assert http.post(url, json=query).status_code == (
                403 if level == PermissionLevel.CAN_VIEW else 200
            )

        # CAN_REVIEW sees everyone's requests in the review app; CAN_QUERY only its own.
        agents.set_permissions(AGENT_MODEL, [user.application_id], "can_review", client=owner)
        review = httpx.Client(base_url=review_stack.url, timeout=60)
        review.post(f"/review/{review_stack.endpoint}/signin", data={"token": user.token})
        assert review.get(f"/review/api/{review_stack.endpoint}/me").json()["can_review"] is True
        agents.set_permissions(AGENT_MODEL, [user.application_id], PermissionLevel.CAN_QUERY, client=owner)
        assert review.get(f"/review/api/{review_stack.endpoint}/me").json()["can_review"] is False

        # Only CAN_MANAGE changes permissions.
        with pytest.raises(AgentDeployError) as denied:
            agents.set_permissions(
                AGENT_MODEL, [user.application_id], PermissionLevel.CAN_MANAGE, client=as_user
            )
        assert denied.value.status_code == 403

        agents.set_permissions(
            AGENT_MODEL, [user.application_id], PermissionLevel.NO_PERMISSIONS, client=owner
        )
        assert user.application_id not in _levels(owner)
        assert http.post(url, json=query).status_code == 403
    with pytest.raises(AgentDeployError, match="permission_level"):
        agents.set_permissions(AGENT_MODEL, [user.application_id], "CAN_FLY", client=owner)
    with pytest.raises(AgentDeployError, match="no deployment"):
        agents.set_permissions("main.tests.nothing_here", [user.application_id], "CAN_VIEW", client=owner)
