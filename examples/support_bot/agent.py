"""support_bot: an MLflow ResponsesAgent answering questions about `main.docs.faq` (models-from-code).

For a question it (1) reads the FAQ through the workspace's SQL statements API on the demo SQL
warehouse and keeps the rows closest to the question (a RETRIEVER span whose outputs are the
documents), (2) asks the responder's serving endpoint for the answer with those rows as context
(an LLM span), and (3) returns the answer with its sources in `custom_outputs["sources"]`.

It acts as its served entity's own principal: `agentdeploy.runtime` gives it the workspace URL
and the current short-lived token. The warehouse id and the responder endpoint come from the
model config given at logging time (`agentdeploy examples register` fills them in).
"""

from __future__ import annotations

import json
import os
import re
import uuid
from collections.abc import Generator, Iterator
from typing import Any

import httpx
import mlflow
from mlflow.entities import SpanType
from mlflow.pyfunc import ResponsesAgent
from mlflow.types.responses import ResponsesAgentRequest, ResponsesAgentResponse, ResponsesAgentStreamEvent

from agentdeploy.runtime import ENV_HOST, workspace_host, workspace_token

FAQ_TABLE = "main.docs.faq"
TOP_K = 3
TIMEOUT_S = 30.0
OFFLINE_ANSWER = "I cannot look that up: this agent is not running in a served entity (no workspace)."

config = mlflow.models.ModelConfig(
    development_config={
        "warehouse_id": "",
        "responder_endpoint": "agents_main-agents-responder",
        "faq_table": FAQ_TABLE,
    }
)

_WORD = re.compile(r"[a-z0-9]+")
_STOPWORDS = frozenset(
    "a an the is are was were be do does did to of in on at by for with from and or how what "
    "when where who which why can i you it my your me this that".split()
)


class WorkspaceUnavailable(RuntimeError):
    """The workspace (SQL API or the responder endpoint) could not be reached or refused."""


def _words(text: str) -> set[str]:
    return {w for w in _WORD.findall(text.lower()) if w not in _STOPWORDS}


def _question(request: ResponsesAgentRequest) -> str:
    for item in reversed(request.input):
        data = item.model_dump() if hasattr(item, "model_dump") else dict(item)
        if data.get("role") == "user":
            content = data.get("content")
            if isinstance(content, list):
                return "".join(str(p.get("text", "")) for p in content if isinstance(p, dict))
            return str(content or "")
    raise ValueError("The request holds no user message to answer.")


