"""The review app: one page per serving endpoint and its small API, served by the agentdeploy server.

    GET  /review/{endpoint}                  the app (signed in, CAN_QUERY), else sign-in or 403 page
    POST /review/{endpoint}/signin           form field `token` -> session cookie, 303 to the app
    POST /review/{endpoint}/signout          ends the session, 303 to the sign-in page
    GET  /review/static/{app.js|app.css}     the page's script and style
    GET  /review/api/{endpoint}/me           who is signed in and what they may do
    POST /review/api/{endpoint}/chat         {messages, conversation_id} -> the agent's answer as
                                             server-sent events, then `event: documents`
    POST /review/api/{endpoint}/feedback     ratings -> the endpoint's feedback model
    GET  /review/api/{endpoint}/requests     past requests to rate (own; everyone's with CAN_REVIEW)

Sign-in checks the user's token once; the cookie (HttpOnly, SameSite=Strict, Path=/review, Secure
when the server has a TLS certificate) holds only a random session id (`sessions.py`). The API's
POSTs also need the header `x-agentdeploy-review: 1`, which a cross-site form cannot send.

Chat and feedback go through the gateway in-process as the signed-in user (the ASGI scope key
`agentdeploy.caller`), so they are authorized, rate-limited and logged like any query; chat asks
for `stream: true` and `return_trace`, relays the chunks as they come and turns the trace into
the list of retrieved documents (RETRIEVER spans).
"""

from __future__ import annotations

import html
import json
import threading
import uuid
from collections import OrderedDict
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import orjson
from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.routing import Route

from agentdeploy.errors import (
    AgentDeployError,
    InvalidParameterValue,
    NotFound,
    PermissionDenied,
    Unauthenticated,
)
from agentdeploy.review.history import past_requests
from agentdeploy.review.sessions import COOKIE_NAME, SessionStore
from agentdeploy.review.traces import retrieved_documents
from agentdeploy.workspace.identity import Identity

__all__ = ["router", "review_state", "ReviewState"]

STATIC_DIR = Path(__file__).with_name("static")
_STATIC_TYPES = {"app.js": "text/javascript; charset=utf-8", "app.css": "text/css; charset=utf-8"}
CSRF_HEADER = b"x-agentdeploy-review"
SECURABLE = "serving_endpoint"
FEEDBACK_MODEL = "feedback"
MAX_MESSAGES = 100
MAX_MESSAGE_CHARS = 20_000
MAX_BODY_BYTES = 1024 * 1024
_OWN_REQUESTS_KEPT = 100_000
# The page loads only our own script and style; agent output is text, and this is the fallback.
_PAGE_HEADERS = {
    "content-security-policy": "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self'; "
    "connect-src 'self'; frame-ancestors 'none'; form-action 'self'; base-uri 'none'",
    "cache-control": "no-store",
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
}


class ReviewState:
    """Per-server state: the sessions and which review-app requests each user made."""

    def __init__(self) -> None:
        self.sessions = SessionStore()
        self._owners: OrderedDict[str, str] = OrderedDict()
        self._lock = threading.Lock()

    def remember(self, request_id: str, requester: str) -> None:
        with self._lock:
            self._owners[request_id] = requester
            while len(self._owners) > _OWN_REQUESTS_KEPT:
                self._owners.popitem(last=False)

    def owner_of(self, request_id: str) -> str | None:
        with self._lock:
            return self._owners.get(request_id)


_STATE_LOCK = threading.Lock()


def review_state(app: Any) -> ReviewState:
    with _STATE_LOCK:
        state = getattr(app.state, "review", None)
        if state is None:
            state = app.state.review = ReviewState()
        return state


# Who is asking ---------------------------------------------------------------------------------


def _cookie(headers: list[tuple[bytes, bytes]]) -> str | None:
    for key, value in headers:
        if key == b"cookie":
            for part in value.decode("latin-1").split(";"):
                name, _, val = part.strip().partition("=")
                if name == COOKIE_NAME:
                    return val
    return None


def _signed_in(app: Any, headers: list[tuple[bytes, bytes]]) -> Identity | None:
    session = review_state(app).sessions.get(_cookie(headers))
    if session is None:
        return None
    identity = app.state.workspace.identities.by_id.get(session.principal_id)
    if identity is None or not identity.active:
        return None
    return identity  # type: ignore[no-any-return]


