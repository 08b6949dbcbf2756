"""What the payload table keeps of a streamed answer: one aggregated, non-streamed response.

A `stream: true` request is answered with server-sent events, one chunk each. The payload row's
`response` holds what a non-streamed request would have got, so readers (the request-log
formatting, SQL, the review app) see one shape:

- chat completion chunks (`"object": "chat.completion.chunk"`) -> a `chat.completion` with each
  choice's deltas joined into one `message` (role, content, tool_calls by index), its last
  `finish_reason`, and the last `usage` seen;
- ResponsesAgent stream events (`"type": "response.output_item.done"`) -> `{"object": "response",
  "output": [the done items]}` (text deltas are covered by their item's `done` event; the deltas
  of an item that never got one become an `"status": "incomplete"` message);
- anything else (a ChatAgent's chunks, custom pyfunc chunks) -> `{"object": "stream", "chunks":
  [...]}`, kept as sent.

Chunks that are not JSON are kept as strings; nothing a client received is dropped.
"""

from __future__ import annotations

from typing import Any

import orjson

__all__ = ["aggregate_stream"]


def aggregate_stream(chunks: list[bytes]) -> bytes:
    """The JSON response a stream of `data:` chunks adds up to (see the module docstring)."""
    parsed: list[Any] = []
    for chunk in chunks:
        try:
            parsed.append(orjson.loads(chunk))
        except orjson.JSONDecodeError:
            parsed.append(chunk.decode("utf-8", "replace"))
    objects = [c for c in parsed if isinstance(c, dict)]
    if objects and len(objects) == len(parsed):
        if all(_is_chat_chunk(c) for c in objects):
            return orjson.dumps(_chat_completion(objects))
        if all(isinstance(c.get("type"), str) and c["type"].startswith("response.") for c in objects):
            return orjson.dumps(_response(objects))
    return orjson.dumps({"object": "stream", "chunks": parsed})


def _is_chat_chunk(chunk: dict[str, Any]) -> bool:
    if chunk.get("object") == "chat.completion.chunk":
        return True
    choices = chunk.get("choices")
    return (
        isinstance(choices, list) and bool(choices) and isinstance(choices[0], dict) and "delta" in choices[0]
    )


def _chat_completion(chunks: list[dict[str, Any]]) -> dict[str, Any]:
    choices: dict[int, dict[str, Any]] = {}
    usage: Any = None
    for chunk in chunks:
        usage = chunk.get("usage") or usage
        for choice in chunk.get("choices") or ():
            if not isinstance(choice, dict):
                continue
            index = choice.get("index", 0)
            into = choices.setdefault(
                index, {"index": index, "role": None, "content": [], "tools": {}, "finish_reason": None}
            )
            delta = choice.get("delta") or {}
            if isinstance(delta, dict):
                into["role"] = delta.get("role") or into["role"]
                content = delta.get("content")
                if isinstance(content, str):
                    into["content"].append(content)
                for call in delta.get("tool_calls") or ():
                    if isinstance(call, dict):
                        _merge_tool_call(into["tools"], call)
            into["finish_reason"] = choice.get("finish_reason") or into["finish_reason"]
    first = chunks[0]
    out: dict[str, Any] = {
        "id": first.get("id"),
        "object": "chat.completion",
        "created": first.get("created"),
        "model": first.get("model"),
        "choices": [],
    }
    for index in sorted(choices):
        choice = choices[index]
        message: dict[str, Any] = {
            "role": choice["role"] or "assistant",
            "content": "".join(choice["content"]),
        }
        if choice["tools"]:
            message["tool_calls"] = [choice["tools"][k] for k in sorted(choice["tools"])]
        out["choices"].append({"index": index, "message": message, "finish_reason": choice["finish_reason"]})
    if usage is not None:
        out["usage"] = usage
    return out


def _merge_tool_call(tools: dict[int, dict[str, Any]], call: dict[str, Any]) -> None:
    index = call.get("index", len(tools))
    into = tools.setdefault(
        index, {"id": None, "type": "function", "function": {"name": "", "arguments": ""}}
    )
    into["id"] = call.get("id") or into["id"]
    function = call.get("function") or {}
    if isinstance(function, dict):
        into["function"]["name"] += function.get("name") or ""
        into["function"]["arguments"] += function.get("arguments") or ""


def _response(events: list[dict[str, Any]]) -> dict[str, Any]:
    output = [e["item"] for e in events if e.get("type") == "response.output_item.done" and "item" in e]
    done_ids = {item.get("id") for item in output if isinstance(item, dict)}
    # Text streamed for an item whose `done` never came (the client hung up, the agent failed):
    # kept as an incomplete message, since the client received it.
    partial: dict[Any, list[str]] = {}
    for event in events:
        if event.get("type") == "response.output_text.delta" and event.get("item_id") not in done_ids:
            delta = event.get("delta")
            if isinstance(delta, str):
                partial.setdefault(event.get("item_id"), []).append(delta)
    for item_id, texts in partial.items():
        output.append({"type": "message", "id": item_id, "role": "assistant", "status": "incomplete",
                       "content": [{"type": "output_text", "text": "".join(texts)}]})
    out: dict[str, Any] = {"object": "response", "output": output}
    for event in events:  # a `response.completed` event carries the whole response: prefer it
        if event.get("type") == "response.completed" and isinstance(event.get("response"), dict):
            out = {"object": "response", **event["response"]}
    return out
