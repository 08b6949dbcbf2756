from __future__ import annotations

import pytest

from agentdeploy.errors import InvalidParameterValue
from agentdeploy.naming import (
    endpoint_name_for,
    feedback_model_name_for,
    inference_table_prefix_for,
    served_entity_name_for,
)


def test_names_follow_the_reference_rules() -> None:
    assert endpoint_name_for("main.agents.support_bot") == "agents_main-agents-support_bot"
    assert served_entity_name_for("main.agents.support_bot", 3) == "main-agents-support_bot_3"
    assert feedback_model_name_for("main.agents.support_bot") == "main.agents.feedback"
    assert inference_table_prefix_for("main.agents.support_bot") == "support_bot"


def test_long_names_are_cut_to_63_characters_without_trailing_separators() -> None:
    model = "cat.sch." + "m" * 47 + "_" + "x" * 30
    endpoint = endpoint_name_for(model)
    assert len(endpoint) <= 63 and endpoint.startswith("agents_cat-sch-")
    assert not endpoint.endswith(("_", "-"))
    served = served_entity_name_for(model, 12)
    assert len(served) <= 63 and served.endswith("_12")
    # the cut lands right after a '_' here: it is stripped, as the reference does
    cut = "cat.sch." + "m" * 48 + "_tail"
    assert endpoint_name_for(cut) == "agents_cat-sch-" + "m" * 48


@pytest.mark.parametrize("bad", ["two.parts", "a.b.c.d", "main.agents.bad name", "", "main..x"])
def test_model_names_must_have_three_parts(bad: str) -> None:
    with pytest.raises(InvalidParameterValue, match="model_name"):
        endpoint_name_for(bad)
