"""responder: a small deterministic text model standing in for an LLM endpoint (models-from-code).

It speaks chat completions (an MLflow `ChatModel`): given messages, it answers the last user
question with the sentences of the context that share the most words with it. The context is
every system message, plus anything after a `Context:` line in the user's message. No weights,
no network: the same input always gives the same answer.

    {"messages": [{"role": "system", "content": "Context:\\nRefunds take 5 days. Shipping is free."},
                  {"role": "user", "content": "How long do refunds take?"}]}
    -> choices[0].message.content == "Refunds take 5 days."
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator

import mlflow
from mlflow.entities import SpanType
from mlflow.pyfunc import ChatModel
from mlflow.types.llm import (
    ChatChoice,
    ChatChoiceDelta,
    ChatChunkChoice,
    ChatCompletionChunk,
    ChatCompletionResponse,
    ChatMessage,
    ChatParams,
)

NO_CONTEXT_ANSWER = "I don't know: no context was given to answer from."
NOT_FOUND_ANSWER = "I don't know: the context does not say."
MAX_SENTENCES = 2

_WORD = re.compile(r"[a-z0-9]+")
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+|\n+")
_STOPWORDS = frozenset(
    "a an the is are was were be been being do does did to of in on at by for with from and or not no "
    "how what when where who whom which why can could should would will i you he she it we they my your "
    "me us our their this that these those there here as if then than so such about into over under "
    "have has had get gets any some all".split()
)


def _words(text: str) -> set[str]:
    return {w for w in _WORD.findall(text.lower()) if w not in _STOPWORDS}


def _text(content: object) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):  # content parts
        return "".join(str(p.get("text", "")) if isinstance(p, dict) else str(p) for p in content)
    return ""


def split_question_and_context(messages: list[ChatMessage]) -> tuple[str, str]:
    question, context = "", []
    for message in messages:
        text = _text(message.content)
        if message.role == "system":
            context.append(text)
        elif message.role == "user":
            question = text
    head, sep, tail = question.partition("Context:")
    if sep:
        question, context = head.strip(), [*context, tail]
    return question.strip(), "\n".join(context).replace("Context:", " ").strip()


def extract_answer(question: str, context: str, max_sentences: int = MAX_SENTENCES) -> str:
    """The context's sentences with the most words in common with the question, in their order."""
    if not context:
        return NO_CONTEXT_ANSWER
    sentences = [s.strip() for s in _SENTENCE_END.split(context) if s.strip()]
    wanted = _words(question)
    scored = [(len(wanted & _words(s)), -i, i) for i, s in enumerate(sentences)]
    best = sorted((item for item in scored if item[0] > 0), reverse=True)[:max_sentences]
    if not best:
        return NOT_FOUND_ANSWER
    return " ".join(sentences[i] for _, _, i in sorted(best, key=lambda item: item[2]))


class Responder(ChatModel):
    def _answer(self, messages: list[ChatMessage], params: ChatParams) -> str:
        question, context = split_question_and_context(messages)
        limit = MAX_SENTENCES
        if params is not None and params.max_tokens:  # a crude cap: fewer sentences for small budgets
            limit = max(1, min(MAX_SENTENCES, params.max_tokens // 20))
        with mlflow.start_span(name="extract_answer", span_type=SpanType.PARSER) as span:
            span.set_inputs({"question": question, "context_chars": len(context)})
            answer = extract_answer(question, context, limit)
            span.set_outputs({"answer": answer})
        return answer

    def predict(self, context, messages: list[ChatMessage], params: ChatParams) -> ChatCompletionResponse:
        answer = self._answer(messages, params)
        return ChatCompletionResponse(
            id=f"chatcmpl-{uuid.uuid4().hex[:24]}",
            model="responder",
            choices=[ChatChoice(message=ChatMessage(role="assistant", content=answer), finish_reason="stop")],
        )

    def predict_stream(
        self, context, messages: list[ChatMessage], params: ChatParams
    ) -> Iterator[ChatCompletionChunk]:
        answer = self._answer(messages, params)
        stream_id = f"chatcmpl-{uuid.uuid4().hex[:24]}"
        words = answer.split(" ")
        for i, word in enumerate(words):
            piece = word if i == 0 else " " + word
            yield ChatCompletionChunk(
                id=stream_id,
                model="responder",
                choices=[
                    ChatChunkChoice(
                        delta=ChatChoiceDelta(role="assistant", content=piece),
                        finish_reason="stop" if i == len(words) - 1 else None,
                    )
                ],
            )


mlflow.models.set_model(Responder())
