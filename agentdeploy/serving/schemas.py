"""Request and response shapes between the client APIs and the agent flavours.

A worker serves one model of one flavour (`AgentType`) to three client shapes (`Api`):

| api                | client sends                  | client expects                         |
|--------------------|-------------------------------|----------------------------------------|
| `invocations`      | the flavour's own input       | the flavour's own output               |
| `chat.completions` | OpenAI chat `messages`        | a `ChatCompletion` (chunks when stream) |
| `responses`        | OpenAI Responses `input`      | a Responses object (events when stream) |

`to_model_input` turns what the client sent into what the flavour's `predict` takes;
`to_client_output` / `to_client_chunk` turn what it returned into what the client expects. Pure
functions over JSON dicts (no mlflow import): they are the worker's request path.
Input the conversion cannot make sense of raises `InvalidModelInput` (the client gets 400).
"""

from __future__ import annotations

import time
import uuid
from typing import Any, Literal, get_args

__all__ = [
    "AgentType",
    "Api",
    "AGENT_TYPES",
    "APIS",
    "InvalidModelInput",
    "to_model_input",
    "to_client_output",
    "to_client_chunk",
    "messages_text",
]

AgentType = Literal["ResponsesAgent", "ChatModel", "ChatAgent", "PythonModel"]
Api = Literal["invocations", "chat.completions", "responses"]
AGENT_TYPES: tuple[str, ...] = get_args(AgentType)
APIS: tuple[str, ...] = get_args(Api)

# Fields of the OpenAI client shapes that name the endpoint or the transport, not model input.
_TRANSPORT_FIELDS = ("model", "stream", "stream_options")
_DATAFRAME_KEYS = ("dataframe_split", "dataframe_records", "instances", "inputs")


class InvalidModelInput(ValueError):
    """The request cannot be given to this model (answered 400 BAD_REQUEST)."""


# --- text helpers ----------------------------------------------------------------------------


def _content_text(content: Any) -> str:
    """Text of a chat or Responses `content`: a string, or a list of parts with `text`."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(str(p.get("text", "")) for p in content if isinstance(p, dict))
    raise InvalidModelInput(f"'content' must be a string or a list of parts, not {type(content).__name__}")


def messages_text(messages: list[dict[str, Any]], role: str = "user") -> str:
    """The text of the last message with `role` (the question a chat is asking)."""
    for message in reversed(messages):
        if message.get("role") == role:
            return _content_text(message.get("content"))
    return ""


def _new_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:24]}"


# --- input -----------------------------------------------------------------------------------


def _chat_messages_from_responses_input(body: dict[str, Any]) -> list[dict[str, Any]]:
    """OpenAI Responses `input` (+ `instructions`) as chat `messages`."""
    raw = body.get("input")
    messages: list[dict[str, Any]] = []
    if body.get("instructions"):
        messages.append({"role": "system", "content": str(body["instructions"])})
    if isinstance(raw, str):
        return [*messages, {"role": "user", "content": raw}]
    if not isinstance(raw, list):
        raise InvalidModelInput("'input' must be a string or a list of messages")
    for item in raw:
        if not isinstance(item, dict):
            raise InvalidModelInput("each item of 'input' must be an object")
        kind = item.get("type", "message")
        if kind == "message" or "role" in item:
            messages.append(
                {"role": str(item.get("role", "user")), "content": _content_text(item.get("content"))}
            )
        elif kind == "function_call_output":
            messages.append(
                {"role": "tool", "content": str(item.get("output", "")), "tool_call_id": item.get("call_id")}
            )
        # Other output items (reasoning, function_call) carry no chat message of their own.
    return messages


def _responses_input_from_chat(messages: Any) -> list[dict[str, Any]]:
    if not isinstance(messages, list) or not messages:
        raise InvalidModelInput("'messages' must be a non-empty list of {role, content} objects")
    converted = []
    for message in messages:
        if not isinstance(message, dict) or "role" not in message:
            raise InvalidModelInput("each item of 'messages' must be an object with 'role' and 'content'")
        converted.append({"role": message["role"], "content": _content_text(message.get("content"))})
    return converted


def _without(body: dict[str, Any], keys: tuple[str, ...]) -> dict[str, Any]:
    return {k: v for k, v in body.items() if k not in keys}


def to_model_input(agent_type: AgentType, api: Api, body: dict[str, Any]) -> dict[str, Any]:
    """What the flavour's `predict` takes, from what the client sent with `api`."""
    if not isinstance(body, dict):
        raise InvalidModelInput("the request body must be a JSON object")
    if agent_type == "ResponsesAgent":
        if "input" in body:
            data = _without(body, _TRANSPORT_FIELDS)
            if isinstance(data["input"], str):
                data["input"] = [{"role": "user", "content": data["input"]}]
            return data
        if "messages" in body:
            data = {"input": _responses_input_from_chat(body["messages"])}
            for key in ("custom_inputs", "context", "temperature", "metadata", "user"):
                if key in body:
                    data[key] = body[key]
            if "max_tokens" in body:
                data["max_output_tokens"] = body["max_tokens"]
            return data
        raise InvalidModelInput("This ResponsesAgent takes 'input' (a list of messages) or chat 'messages'.")
    if agent_type in ("ChatModel", "ChatAgent"):
        if "messages" in body:
            return _without(body, _TRANSPORT_FIELDS)
        if "input" in body:
            data = {"messages": _chat_messages_from_responses_input(body)}
            for key in ("custom_inputs", "context", "temperature"):
                if key in body:
                    data[key] = body[key]
            if agent_type == "ChatModel" and "max_output_tokens" in body:
                data["max_tokens"] = body["max_output_tokens"]
            return data
        raise InvalidModelInput(f"This {agent_type} takes chat 'messages'.")
    # A plain PythonModel gets the body as sent (dataframe shapes are parsed by the worker).
    return _without(body, _TRANSPORT_FIELDS) if api != "invocations" else body


