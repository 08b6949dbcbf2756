"""A test agent (models-from-code): a ChatModel that answers `<tag>: <last user message>`.

`sleep <seconds>` in the message makes it sleep first (for endpoint timeouts); `raise` makes it
fail. `tag` comes from the logged model_config, so two versions answer differently.
"""

from __future__ import annotations

import time

import mlflow
from mlflow.pyfunc import ChatModel
from mlflow.types.llm import ChatChoice, ChatCompletionResponse, ChatMessage, ChatParams


class EchoChat(ChatModel):
    def load_context(self, context) -> None:  # type: ignore[no-untyped-def]
        self.tag = (context.model_config or {}).get("tag", "v1")

    def predict(self, context, messages: list[ChatMessage], params: ChatParams) -> ChatCompletionResponse:  # type: ignore[no-untyped-def]
        text = messages[-1].content or ""
        with mlflow.start_span(name="echo", span_type="LLM") as span:
            span.set_inputs({"text": text})
            if text.startswith("sleep "):
                time.sleep(float(text.split()[1]))
            if text == "raise":
                raise RuntimeError("asked to fail")
            answer = f"{self.tag}: {text}"
            span.set_outputs({"answer": answer})
        return ChatCompletionResponse(
            choices=[ChatChoice(message=ChatMessage(role="assistant", content=answer))]
        )


mlflow.models.set_model(EchoChat())
