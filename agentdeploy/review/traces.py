"""What the review app shows of a request's MLflow trace: the retrieved documents.

A trace is `{"info": {...}, "data": {"spans": [...]}}`; a span's attributes hold JSON strings
(`mlflow.spanType` is `"\\"RETRIEVER\\""`, `mlflow.spanOutputs` the documents). Documents follow
MLflow's retriever schema: `{"page_content", "metadata": {"doc_uri", ...}, "id"}`.
"""

from __future__ import annotations

import json
from typing import Any

__all__ = ["retrieved_documents", "MAX_DOCUMENTS", "MAX_DOCUMENT_CHARS"]

MAX_DOCUMENTS = 20
MAX_DOCUMENT_CHARS = 4000


def _attr(attributes: dict[str, Any], key: str) -> Any:
    value = attributes.get(key)
    if isinstance(value, str):
        try:
            return json.loads(value)
        except ValueError:
            return value
    return value


def _spans(trace: Any) -> list[dict[str, Any]]:
    if isinstance(trace, (bytes, str)):
        try:
            trace = json.loads(trace)
        except ValueError:
            return []
    if not isinstance(trace, dict):
        return []
    spans = (trace.get("data") or {}).get("spans") if isinstance(trace.get("data"), dict) else None
    return [s for s in spans or [] if isinstance(s, dict)]


def retrieved_documents(trace: Any) -> list[dict[str, Any]]:
    """`[{position, step_id, text, source}]` from the trace's RETRIEVER spans, in span order."""
    out: list[dict[str, Any]] = []
    for span in _spans(trace):
        attributes = span.get("attributes") or {}
        if _attr(attributes, "mlflow.spanType") != "RETRIEVER":
            continue
        outputs = _attr(attributes, "mlflow.spanOutputs")
        if isinstance(outputs, dict):  # e.g. {"documents": [...]}
            outputs = next((v for v in outputs.values() if isinstance(v, list)), [outputs])
        if not isinstance(outputs, list):
            continue
        context = span.get("context")
        context = context if isinstance(context, dict) else {}
        step_id = str(span.get("span_id") or context.get("span_id") or "")
        for position, doc in enumerate(outputs):
            if len(out) >= MAX_DOCUMENTS:
                return out
            if isinstance(doc, dict):
                metadata = doc.get("metadata")
                metadata = metadata if isinstance(metadata, dict) else {}
                text = doc.get("page_content", doc.get("text", ""))
                source = metadata.get("doc_uri") or doc.get("doc_uri") or doc.get("id") or ""
            else:
                text, source = doc, ""
            out.append(
                {
                    "position": position,  # within its retriever span (step), as Databricks counts
                    "step_id": step_id,
                    "text": str(text)[:MAX_DOCUMENT_CHARS],
                    "source": str(source)[:500],
                }
            )
    return out
