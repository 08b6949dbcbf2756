"""A test agent for the review app and streaming tests (models-from-code): a ResponsesAgent that
retrieves two fixed documents (a RETRIEVER span) and answers `You asked: <question>`, word by
word when streamed. A question holding `slow` sleeps 0.4 s between streamed chunks. The answer
echoes the question as is, so a question holding markup gives an answer holding markup."""

from __future__ import annotations

import time
import uuid
from collections.abc import Generator
from typing import Any

import mlflow
from mlflow.entities import SpanType
from mlflow.pyfunc import ResponsesAgent
from mlflow.types.responses import ResponsesAgentRequest, ResponsesAgentResponse, ResponsesAgentStreamEvent

DOCUMENTS = [
    {
        "id": "1",
        "page_content": "Refunds are paid within 5 days.",
        "metadata": {"doc_uri": "main.docs.faq/1"},
    },
    {
        "id": "2",
        "page_content": "Shipping is free over 50 euros <b>always</b>.",
        "metadata": {"doc_uri": "main.docs.faq/2"},
    },
]
SLOW_CHUNK_S = 0.4


def _question(request: ResponsesAgentRequest) -> str:
    for item in reversed(request.input):
        data = item.model_dump() if hasattr(item, "model_dump") else dict(item)
        if data.get("role") == "user":
            content = data.get("content")
            if isinstance(content, list):
                return "".join(str(p.get("text", "")) for p in content if isinstance(p, dict))
            return str(content or "")
    return ""


class ReviewAgent(ResponsesAgent):
    def _retrieve(self, question: str) -> list[dict[str, Any]]:
        with mlflow.start_span(name="retrieve", span_type=SpanType.RETRIEVER) as span:
            span.set_inputs({"query": question})
            span.set_outputs(DOCUMENTS)
        return DOCUMENTS

    def predict(self, request: ResponsesAgentRequest) -> ResponsesAgentResponse:
        question = _question(request)
        self._retrieve(question)
        return ResponsesAgentResponse(
            output=[
                self.create_text_output_item(text=f"You asked: {question}", id=f"msg_{uuid.uuid4().hex[:8]}")
            ]
        )

    def predict_stream(
        self, request: ResponsesAgentRequest
    ) -> Generator[ResponsesAgentStreamEvent, None, None]:
        question = _question(request)
        self._retrieve(question)
        item_id = f"msg_{uuid.uuid4().hex[:8]}"
        words = f"You asked: {question}".split(" ")
        for i, word in enumerate(words):
            if i and "slow" in question:
                time.sleep(SLOW_CHUNK_S)
            yield ResponsesAgentStreamEvent(
                **self.create_text_delta(delta=word if i == 0 else " " + word, item_id=item_id)
            )
        yield ResponsesAgentStreamEvent(
            type="response.output_item.done",
            item=self.create_text_output_item(text=" ".join(words), id=item_id),
        )


mlflow.models.set_model(ReviewAgent())