def _endpoint_exists(ws: Any, endpoint: str) -> bool:
    return ws.access.find(SECURABLE, endpoint) is not None


def _level(ws: Any, caller: Identity, endpoint: str) -> str | None:
    for level in ("CAN_MANAGE", "CAN_REVIEW", "CAN_QUERY", "CAN_VIEW"):
        if ws.is_authorized(caller, SECURABLE, endpoint, level):
            return level
    return None


def _api_caller(app: Any, scope: Mapping[str, Any], endpoint: str, *, write: bool) -> Identity:
    """The signed-in user holding CAN_QUERY on the endpoint, or 401/403/404."""
    headers = scope.get("headers") or []
    if write and not any(k == CSRF_HEADER and v == b"1" for k, v in headers):
        raise PermissionDenied("Review app requests must carry the header 'x-agentdeploy-review: 1'.")
    caller = _signed_in(app, headers)
    if caller is None:
        raise Unauthenticated("Not signed in to the review app (or the session expired); sign in again.")
    ws = app.state.workspace
    if not _endpoint_exists(ws, endpoint):
        raise NotFound(f"Serving endpoint {endpoint!r} does not exist.")
    ws.authorize(caller, SECURABLE, endpoint, "CAN_QUERY")
    return caller


# Pages -----------------------------------------------------------------------------------------

_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title}</title><link rel="stylesheet" href="/review/static/app.css"></head>
<body><main class="narrow">{body}</main></body></html>
"""


def _page(title: str, body: str, status: int = 200) -> HTMLResponse:
    return HTMLResponse(
        _PAGE.format(title=html.escape(title), body=body), status_code=status, headers=_PAGE_HEADERS
    )


def _signin_page(endpoint: str, *, message: str = "", status: int = 200) -> HTMLResponse:
    e = html.escape(endpoint)
    note = f'<p class="error" role="alert">{html.escape(message)}</p>' if message else ""
    return _page(
        f"Sign in — review {endpoint}",
        f"""<h1>Review <span class="mono">{e}</span></h1>
{note}<form method="post" action="/review/{e}/signin" class="card">
<label for="token">Your access token</label>
<input id="token" name="token" type="password" autocomplete="off" required autofocus>
<button type="submit">Sign in</button>
<p class="hint">The token is checked once; the page keeps only a session cookie.</p>
</form>""",
        status,
    )


def _signout_form(endpoint: str) -> str:
    return (
        f'<form method="post" action="/review/{html.escape(endpoint)}/signout">'
        '<button type="submit">Sign out</button></form>'
    )


def _denied_page(endpoint: str, caller: Identity) -> HTMLResponse:
    return _page(
        "No access",
        f"""<h1>No access to <span class="mono">{html.escape(endpoint)}</span></h1>
