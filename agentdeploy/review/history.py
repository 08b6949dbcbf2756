"""Past requests of an endpoint for the review app, read server-side from its payload table.

The payload table (`{catalog}.{schema}.{prefix}_payload`, Delta under the warehouse directory) is
opened with deltalake and filtered in the Arrow scan: the endpoint's agent requests (not its
feedback rows), the caller's own unless they may review everyone's, newest first.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

__all__ = ["past_requests", "question_of", "answer_of", "trace_of"]

MAX_ROWS = 50
_TEXT_CHARS = 4000


def _json(text: Any) -> Any:
    if not isinstance(text, str):
        return text
    try:
        return json.loads(text)
    except ValueError:
        return None


def _content(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(str(p.get("text", "")) for p in content if isinstance(p, dict))
    return ""


def question_of(request: Any) -> str:
    """The last user message of a chat (`messages`) or Responses (`input`) request."""
    body = _json(request)
    if not isinstance(body, dict):
        return ""
    messages = body.get("messages") or body.get("input") or []
    if isinstance(messages, str):
        return messages[:_TEXT_CHARS]
    for message in reversed(messages if isinstance(messages, list) else []):
        if isinstance(message, dict) and message.get("role") == "user":
            return _content(message.get("content"))[:_TEXT_CHARS]
    return ""


def answer_of(response: Any) -> str:
    """The answer text of a chat completion, a Responses output, or a list of streamed chunks."""
    body = _json(response)
    if isinstance(body, list):  # the chunks of a streamed request
        pieces = []
        for chunk in body:
            if isinstance(chunk, dict):
                for choice in chunk.get("choices") or []:
                    pieces.append(_content((choice.get("delta") or {}).get("content")))
                if chunk.get("type") == "response.output_text.delta":
                    pieces.append(str(chunk.get("delta", "")))
        return "".join(pieces)[:_TEXT_CHARS]
    if not isinstance(body, dict):
        return ""
    if body.get("choices"):
        choice = body["choices"][0] or {}
        return _content((choice.get("message") or {}).get("content"))[:_TEXT_CHARS]
    texts = [
        _content(item.get("content"))
        for item in body.get("output") or []
        if isinstance(item, dict) and item.get("type") == "message"
    ]
    return "".join(texts)[:_TEXT_CHARS]


def trace_of(response: Any) -> Any:
    body = _json(response)
    if isinstance(body, dict):
        return (body.get("databricks_output") or {}).get("trace")
    return None


def past_requests(table_dir: Path, *, requester: str | None, limit: int = MAX_ROWS) -> list[dict[str, Any]]:
    """Rows of the payload table at `table_dir` (none if it does not exist yet), newest first:
    `{request_id, timestamp_ms, requester, status_code, question, answer, documents}`; only
    `requester`'s when given."""
    import pyarrow.compute as pc
    from deltalake import DeltaTable

    from agentdeploy.review.traces import retrieved_documents

    if not (table_dir / "_delta_log").is_dir():
        return []
    dataset = DeltaTable(str(table_dir)).to_pyarrow_dataset()
    condition = pc.field("served_entity_name") != "feedback"
    condition = condition | pc.field("served_entity_name").is_null()
    if requester is not None:
        condition = condition & (pc.field("requester") == requester)
    table = dataset.to_table(
        columns=["databricks_request_id", "timestamp_ms", "requester", "status_code", "request", "response"],
        filter=condition,
    )
    if table.num_rows == 0:
        return []
    table = table.sort_by([("timestamp_ms", "descending")]).slice(0, limit)
    out = []
    for row in table.to_pylist():
        out.append(
            {
                "request_id": row["databricks_request_id"],
                "timestamp_ms": row["timestamp_ms"],
                "requester": row["requester"],
                "status_code": row["status_code"],
                "question": question_of(row["request"]),
                "answer": answer_of(row["response"]),
                "documents": retrieved_documents(trace_of(row["response"])),
            }
        )
    return out
