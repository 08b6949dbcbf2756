from __future__ import annotations

import pytest

from agentdeploy.errors import InvalidParameterValue
from agentdeploy.workspace.agent_resources import (
    Requirement,
    declared_requirements,
    grants_for,
    secret_scope_requirements,
)

RESOURCES = {
    "api_version": "1",
    "databricks": {
        "sql_warehouse": [{"name": "wh1"}],
        "table": [{"name": "main.docs.faq"}],
        "serving_endpoint": [{"name": "agents_main-agents-responder"}],
        "function": [{"name": "main.tools.lookup"}],
        "genie_space": [{"name": "g1"}],
        "vector_search_index": [{"name": "idx"}],
        "uc_connection": [{"name": "conn"}],
    },
}


def test_each_resource_type_needs_the_seed_privilege() -> None:
    got = {(r.securable_type, r.privilege) for r in declared_requirements(RESOURCES)}
    assert got == {
        ("sql_warehouse", "CAN_USE"), ("table", "SELECT"), ("serving_endpoint", "CAN_QUERY"),
        ("function", "EXECUTE"), ("genie_space", "CAN_RUN"), ("vector_search_index", "CAN_USE"),
        ("connection", "USE_CONNECTION"),
    }


def test_grants_are_least_privilege_plus_parents_and_nothing_else() -> None:
    grants = grants_for(declared_requirements({"databricks": {"table": [{"name": "main.docs.faq"}]}}))
    assert grants == [
        Requirement("catalog", "main", "USE_CATALOG"),
        Requirement("schema", "main.docs", "USE_SCHEMA"),
        Requirement("table", "main.docs.faq", "SELECT"),
    ]
    assert all(g.privilege not in {"MODIFY", "ALL_PRIVILEGES", "MANAGE"} for g in grants_for(declared_requirements(RESOURCES)))


@pytest.mark.parametrize("kind", ["app", "lakebase", "uc_model_service"])
def test_unsupported_resource_types_are_refused_by_name(kind: str) -> None:
    with pytest.raises(InvalidParameterValue, match=kind):
        declared_requirements({"databricks": {kind: [{"name": "x"}], "table": [{"name": "main.docs.faq"}]}})


def test_secret_references_need_read_on_their_scope() -> None:
    env = {"A": "{{secrets/vendor/api_key}}", "B": "plain", "C": "{{ secrets/vendor/other }}", "D": "{{secrets/x/y}}"}
    assert secret_scope_requirements(env) == [Requirement("secret_scope", "vendor", "READ"),
                                              Requirement("secret_scope", "x", "READ")]
