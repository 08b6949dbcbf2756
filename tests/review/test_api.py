"""The review app's pages and API over HTTP (httpx): sign-in, sessions, 403, streamed chat with
retrieved documents, feedback in the documented shape, and who sees which past requests."""

from __future__ import annotations

import json
import time

import httpx
import pytest

from tests.review.conftest import ReviewStack
from tests.serving.conftest import Principal

REVIEW = {"x-agentdeploy-review": "1"}


def signed_in(stack: ReviewStack, who: Principal) -> httpx.Client:
    client = httpx.Client(base_url=stack.url, timeout=60)
    answer = client.post(f"/review/{stack.endpoint}/signin", data={"token": who.token})
    assert answer.status_code == 303, answer.text
    return client


def chat(client: httpx.Client, endpoint: str, question: str) -> tuple[str, str, list[dict[str, object]]]:
    """(request id, answer text, documents) of one streamed chat turn."""
    text, documents = [], []
    with client.stream(
        "POST",
        f"/review/api/{endpoint}/chat",
        headers=REVIEW,
        json={"messages": [{"role": "user", "content": question}], "conversation_id": "c-1"},
    ) as r:
        assert r.status_code == 200, r.read()
        assert r.headers["content-type"].startswith("text/event-stream")
        assert r.headers["x-conversation-id"] == "c-1"
        request_id = r.headers["x-request-id"]
        event = None
        for line in r.iter_lines():
            if line.startswith("event: "):
                event = line[7:]
            elif line.startswith("data: "):
                data = line[6:]
                if event == "documents":
                    documents = json.loads(data)
                elif data != "[DONE]" and event is None:
                    text.append(json.loads(data)["choices"][0]["delta"].get("content") or "")
                event = None
    return request_id, "".join(text), documents


def test_sign_in_sets_a_session_cookie_not_the_token(review_stack: ReviewStack) -> None:
    client = httpx.Client(base_url=review_stack.url, timeout=30)
    page = client.get(f"/review/{review_stack.endpoint}")
    assert (
        page.status_code == 200
        and 'name="token"' in page.text
        and review_stack.querier.token not in page.text
    )
    bad = client.post(f"/review/{review_stack.endpoint}/signin", data={"token": "nope"})
    assert bad.status_code == 401 and "not valid" in bad.text
    answer = client.post(
        f"/review/{review_stack.endpoint}/signin", data={"token": review_stack.querier.token}
    )
    assert answer.status_code == 303
    cookie = answer.headers["set-cookie"]
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and "Path=/review" in cookie
    assert "Secure" not in cookie  # plain HTTP here; Secure with AGENTDEPLOY_TLS_CERTFILE
    assert (
        review_stack.querier.token not in cookie
        and review_stack.querier.token not in answer.headers["location"]
    )
    app = client.get(f"/review/{review_stack.endpoint}")
    assert app.status_code == 200 and "app.js" in app.text
    assert "script-src 'self'" in app.headers["content-security-policy"]
    me = client.get(f"/review/api/{review_stack.endpoint}/me").json()
    assert me["user"] == review_stack.querier.name and me["permission_level"] == "CAN_QUERY"
    assert me["can_review"] is False
    client.post(f"/review/{review_stack.endpoint}/signout")
    assert client.get(f"/review/api/{review_stack.endpoint}/me").status_code == 401


def test_no_permission_gets_a_403_page(review_stack: ReviewStack) -> None:
    client = signed_in(review_stack, review_stack.outsider)
    page = client.get(f"/review/{review_stack.endpoint}")
    assert page.status_code == 403 and "CAN_QUERY" in page.text
    assert client.get(f"/review/api/{review_stack.endpoint}/me").status_code == 403
    assert (
        client.post(
            f"/review/api/{review_stack.endpoint}/chat",
            headers=REVIEW,
            json={"messages": [{"role": "user", "content": "hi"}]},
        ).status_code
        == 403
    )


def test_api_posts_need_the_review_header(review_stack: ReviewStack) -> None:
    client = signed_in(review_stack, review_stack.querier)
    refused = client.post(
        f"/review/api/{review_stack.endpoint}/chat", json={"messages": [{"role": "user", "content": "hi"}]}
    )
    assert refused.status_code == 403 and "x-agentdeploy-review" in refused.json()["message"]