# --- output ----------------------------------------------------------------------------------


def _responses_output_parts(output: dict[str, Any]) -> tuple[str, list[dict[str, Any]]]:
    """(text, tool calls) of a Responses output: message text joined, function calls listed."""
    texts: list[str] = []
    tool_calls: list[dict[str, Any]] = []
    for item in output.get("output") or []:
        if not isinstance(item, dict):
            continue
        if item.get("type") == "message":
            texts.append(_content_text(item.get("content")))
        elif item.get("type") == "function_call":
            tool_calls.append(
                {
                    "id": item.get("call_id") or item.get("id"),
                    "type": "function",
                    "function": {"name": item.get("name"), "arguments": item.get("arguments", "")},
                }
            )
    return "".join(texts), tool_calls


def _chat_completion(
    text: str,
    *,
    model: str,
    tool_calls: list[dict[str, Any]] | None = None,
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    message: dict[str, Any] = {"role": "assistant", "content": text}
    if tool_calls:
        message["tool_calls"] = tool_calls
    completion: dict[str, Any] = {
        "id": _new_id("chatcmpl"),
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [
            {"index": 0, "message": message, "finish_reason": "tool_calls" if tool_calls else "stop"}
        ],
    }
    if extra:
        completion.update(extra)
    return completion


def _responses_object(text: str, *, model: str, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    response: dict[str, Any] = {
        "id": _new_id("resp"),
        "object": "response",
        "created_at": int(time.time()),
        "model": model,
        "status": "completed",
        "output": [
            {
                "type": "message",
                "id": _new_id("msg"),
                "role": "assistant",
                "status": "completed",
                "content": [{"type": "output_text", "text": text, "annotations": []}],
            }
        ],
    }
    if extra:
        response.update(extra)
    return response


def _chat_completion_text(output: dict[str, Any]) -> str:
    choices = output.get("choices") or [{}]
    return _content_text((choices[0].get("message") or {}).get("content"))


def _custom(output: dict[str, Any]) -> dict[str, Any]:
    return {"custom_outputs": output["custom_outputs"]} if output.get("custom_outputs") is not None else {}


def to_client_output(agent_type: AgentType, api: Api, output: Any, *, model: str) -> Any:
    """What the client of `api` expects, from what the flavour's `predict` returned."""
    if api == "invocations" or not isinstance(output, dict):
        return output
    if agent_type == "ResponsesAgent":
        if api == "responses":
            return {
                "id": _new_id("resp"),
                "object": "response",
                "created_at": int(time.time()),
                "model": model,
                "status": "completed",
                **output,
            }
        text, tool_calls = _responses_output_parts(output)
        return _chat_completion(text, model=model, tool_calls=tool_calls, extra=_custom(output))
    if agent_type == "ChatModel" or "choices" in output:
        if api == "chat.completions":
            return output
        return _responses_object(_chat_completion_text(output), model=model, extra=_custom(output))
    if agent_type == "ChatAgent" or "messages" in output:
        text = messages_text(output.get("messages") or [], role="assistant")
        if api == "chat.completions":
            return _chat_completion(text, model=model, extra=_custom(output))
        return _responses_object(text, model=model, extra=_custom(output))
    return output


def to_client_chunk(agent_type: AgentType, api: Api, chunk: Any, *, model: str, stream_id: str) -> Any | None:
    """One streamed chunk in the client's shape, or None when it has no counterpart there
    (e.g. a ResponsesAgent's `output_item.done`, which repeats deltas already sent as chat chunks)."""
    if api == "invocations" or not isinstance(chunk, dict):
        return chunk
    if agent_type == "ResponsesAgent":
        if api == "responses":
            return chunk
        if chunk.get("type") != "response.output_text.delta":
            return None
        delta = {"role": "assistant", "content": str(chunk.get("delta", ""))}
        return {
            "id": stream_id,
            "object": "chat.completion.chunk",
            "created": int(time.time()),
            "model": model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": None}],
        }
    if agent_type == "ChatAgent" and "delta" in chunk:
        text = _content_text((chunk.get("delta") or {}).get("content"))
    elif "choices" in chunk:  # ChatModel: already a ChatCompletionChunk
        if api == "chat.completions":
            return chunk
        choices = chunk.get("choices") or [{}]
        text = _content_text((choices[0].get("delta") or {}).get("content"))
    else:
        return chunk
    if api == "responses":
        return {"type": "response.output_text.delta", "item_id": stream_id, "delta": text}
    return {
        "id": stream_id,
        "object": "chat.completion.chunk",
        "created": int(time.time()),
        "model": model,
        "choices": [
            {
                "index": 0,
                "delta": {"role": "assistant", "content": text},
                "finish_reason": chunk.get("finish_reason"),
            }
        ],
    }
