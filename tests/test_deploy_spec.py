from __future__ import annotations

import pytest
from pydantic import ValidationError

from agentdeploy.deploy_spec import DeployParameters


def test_defaults_and_target_endpoint() -> None:
    params = DeployParameters(model_name="main.agents.support_bot", model_version=2)
    assert params.target_endpoint == "agents_main-agents-support_bot"
    assert params.credentials_block == "agentdeploy-admin" and params.deploy_feedback_model
    assert DeployParameters(model_name="a.b.c", model_version=1, endpoint_name="mine").target_endpoint == "mine"


@pytest.mark.parametrize("bad", [
    {"model_name": "only.two", "model_version": 1},
    {"model_name": "a.b.c", "model_version": 0},
    {"model_name": "a.b.c", "model_version": 1, "environment_vars": {"AGENTDEPLOY_HOME": "/"}},
    {"model_name": "a.b.c", "model_version": 1, "environment_vars": {"1BAD": "x"}},
    {"model_name": "a.b.c", "model_version": 1, "unknown": True},
])
def test_bad_parameters_are_refused(bad: dict) -> None:
    with pytest.raises(ValidationError):
        DeployParameters(**bad)


def test_the_prefect_form_schema_has_descriptions() -> None:
    schema = DeployParameters.model_json_schema()
    assert schema["properties"]["model_name"]["description"]
    assert "environment_vars" in schema["properties"]
