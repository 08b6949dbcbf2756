"""Assessments: the shape of reviewers' feedback on an endpoint's requests, validated.

The feedback model (served natively by the gateway, see `serving/feedback.py`) runs
`parse_feedback` on each request; the log formatting turns the same records into assessment-log
rows. Unlike the reference it validates: an unknown request id, a rating that is not an object or
a missing source is a 400 naming the field.

Body (the Databricks docs' shape): `{"dataframe_records": [{"source": {"id", "type"},
"request_id", "text_assessments": [{"ratings": {"k": {"value", "rationale"}}, "free_text_comment",
"suggested_output"}], "retrieval_assessments": [{"position", "step_id", "ratings": {...}}]}]}`;
assessments may also be given as JSON strings.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from agentdeploy.errors import InvalidParameterValue

__all__ = ["parse_feedback", "SOURCE_TYPES"]

SOURCE_TYPES = {"human", "ai_judge", "code", "llm_judge"}
_MAX_RECORDS = 1000


def _maybe_json(field: str, value: Any) -> Any:
    if isinstance(value, str):
        try:
            return json.loads(value)
        except ValueError:
            raise InvalidParameterValue(f"'{field}' is a string but not valid JSON.") from None
    return value


def _ratings(field: str, value: Any) -> dict[str, dict[str, Any]]:
    value = _maybe_json(field, value)
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise InvalidParameterValue(f"'{field}' must be an object mapping rating names to {{value, rationale}}.")
    out: dict[str, dict[str, Any]] = {}
    for key, rating in value.items():
        if not isinstance(rating, dict):
            raise InvalidParameterValue(f"'{field}.{key}' must be an object like {{\"value\": \"positive\"}}.")
        if "value" not in rating:
            raise InvalidParameterValue(f"'{field}.{key}.value' is required.")
        rationale = rating.get("rationale")
        if rationale is not None and not isinstance(rationale, str):
            raise InvalidParameterValue(f"'{field}.{key}.rationale' must be a string.")
        out[str(key)] = {"value": rating["value"], "rationale": rationale}
    return out


def _list_of_objects(field: str, value: Any) -> list[dict[str, Any]]:
    value = _maybe_json(field, value)
    if value is None:
        return []
    if isinstance(value, dict):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(v, dict) for v in value):
        raise InvalidParameterValue(f"'{field}' must be an object or a list of objects.")
    return value


def parse_feedback(body: Any, is_known_request: Callable[[str], bool]) -> list[dict[str, Any]]:
    """Validated, normalised feedback records; raises InvalidParameterValue naming the field."""
    if not isinstance(body, dict) or "dataframe_records" not in body:
        raise InvalidParameterValue("The feedback body must be an object with 'dataframe_records'.")
    records = body["dataframe_records"]
    if not isinstance(records, list) or not records:
        raise InvalidParameterValue("'dataframe_records' must be a non-empty list.")
    if len(records) > _MAX_RECORDS:
        raise InvalidParameterValue(f"'dataframe_records' may hold at most {_MAX_RECORDS} records.")
    out = []
    for i, record in enumerate(records):
        at = f"dataframe_records[{i}]"
        if not isinstance(record, dict):
            raise InvalidParameterValue(f"'{at}' must be an object.")
        source = _maybe_json(f"{at}.source", record.get("source"))
        if not isinstance(source, dict) or not isinstance(source.get("id"), str) or not source["id"]:
            raise InvalidParameterValue(f"'{at}.source' with a non-empty 'id' is required.")
        source_type = source.get("type", "human")
        if source_type not in SOURCE_TYPES:
            raise InvalidParameterValue(f"'{at}.source.type' must be one of {sorted(SOURCE_TYPES)}.")
        request_id = record.get("request_id")
        if not isinstance(request_id, str) or not request_id:
            raise InvalidParameterValue(f"'{at}.request_id' is required.")
        if not is_known_request(request_id):
            raise InvalidParameterValue(f"'{at}.request_id' {request_id[:80]!r} was never served by this endpoint.")
        text = []
        for j, item in enumerate(_list_of_objects(f"{at}.text_assessments", record.get("text_assessments"))):
            field = f"{at}.text_assessments[{j}]"
            comment = item.get("free_text_comment")
            if comment is not None and not isinstance(comment, str):
                raise InvalidParameterValue(f"'{field}.free_text_comment' must be a string.")
            suggested = item.get("suggested_output")
            if suggested is not None and not isinstance(suggested, str):
                raise InvalidParameterValue(f"'{field}.suggested_output' must be a string.")
            text.append({"ratings": _ratings(f"{field}.ratings", item.get("ratings")),
                         "free_text_comment": comment, "suggested_output": suggested})
        retrieval = []
        for j, item in enumerate(_list_of_objects(f"{at}.retrieval_assessments",
                                                  record.get("retrieval_assessments"))):
            field = f"{at}.retrieval_assessments[{j}]"
            position = item.get("position")
            if position is not None and (not isinstance(position, int) or isinstance(position, bool) or position < 0):
                raise InvalidParameterValue(f"'{field}.position' must be a non-negative integer.")
            step_id = item.get("step_id")
            if step_id is not None and not isinstance(step_id, str):
                raise InvalidParameterValue(f"'{field}.step_id' must be a string.")
            retrieval.append({"position": position, "step_id": step_id,
                              "ratings": _ratings(f"{field}.ratings", item.get("ratings")),
                              "free_text_comment": item.get("free_text_comment")})
        if not text and not retrieval:
            raise InvalidParameterValue(f"'{at}' holds no 'text_assessments' or 'retrieval_assessments'.")
        out.append({"source": {"id": source["id"], "type": source_type}, "request_id": request_id,
                    "text_assessments": text, "retrieval_assessments": retrieval})
    return out
