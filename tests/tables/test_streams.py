"""What the payload table keeps of a streamed answer (tables/streams.py)."""

from __future__ import annotations

import json

import orjson

from agentdeploy.tables.streams import aggregate_stream


def _chunks(*events: object) -> list[bytes]:
    return [orjson.dumps(e) if not isinstance(e, bytes) else e for e in events]


def test_chat_completion_chunks_become_one_chat_completion() -> None:
    out = json.loads(aggregate_stream(_chunks(
        {"id": "c1", "object": "chat.completion.chunk", "created": 1, "model": "m",
         "choices": [{"index": 0, "delta": {"role": "assistant", "content": "Refunds "}}]},
        {"id": "c1", "object": "chat.completion.chunk",
         "choices": [{"index": 0, "delta": {"content": "take 5 days."}, "finish_reason": "stop"}],
         "usage": {"total_tokens": 7}},
    )))
    assert out["object"] == "chat.completion" and out["id"] == "c1" and out["usage"] == {"total_tokens": 7}
    assert out["choices"] == [{"index": 0, "message": {"role": "assistant", "content": "Refunds take 5 days."},
                               "finish_reason": "stop"}]


def test_tool_call_deltas_are_merged_by_index() -> None:
    out = json.loads(aggregate_stream(_chunks(
        {"object": "chat.completion.chunk", "choices": [{"index": 0, "delta": {"tool_calls": [
            {"index": 0, "id": "t1", "function": {"name": "look", "arguments": '{"q": '}}]}}]},
        {"object": "chat.completion.chunk", "choices": [{"index": 0, "delta": {"tool_calls": [
            {"index": 0, "function": {"arguments": '"x"}'}}]}}]},
    )))
    call = out["choices"][0]["message"]["tool_calls"][0]
    assert call == {"id": "t1", "type": "function", "function": {"name": "look", "arguments": '{"q": "x"}'}}


def test_responses_events_become_the_done_items() -> None:
    item = {"type": "message", "id": "i1", "role": "assistant",
            "content": [{"type": "output_text", "text": "Hello there"}]}
    out = json.loads(aggregate_stream(_chunks(
        {"type": "response.output_text.delta", "item_id": "i1", "delta": "Hello "},
        {"type": "response.output_text.delta", "item_id": "i1", "delta": "there"},
        {"type": "response.output_item.done", "item": item},
    )))
    assert out == {"object": "response", "output": [item]}


def test_responses_deltas_without_their_done_event_are_kept_as_incomplete() -> None:
    """A client that hung up mid-stream received these words: the row keeps them."""
    out = json.loads(aggregate_stream(_chunks(
        {"type": "response.output_text.delta", "item_id": "i1", "delta": "You "},
        {"type": "response.output_text.delta", "item_id": "i1", "delta": "asked"},
    )))
    assert out["output"] == [{"type": "message", "id": "i1", "role": "assistant", "status": "incomplete",
                              "content": [{"type": "output_text", "text": "You asked"}]}]


def test_other_chunks_are_kept_as_sent_even_when_not_json() -> None:
    out = json.loads(aggregate_stream(_chunks({"messages": [{"content": "a"}]}, b"not json")))
    assert out == {"object": "stream", "chunks": [{"messages": [{"content": "a"}]}, "not json"]}