<p class="error" role="alert">You are signed in as <b>{html.escape(caller.name)}</b>, who does not have
CAN_QUERY on this agent. Ask its owner to run
<code>agents.set_permissions(model_name, ["{html.escape(caller.name)}"],
PermissionLevel.CAN_QUERY)</code>.</p>
{_signout_form(endpoint)}""",
        403,
    )


def _not_found_page(endpoint: str) -> HTMLResponse:
    return _page(
        "Not found",
        f'<h1>No agent endpoint named <span class="mono">{html.escape(endpoint)}</span></h1>',
        404,
    )


def _cookie_header(request: Request, value: str, max_age: int) -> str:
    secure = "; Secure" if getattr(request.app.state.settings, "tls_certfile", None) else ""
    return f"{COOKIE_NAME}={value}; Path=/review; Max-Age={max_age}; HttpOnly; SameSite=Strict{secure}"


router = APIRouter(tags=["review"], include_in_schema=False)


@router.get("/review/static/{name}")
def static_file(name: str) -> Response:
    media = _STATIC_TYPES.get(name)
    if media is None:
        raise NotFound(f"No review app file {name[:80]!r}.")
    return Response(
        (STATIC_DIR / name).read_bytes(),
        media_type=media,
        headers={"cache-control": "no-cache", "x-content-type-options": "nosniff"},
    )


@router.get("/review/{endpoint}")
def review_page(endpoint: str, request: Request) -> Response:
    ws = request.app.state.workspace
    if not _endpoint_exists(ws, endpoint):
        return _not_found_page(endpoint)
    caller = _signed_in(request.app, request.scope["headers"])
    if caller is None:
        return _signin_page(endpoint)
    if not ws.is_authorized(caller, SECURABLE, endpoint, "CAN_QUERY"):
        return _denied_page(endpoint, caller)
    return HTMLResponse((STATIC_DIR / "app.html").read_text(), headers=_PAGE_HEADERS)


@router.post("/review/{endpoint}/signin")
async def sign_in(endpoint: str, request: Request) -> Response:
    body = await request.body()
    token = (parse_qs(body[:16384].decode("utf-8", "replace")).get("token") or [""])[0].strip()
    ws = request.app.state.workspace
    if not token:
        return _signin_page(endpoint, message="Enter your access token.", status=400)
    try:
        caller = ws.identify(token)
    except AgentDeployError:
        return _signin_page(endpoint, message="That token is not valid (or has expired).", status=401)
    session = review_state(request.app).sessions.create(caller.id)
    answer = RedirectResponse(f"/review/{endpoint}", status_code=303)
    answer.headers["set-cookie"] = _cookie_header(
        request, session.session_id, int(review_state(request.app).sessions.ttl_s)
    )
    answer.headers["cache-control"] = "no-store"
    return answer


@router.post("/review/{endpoint}/signout")
def sign_out(endpoint: str, request: Request) -> Response:
    review_state(request.app).sessions.end(_cookie(request.scope["headers"]))
    answer = RedirectResponse(f"/review/{endpoint}", status_code=303)
    answer.headers["set-cookie"] = _cookie_header(request, "", 0)
    return answer


# API -------------------------------------------------------------------------------------------


def _json_error(exc: AgentDeployError) -> JSONResponse:
    return JSONResponse(exc.to_json(), status_code=exc.status_code)


@router.get("/review/api/{endpoint}/me")
def me(endpoint: str, request: Request) -> Response:
    try:
        caller = _api_caller(request.app, request.scope, endpoint, write=False)
    except AgentDeployError as exc:
        return _json_error(exc)
    level = _level(request.app.state.workspace, caller, endpoint)
    return JSONResponse(
        {
            "endpoint": endpoint,
            "user": caller.name,
            "permission_level": level,
            "can_review": level in ("CAN_REVIEW", "CAN_MANAGE"),
        },
        headers={"cache-control": "no-store"},
    )


def _payload_table_dir(request: Request, endpoint: str) -> Path | None:
    from agentdeploy.tables.payload import payload_table_name
    from agentdeploy.tables.payload_writer import payload_table_path

    route = request.app.state.gateway.table.routes.get(endpoint)
    config = getattr(route, "inference_table", None)
    if not config or not config.get("catalog_name") or not config.get("schema_name"):
        return None
    name = payload_table_name(
        config["catalog_name"], config["schema_name"], config.get("table_name_prefix") or endpoint
    )
    return payload_table_path(request.app.state.settings.warehouse_dir, name)


@router.get("/review/api/{endpoint}/requests")
def list_requests(endpoint: str, request: Request) -> Response:
    try:
        caller = _api_caller(request.app, request.scope, endpoint, write=False)
    except AgentDeployError as exc:
        return _json_error(exc)
    reviewer = request.app.state.workspace.is_authorized(caller, SECURABLE, endpoint, "CAN_REVIEW")
    table_dir = _payload_table_dir(request, endpoint)
    rows = [] if table_dir is None else past_requests(table_dir, requester=None if reviewer else caller.name)
    return JSONResponse(
        {"requests": rows, "all_users": reviewer, "payload_table": table_dir is not None},
        headers={"cache-control": "no-store"},
    )


class _Rating:
    VALUES = {"positive", "negative"}


def _rating(field: str, value: Any) -> dict[str, Any] | None:
    if value is None or value == "":
        return None
    if value not in _Rating.VALUES:
        raise InvalidParameterValue(f"'{field}' must be 'positive' or 'negative'.")
    return {"value": value}


def _text(field: str, value: Any, limit: int = 10_000) -> str | None:
    if value is None or value == "":
        return None
    if not isinstance(value, str) or len(value) > limit:
        raise InvalidParameterValue(f"'{field}' must be a string of at most {limit} characters.")
    return value


def feedback_record(caller: Identity, body: Any) -> dict[str, Any]:
    """The review app's ratings -> one `dataframe_records` entry in the documented shape."""
    if not isinstance(body, dict):
        raise InvalidParameterValue("The body must be a JSON object.")
    request_id = body.get("request_id")
    if not isinstance(request_id, str) or not request_id or len(request_id) > 200:
        raise InvalidParameterValue("'request_id' is required.")
    record: dict[str, Any] = {"source": {"id": caller.name, "type": "human"}, "request_id": request_id}
    answer = body.get("answer") or {}
    if not isinstance(answer, dict):
        raise InvalidParameterValue("'answer' must be an object.")
    rating = _rating("answer.rating", answer.get("rating"))
    comment = _text("answer.comment", answer.get("comment"))
    suggested = _text("answer.suggested_output", answer.get("suggested_output"))
    if rating or comment or suggested:
        record["text_assessments"] = [
            {
                "ratings": {"answer_correct": rating} if rating else {},
                "free_text_comment": comment,
                "suggested_output": suggested,
            }
        ]
    documents = body.get("documents") or []
    if not isinstance(documents, list) or len(documents) > 100:
        raise InvalidParameterValue("'documents' must be a list of at most 100 ratings.")
    retrieval = []
    for i, doc in enumerate(documents):
        if not isinstance(doc, dict):
            raise InvalidParameterValue(f"'documents[{i}]' must be an object.")
        position = doc.get("position")
        if not isinstance(position, int) or isinstance(position, bool) or position < 0:
            raise InvalidParameterValue(f"'documents[{i}].position' must be a non-negative integer.")
        doc_rating = _rating(f"documents[{i}].rating", doc.get("rating"))
        doc_comment = _text(f"documents[{i}].comment", doc.get("comment"))
        if not doc_rating and not doc_comment:
            continue
        entry: dict[str, Any] = {
            "position": position,
            "ratings": {"groundedness": doc_rating} if doc_rating else {},
            "free_text_comment": doc_comment,
        }
        step_id = doc.get("step_id")
        if isinstance(step_id, str) and step_id:
            entry["step_id"] = step_id[:200]
        retrieval.append(entry)
    if retrieval:
        record["retrieval_assessments"] = retrieval
    if "text_assessments" not in record and not retrieval:
        raise InvalidParameterValue("Rate the answer or a document (or leave a comment) before sending.")
    return record


