from __future__ import annotations

import json

import pytest

from agentdeploy.errors import InvalidParameterValue
from agentdeploy.tables.assessments import parse_feedback

KNOWN = {"req-1"}


def known(request_id: str) -> bool:
    return request_id in KNOWN


def docs_body(**overrides: object) -> dict:
    record = {
        "source": {"id": "reviewer@example.com", "type": "human"},
        "request_id": "req-1",
        "text_assessments": [{"ratings": {"answer_correct": {"value": "positive"},
                                          "accurate": {"value": "negative", "rationale": "stale"}},
                              "free_text_comment": "close", "suggested_output": "better"}],
        "retrieval_assessments": [{"position": 0, "ratings": {"groundedness": {"value": "positive"}}}],
    }
    record.update(overrides)
    return {"dataframe_records": [record]}


def test_the_docs_body_is_accepted_as_objects_and_as_json_strings() -> None:
    as_objects = parse_feedback(docs_body(), known)
    body = docs_body()
    record = body["dataframe_records"][0]
    record["text_assessments"] = json.dumps(record["text_assessments"])
    record["retrieval_assessments"] = json.dumps(record["retrieval_assessments"])
    assert parse_feedback(body, known) == as_objects
    text = as_objects[0]["text_assessments"][0]
    assert text["ratings"]["accurate"] == {"value": "negative", "rationale": "stale"}
    assert text["suggested_output"] == "better"
    assert as_objects[0]["retrieval_assessments"][0]["position"] == 0


@pytest.mark.parametrize(("overrides", "field"), [
    ({"request_id": "never-served"}, "request_id"),
    ({"source": None}, "source"),
    ({"source": {"type": "human"}}, "source"),
    ({"text_assessments": [{"ratings": {"answer_correct": "positive"}}]}, "ratings.answer_correct"),
    ({"text_assessments": [{"ratings": {"answer_correct": {"rationale": "x"}}}]}, "answer_correct.value"),
    ({"retrieval_assessments": [{"position": -1, "ratings": {}}]}, "position"),
    ({"text_assessments": "{not json"}, "text_assessments"),
])
def test_invalid_feedback_is_a_400_naming_the_field(overrides: dict, field: str) -> None:
    with pytest.raises(InvalidParameterValue, match=field.replace(".", r"\.")):
        parse_feedback(docs_body(**overrides), known)


def test_a_body_without_records_is_refused() -> None:
    with pytest.raises(InvalidParameterValue, match="dataframe_records"):
        parse_feedback({"inputs": []}, known)