class SupportBot(ResponsesAgent):
    def __init__(self) -> None:
        self._http = httpx.Client(timeout=TIMEOUT_S)

    def _post(self, path: str, body: dict[str, Any], *, what: str) -> httpx.Response:
        url = f"{workspace_host()}{path}"
        try:
            response = self._http.post(
                url, json=body, headers={"Authorization": f"Bearer {workspace_token()}"}
            )
        except httpx.TransportError as exc:
            raise WorkspaceUnavailable(
                f"Cannot reach the workspace for {what} ({type(exc).__name__})."
            ) from None
        if response.status_code >= 400:
            try:
                message = response.json().get("message", "")
            except ValueError:
                message = response.text[:200]
            raise WorkspaceUnavailable(f"{what} failed with HTTP {response.status_code}: {message}")
        return response

    # --- retrieval ---------------------------------------------------------------------------
    def retrieve(self, question: str) -> list[dict[str, Any]]:
        with mlflow.start_span(name="retrieve_faq", span_type=SpanType.RETRIEVER) as span:
            span.set_inputs({"query": question})
            table = config.get("faq_table")
            answer = self._post(
                "/api/2.0/sql/statements",
                {
                    "warehouse_id": config.get("warehouse_id"),
                    "statement": f"SELECT * FROM {table} LIMIT 1000",
                    "wait_timeout": "30s",
                    "disposition": "INLINE",
                    "format": "JSON_ARRAY",
                },
                what=f"reading {table}",
            ).json()
            state = (answer.get("status") or {}).get("state")
            if state != "SUCCEEDED":
                error = (answer.get("status") or {}).get("error") or {}
                raise WorkspaceUnavailable(f"reading {table} ended {state}: {error.get('message', '')}")
            columns = [
                c["name"] for c in ((answer.get("manifest") or {}).get("schema") or {}).get("columns", [])
            ]
            rows = [
                dict(zip(columns, row, strict=False))
                for row in (answer.get("result") or {}).get("data_array") or []
            ]
            documents = [self._document(table, i, row) for i, row in enumerate(rows)]
            wanted = _words(question)
            ranked = sorted(
                ((len(wanted & _words(d["page_content"])), -i, d) for i, d in enumerate(documents)),
                key=lambda item: (item[0], item[1]),
                reverse=True,
            )
            chosen = [d for score, _, d in ranked[:TOP_K] if score > 0]
            span.set_outputs(chosen)
        return chosen

    @staticmethod
    def _document(table: str, index: int, row: dict[str, Any]) -> dict[str, Any]:
        key = row.get("id", index)
        if "question" in row and "answer" in row:
            text = f"{row['question']}\n{row['answer']}"
        else:
            text = "\n".join(str(v) for v in row.values() if v is not None)
        return {
            "id": str(key),
            "page_content": text,
            "metadata": {"doc_uri": f"{table}/{key}", "chunk_id": str(key)},
        }

    # --- generation --------------------------------------------------------------------------
    def _messages(self, question: str, documents: list[dict[str, Any]]) -> list[dict[str, str]]:
        context = "\n".join(d["page_content"] for d in documents)
        return [
            {"role": "system", "content": f"Answer from this context only.\nContext:\n{context}"},
            {"role": "user", "content": question},
        ]

    def generate(self, question: str, documents: list[dict[str, Any]]) -> str:
        endpoint = config.get("responder_endpoint")
        with mlflow.start_span(name=endpoint, span_type=SpanType.LLM) as span:
            body = {"messages": self._messages(question, documents)}
            span.set_inputs(body)
            answer = self._post(
                f"/serving-endpoints/{endpoint}/invocations", body, what=f"the endpoint {endpoint}"
            ).json()
            text = str(((answer.get("choices") or [{}])[0].get("message") or {}).get("content") or "")
            span.set_outputs(text)
        return text

    def generate_stream(self, question: str, documents: list[dict[str, Any]]) -> Iterator[str]:
        """The answer's text pieces as the responder streams them (one piece if it does not)."""
        endpoint = config.get("responder_endpoint")
        with mlflow.start_span(name=endpoint, span_type=SpanType.LLM) as span:
            body = {"messages": self._messages(question, documents), "stream": True}
            span.set_inputs(body)
            url = f"{workspace_host()}/serving-endpoints/{endpoint}/invocations"
            pieces: list[str] = []
            try:
                with self._http.stream(
                    "POST", url, json=body, headers={"Authorization": f"Bearer {workspace_token()}"}
                ) as response:
                    if response.status_code >= 400:
                        response.read()
                        raise WorkspaceUnavailable(
                            f"the endpoint {endpoint} failed with HTTP {response.status_code}"
                        )
                    if not response.headers.get("content-type", "").startswith("text/event-stream"):
                        response.read()
                        answer = response.json()
                        pieces.append(
                            str(
                                ((answer.get("choices") or [{}])[0].get("message") or {}).get("content") or ""
                            )
                        )
                        yield pieces[-1]
                    else:
                        for line in response.iter_lines():
                            if not line.startswith("data:") or line.strip() == "data: [DONE]":
                                continue
                            chunk = json.loads(line[5:])
                            if "choices" not in chunk:
                                continue
                            piece = ((chunk["choices"] or [{}])[0].get("delta") or {}).get("content") or ""
                            if piece:
                                pieces.append(piece)
                                yield piece
            except httpx.TransportError as exc:
                raise WorkspaceUnavailable(
                    f"Cannot reach the workspace for the endpoint {endpoint} ({type(exc).__name__})."
                ) from None
            span.set_outputs("".join(pieces))

    # --- the agent -----------------------------------------------------------------------------
    @staticmethod
    def _sources(documents: list[dict[str, Any]]) -> list[dict[str, str]]:
        return [{"doc_uri": d["metadata"]["doc_uri"], "text": d["page_content"]} for d in documents]

    def _offline(self) -> ResponsesAgentResponse | None:
        """Outside a served entity (e.g. MLflow validating the model while logging it) there is
        no workspace to ask: say so instead of failing."""
        if os.environ.get(ENV_HOST):
            return None
        return ResponsesAgentResponse(
            output=[self.create_text_output_item(text=OFFLINE_ANSWER, id=f"msg_{uuid.uuid4().hex[:16]}")],
            custom_outputs={"sources": []},
        )

    def predict(self, request: ResponsesAgentRequest) -> ResponsesAgentResponse:
        offline = self._offline()
        if offline is not None:
            return offline
        question = _question(request)
        documents = self.retrieve(question)
        answer = self.generate(question, documents)
        return ResponsesAgentResponse(
            output=[self.create_text_output_item(text=answer, id=f"msg_{uuid.uuid4().hex[:16]}")],
            custom_outputs={"sources": self._sources(documents)},
        )

    def predict_stream(
        self, request: ResponsesAgentRequest
    ) -> Generator[ResponsesAgentStreamEvent, None, None]:
        question = _question(request)
        documents = self.retrieve(question)
        item_id = f"msg_{uuid.uuid4().hex[:16]}"
        text = []
        for piece in self.generate_stream(question, documents):
            text.append(piece)
            yield ResponsesAgentStreamEvent(**self.create_text_delta(delta=piece, item_id=item_id))
        yield ResponsesAgentStreamEvent(
            type="response.output_item.done",
            item=self.create_text_output_item(text="".join(text), id=item_id),
            custom_outputs={"sources": self._sources(documents)},
        )


mlflow.models.set_model(SupportBot())