async def _gateway_call(
    gateway: Any, caller: Identity, path: str, payload: dict[str, Any], send: Any = None
) -> tuple[int, bytes, dict[bytes, bytes]]:
    """POST `payload` to the gateway in-process as `caller`; with `send`, the answer goes there."""
    data = orjson.dumps(payload)
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(data)).encode())],
        "client": ("127.0.0.1", 0),
        "server": ("127.0.0.1", 0),
        "agentdeploy.caller": caller,
    }
    sent = False

    async def receive() -> dict[str, Any]:
        nonlocal sent
        if sent:  # nothing more will come; the gateway does not wait for a disconnect
            return {"type": "http.disconnect"}
        sent = True
        return {"type": "http.request", "body": data, "more_body": False}

    status, headers, chunks = 0, {}, []

    async def collect(message: dict[str, Any]) -> None:
        nonlocal status, headers
        if message["type"] == "http.response.start":
            status, headers = message["status"], dict(message.get("headers") or [])
        elif message["type"] == "http.response.body":
            chunks.append(message.get("body", b""))

    await gateway(scope, receive, send or collect)
    return status, b"".join(chunks), headers


@router.post("/review/api/{endpoint}/feedback")
async def send_feedback(endpoint: str, request: Request) -> Response:
    try:
        caller = _api_caller(request.app, request.scope, endpoint, write=True)
        raw = await request.body()
        if len(raw) > MAX_BODY_BYTES:
            raise InvalidParameterValue("The feedback is too large.")
        try:
            body = json.loads(raw)
        except ValueError:
            raise InvalidParameterValue("Malformed JSON in the request body.") from None
        record = feedback_record(caller, body)
        ws = request.app.state.workspace
        state = review_state(request.app)
        if not ws.is_authorized(caller, SECURABLE, endpoint, "CAN_REVIEW"):
            # CAN_QUERY rates only its own requests: ones it made here, or logged as its own.
            owner = state.owner_of(record["request_id"])
            if owner is None:
                table_dir = _payload_table_dir(request, endpoint)
                mine = (
                    [] if table_dir is None else past_requests(table_dir, requester=caller.name, limit=10_000)
                )
                owner = caller.name if any(r["request_id"] == record["request_id"] for r in mine) else None
            if owner != caller.name:
                raise PermissionDenied(
                    f"User '{caller.name}' may rate only their own requests; rating others' needs CAN_REVIEW "
                    f"on serving endpoint '{endpoint}'."
                )
    except AgentDeployError as exc:
        return _json_error(exc)
    status, answer, headers = await _gateway_call(
        request.app.state.gateway,
        caller,
        f"/serving-endpoints/{endpoint}/served-models/{FEEDBACK_MODEL}/invocations",
        {"dataframe_records": [record]},
    )
    return Response(
        answer,
        status_code=status,
        media_type="application/json",
        headers={"x-request-id": headers.get(b"x-request-id", b"").decode()},
    )