def test_chat_streams_with_documents_and_feedback_is_accepted(review_stack: ReviewStack) -> None:
    client = signed_in(review_stack, review_stack.querier)
    request_id, text, documents = chat(client, review_stack.endpoint, "How long do refunds take?")
    assert text == "You asked: How long do refunds take?"
    assert [d["source"] for d in documents] == ["main.docs.faq/1", "main.docs.faq/2"]
    assert documents[0]["text"] == "Refunds are paid within 5 days." and documents[1]["position"] == 1
    sent = client.post(
        f"/review/api/{review_stack.endpoint}/feedback",
        headers=REVIEW,
        json={
            "request_id": request_id,
            "answer": {"rating": "positive", "comment": "good", "suggested_output": "5 days."},
            "documents": [
                {"position": 0, "rating": "positive", "comment": "the source"},
                {"position": 1, "rating": "negative"},
            ],
        },
    )
    assert sent.status_code == 200, sent.text


def test_feedback_record_is_what_the_feedback_model_accepts() -> None:
    """The review app's ratings become one record in the documented shape, which the feedback
    model's own validator (`parse_feedback`) accepts unchanged."""
    from agentdeploy.review.api import feedback_record
    from agentdeploy.serving.feedback import parse_feedback
    from agentdeploy.workspace.identity import Identity

    who = Identity(1, "user", "ana@example.com", "Ana", None, True, frozenset(), frozenset())
    record = feedback_record(
        who,
        {
            "request_id": "r-1",
            "answer": {"rating": "negative", "comment": "wrong", "suggested_output": "5 days."},
            "documents": [
                {"position": 1, "step_id": "s1", "rating": "positive", "comment": "ok"},
                {"position": 0},
            ],  # not rated: left out
        },
    )
    assert record == {
        "source": {"id": "ana@example.com", "type": "human"},
        "request_id": "r-1",
        "text_assessments": [
            {
                "ratings": {"answer_correct": {"value": "negative"}},
                "free_text_comment": "wrong",
                "suggested_output": "5 days.",
            }
        ],
        "retrieval_assessments": [
            {
                "position": 1,
                "step_id": "s1",
                "ratings": {"groundedness": {"value": "positive"}},
                "free_text_comment": "ok",
            }
        ],
    }
    parsed = parse_feedback({"dataframe_records": [record]}, lambda rid: rid == "r-1")
    assert parsed[0]["text_assessments"][0]["ratings"]["answer_correct"]["value"] == "negative"
    with pytest.raises(Exception, match="answer.rating"):
        feedback_record(who, {"request_id": "r-1", "answer": {"rating": "meh"}})


def _rows(
    stack: ReviewStack, client: httpx.Client, wanted: set[str], timeout: float = 30.0
) -> dict[str, object]:
    deadline = time.monotonic() + timeout
    while True:
        body = client.get(f"/review/api/{stack.endpoint}/requests").json()
        if wanted <= {r["request_id"] for r in body["requests"]} or time.monotonic() > deadline:
            return body  # type: ignore[no-any-return]
        time.sleep(0.5)


def test_querier_sees_own_requests_reviewer_sees_all(review_stack: ReviewStack) -> None:
    mine = signed_in(review_stack, review_stack.querier)
    theirs = signed_in(review_stack, review_stack.other_querier)
    my_id, _, _ = chat(mine, review_stack.endpoint, "mine?")
    their_id, _, _ = chat(theirs, review_stack.endpoint, "theirs?")
    reviewer = signed_in(review_stack, review_stack.reviewer)
    everyone = _rows(review_stack, reviewer, {my_id, their_id})
    assert everyone["payload_table"] is True
    assert everyone["all_users"] is True
    assert {my_id, their_id} <= {r["request_id"] for r in everyone["requests"]}
    own = _rows(review_stack, mine, {my_id})
    requesters = {r["requester"] for r in own["requests"]}
    assert own["all_users"] is False and requesters == {review_stack.querier.name}
    # CAN_QUERY rates only its own requests; CAN_REVIEW rates anyone's.
    rating = {"answer": {"rating": "negative"}}
    refused = mine.post(
        f"/review/api/{review_stack.endpoint}/feedback",
        headers=REVIEW,
        json={"request_id": their_id, **rating},
    )
    assert refused.status_code == 403, refused.text
    accepted = reviewer.post(
        f"/review/api/{review_stack.endpoint}/feedback",
        headers=REVIEW,
        json={"request_id": their_id, **rating},
    )
    assert accepted.status_code == 200, accepted.text