def _messages(body: Any) -> list[dict[str, str]]:
    if not isinstance(body, dict):
        raise InvalidParameterValue("The body must be a JSON object.")
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages or len(messages) > MAX_MESSAGES:
        raise InvalidParameterValue(f"'messages' must be a list of 1 to {MAX_MESSAGES} messages.")
    out = []
    for i, m in enumerate(messages):
        if not isinstance(m, dict) or m.get("role") not in ("user", "assistant"):
            raise InvalidParameterValue(f"'messages[{i}].role' must be 'user' or 'assistant'.")
        content = m.get("content")
        if not isinstance(content, str) or len(content) > MAX_MESSAGE_CHARS:
            raise InvalidParameterValue(
                f"'messages[{i}].content' must be a string of at most {MAX_MESSAGE_CHARS} characters."
            )
        out.append({"role": m["role"], "content": content})
    if out[-1]["role"] != "user" or not out[-1]["content"].strip():
        raise InvalidParameterValue("The last message must be the user's question.")
    return out


async def _send_json_error(send: Any, exc: AgentDeployError) -> None:
    body = orjson.dumps(exc.to_json())
    await send(
        {
            "type": "http.response.start",
            "status": exc.status_code,
            "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": body})


class ChatStream:
    """`POST /review/api/{endpoint}/chat`, a raw ASGI endpoint so the agent's events are relayed
    to the browser as they come (no buffering). Answers the gateway's own events (chat completion
    chunks, `data: [DONE]`) with `event: documents` in place of the trace."""

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        app = scope["app"]
        endpoint = scope["path_params"]["endpoint"]
        try:
            caller = _api_caller(app, scope, endpoint, write=True)
            raw = b""
            while True:
                message = await receive()
                raw += message.get("body", b"")
                if len(raw) > MAX_BODY_BYTES:
                    raise InvalidParameterValue("The conversation is too large.")
                if not message.get("more_body"):
                    break
            try:
                body = orjson.loads(raw)
            except orjson.JSONDecodeError:
                raise InvalidParameterValue("Malformed JSON in the request body.") from None
            messages = _messages(body)
            conversation_id = body.get("conversation_id") or str(uuid.uuid4())
            if not isinstance(conversation_id, str) or len(conversation_id) > 100:
                raise InvalidParameterValue("'conversation_id' must be a string of at most 100 characters.")
        except AgentDeployError as exc:
            await _send_json_error(send, exc)
            return
        state = review_state(app)

        async def relay(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers") or [])
                for key, value in headers:
                    if key == b"x-request-id" and message["status"] == 200:
                        state.remember(value.decode(), caller.name)
                headers.append((b"x-conversation-id", conversation_id.encode()))
                headers.append((b"cache-control", b"no-store"))
                message = dict(message, headers=headers)
            elif message["type"] == "http.response.body":
                chunk = message.get("body", b"")
                if chunk.startswith(b"event: trace\n"):
                    documents = retrieved_documents(chunk[len(b"event: trace\ndata: ") :].strip())
                    message = dict(
                        message, body=b"event: documents\ndata: " + orjson.dumps(documents) + b"\n\n"
                    )
            await send(message)

        payload = {
            "model": endpoint,
            "messages": messages,
            "stream": True,
            "context": {"conversation_id": conversation_id, "user_id": caller.name},
            "databricks_options": {"return_trace": True},
        }
        await _gateway_call(
            app.state.gateway, caller, "/serving-endpoints/chat/completions", payload, send=relay
        )


router.routes.append(
    Route("/review/api/{endpoint}/chat", ChatStream(), methods=["POST"], include_in_schema=False)
)
