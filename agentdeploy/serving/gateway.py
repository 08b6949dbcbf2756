"""The gateway: the hot path from a client's query to a worker and back.

    POST /serving-endpoints/{name}/invocations                       routed by traffic percentages
    POST /serving-endpoints/{name}/served-models/{served}/invocations one served entity
    POST /serving-endpoints/chat/completions                         OpenAI chat, `model` = endpoint
    POST /serving-endpoints/responses                                OpenAI Responses, `model` = endpoint

A raw ASGI app (no framework routing): authenticate (`Workspace.identify`, the one
authentication function) -> authorize CAN_QUERY on the in-memory grants view -> rate limits ->
pick a served entity -> forward to its worker over a pooled aiohttp session -> hand the log
record to the sink -> answer. Everything that can be decided before a request is decided when
the routing table is built (after each committed config change): the table maps endpoint names
to their served entities, cumulative traffic weights, rate limiters, metrics and timeouts. No
database read happens per request.

Worker protocol (see `backends/base.py`): the answer to `POST /invocations` is the response JSON
object (`x-agentdeploy-response-length` bytes) immediately followed by the trace JSON (or `null`).
The first part is forwarded as is; `databricks_options.return_trace` splices
`"databricks_output": {"trace": ..., "databricks_request_id": ...}` into it.

Every answer carries `x-request-id`; every error is `{"error_code", "message"}`.
"""

from __future__ import annotations

import asyncio
import bisect
import logging
import random
import time
import uuid
from dataclasses import dataclass
from typing import Any, Protocol

import aiohttp
import orjson
from sqlalchemy.orm import Session

from agentdeploy.errors import (
    AgentDeployError,
    DeadlineExceeded,
    InvalidParameterValue,
    MalformedRequest,
    NotFound,
    PayloadTooLarge,
    RateLimited,
    Unavailable,
)
from agentdeploy.serving.endpoints import (
    EndpointController,
    is_native,
    list_endpoints,
    served_entities,
    worker_key,
)
from agentdeploy.serving.metrics import EntityMetrics, ServingMetrics
from agentdeploy.serving.ratelimit import EndpointRateLimiter
from agentdeploy.tables.streams import aggregate_stream
from agentdeploy.workspace.api.deps import bearer_token

__all__ = [
    "NativeHandler",
    "Gateway",
    "InferenceRecord",
    "InferenceSink",
    "NullSink",
    "RoutingTable",
    "EndpointRoute",
    "Target",
]

log = logging.getLogger("agentdeploy.serving.gateway")

PREFIX = "/serving-endpoints/"
RESPONSE_LENGTH = "x-agentdeploy-response-length"
RETRY_AFTER_S = 1.0
CLIENT_CLOSED_REQUEST = 499  # the status logged for a stream whose client went away (nginx's code)


@dataclass(slots=True)
class InferenceRecord:
    """One finished request, as the payload log needs it. `response` is what the client got
    without the trace; `trace` is the worker's trace JSON (or None); `logged_response()` is the
    response with `databricks_output.trace` spliced in (what the payload table keeps)."""

    databricks_request_id: str
    client_request_id: str | None
    endpoint_name: str
    endpoint_id: str
    served_entity_name: str | None
    entity_name: str | None
    entity_version: str | None
    requester: str
    api: str  # invocations | chat.completions | responses
    timestamp_ms: int  # when the request arrived (epoch ms)
    execution_time_ms: int
    status_code: int
    request: bytes  # the client's body as received
    response: bytes
    trace: bytes | None
    inference_table: dict[str, Any] | None  # the endpoint's ai_gateway.inference_table_config
    streamed: bool = False  # `response` is then the chunks sent, aggregated (tables.streams)

    def logged_response(self) -> bytes:
        if self.status_code != 200 and not self.streamed:
            return self.response
        return splice_output(self.response, self.trace or b"null", self.databricks_request_id)


class InferenceSink(Protocol):
    async def append(self, record: InferenceRecord) -> None:
        """Keep the record durably before the response is sent; raise `Unavailable` to refuse it."""


class NullSink:
    """Logs nothing: the sink until the payload spool is wired in."""

    async def append(self, record: InferenceRecord) -> None:
        return None


@dataclass(slots=True)
class Target:
    """One served entity of an endpoint's serving config."""

    served_name: str
    worker_key: str
    entity_name: str
    entity_version: str
    metrics: EntityMetrics
    served_header: bytes
    native: bool = False  # answered by `Gateway.native_handler` (the feedback model), no worker


class NativeHandler(Protocol):
    async def __call__(
        self, route: EndpointRoute, target: Target, payload: dict[str, Any], record: InferenceRecord
    ) -> tuple[int, bytes]:
        """(status, response JSON) for a request to a natively served entity; raise an
        AgentDeployError for a 4xx/5xx with a message."""


@dataclass(slots=True)
class EndpointRoute:
    name: str
    id: str
    targets: dict[str, Target]
    weighted: list[Target]  # targets with traffic > 0, and their cumulative percentages
    cumulative: list[int]
    limiter: EndpointRateLimiter
    refused: EntityMetrics  # requests refused before a served entity was chosen
    timeout: aiohttp.ClientTimeout
    timeout_s: float
    inference_table: dict[str, Any] | None
    updating: bool

    def pick(self) -> Target | None:
        if not self.weighted:
            return None
        if len(self.weighted) == 1:
            return self.weighted[0]
        return self.weighted[bisect.bisect_right(self.cumulative, random.random() * self.cumulative[-1])]


class RoutingTable:
    """Endpoint name -> route; rebuilt from the database after every committed change."""

    def __init__(self, routes: dict[str, EndpointRoute] | None = None) -> None:
        self.routes = routes or {}


def splice_output(response: bytes, trace: bytes, request_id: str) -> bytes:
    """`{...}` + trace -> `{..., "databricks_output": {"trace": trace, "databricks_request_id": id}}`."""
    body = response.rstrip()
    if not body.endswith(b"}"):
        return response
    head = body[:-1].rstrip()
    sep = b"" if head.endswith(b"{") else b","
    return b"".join(
        (
            head,
            sep,
            b'"databricks_output":{"trace":',
            trace.strip() or b"null",
            b',"databricks_request_id":"',
            request_id.encode(),
            b'"}}',
        )
    )


def _error_body(exc: AgentDeployError) -> bytes:
    return orjson.dumps({"error_code": exc.error_code, "message": exc.message})


class Gateway:
    """The ASGI app for `/serving-endpoints/...`. `start()` and `close()` run in the server's
    lifespan; `rebuild(session)` is registered with `Workspace.on_change`."""

    def __init__(
        self,
        workspace: Any,
        controller: EndpointController,
        backend: Any,
        *,
        sink: InferenceSink | None = None,
        metrics: ServingMetrics | None = None,
    ) -> None:
        self.ws = workspace
        self.controller = controller
        self.backend = backend
        self.sink: InferenceSink = sink or NullSink()
        # supervisor.ScaleToZero (set by the server): wakes scaled-to-zero workers per request.
        self.scale_to_zero: Any = None
        # Set by the feedback model's owner; until then a native entity answers 503.
        self.native_handler: NativeHandler | None = None
        self.metrics = metrics or ServingMetrics()
        settings = workspace.settings
        self.max_payload_bytes = int(settings.max_payload_bytes)
        self.default_timeout_s = float(settings.endpoint_timeout_s)
        self.table = RoutingTable()
        self._session: aiohttp.ClientSession | None = None
        self._urls: dict[tuple[str, int], str] = {}
        workspace.on_change(self.rebuild)

    # Life cycle -------------------------------------------------------------------------------
    async def start(self) -> None:
        # Keep-alive well under the worker's (300 s) so a pooled connection is never one the
        # worker is closing; no limit on connections (each worker bounds its own concurrency).
        connector = aiohttp.TCPConnector(limit=0, keepalive_timeout=60.0, use_dns_cache=False)
        self._session = aiohttp.ClientSession(
            connector=connector,
            auto_decompress=False,
            skip_auto_headers=("User-Agent", "Accept-Encoding"),
        )

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    # The routing table ------------------------------------------------------------------------
    def rebuild(self, session: Session) -> None:
        old = self.table.routes
        routes: dict[str, EndpointRoute] = {}
        for row in list_endpoints(session):
            targets: dict[str, Target] = {}
            for entity in served_entities(row.config):
                targets[entity["name"]] = Target(
                    served_name=entity["name"],
                    worker_key=worker_key(row.id, entity),
                    entity_name=entity["entity_name"],
                    entity_version=str(entity["entity_version"]),
                    metrics=self.metrics.entity(row.name, entity["name"]),
                    served_header=entity["name"].encode(),
                    native=is_native(entity),
                )
            weighted: list[Target] = []
            cumulative: list[int] = []
            total = 0
            for route in (row.config or {}).get("traffic_config", {}).get("routes", []):
                target = targets.get(route["served_entity_name"])
                if target is not None and route["traffic_percentage"] > 0:
                    total += route["traffic_percentage"]
                    weighted.append(target)
                    cumulative.append(total)
            gateway_config = row.ai_gateway or {}
            limits = gateway_config.get("rate_limits") or []
            previous = old.get(row.name)
            # Keep the buckets (and so the counts) of an unchanged limit across rebuilds.
            limiter = (
                previous.limiter
                if previous is not None and previous.id == row.id and previous.limiter.config == limits
                else EndpointRateLimiter(limits)
            )
            timeout_s = self.default_timeout_s
            table = gateway_config.get("inference_table_config")
            routes[row.name] = EndpointRoute(
                name=row.name,
                id=row.id,
                targets=targets,
                weighted=weighted,
                cumulative=cumulative,
                limiter=limiter,
                refused=self.metrics.entity(row.name, ""),
                timeout=aiohttp.ClientTimeout(total=timeout_s),
                timeout_s=timeout_s,
                inference_table=table if table and table.get("enabled", True) else None,
                updating=row.config_update == "IN_PROGRESS",
            )
        for name in old.keys() - routes.keys():
            self.metrics.forget(name)
        self.table = RoutingTable(routes)

    # ASGI -------------------------------------------------------------------------------------
    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        started = time.perf_counter()
        arrived_ms = int(time.time() * 1000)
        request_id = str(uuid.uuid4())
        try:
            answered = await self._handle(scope, receive, send, request_id, started, arrived_ms)
            if answered is None:  # a stream, sent as it came
                return
            status, body, extra = answered
        except AgentDeployError as exc:
            status, body, extra = exc.status_code, _error_body(exc), _retry_after(exc)
        except Exception:  # never a stack trace to the client; the server log has it
            log.exception("gateway error on %s (request %s)", scope.get("path"), request_id)
            status = 500
            body = orjson.dumps(
                {
                    "error_code": "INTERNAL_ERROR",
                    "message": f"Internal error (request {request_id}); see the server log.",
                }
            )
            extra = []
        headers = [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
            (b"x-request-id", request_id.encode()),
            *extra,
        ]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    async def _handle(
        self, scope: dict[str, Any], receive: Any, send: Any, request_id: str, started: float, arrived_ms: int
    ) -> tuple[int, bytes, list[tuple[bytes, bytes]]] | None:
        path: str = scope["path"]
        parts = path[len(PREFIX) :].split("/")
        served: str | None = None
        endpoint_name: str | None = None
        if len(parts) == 2 and parts[1] == "invocations":
            api, endpoint_name = "invocations", parts[0]
        elif len(parts) == 4 and parts[1] == "served-models" and parts[3] == "invocations":
            api, endpoint_name, served = "invocations", parts[0], parts[2]
        elif parts == ["chat", "completions"]:
            api = "chat.completions"
        elif parts == ["responses"]:
            api = "responses"
        else:
            raise NotFound(f"No API at {scope['method']} {path}.")
        if scope["method"] != "POST":
            return (
                405,
                orjson.dumps({"error_code": "METHOD_NOT_ALLOWED", "message": f"Use POST for {path}."}),
                [],
            )

        authorization = content_length = None
        for key, value in scope["headers"]:
            if key == b"authorization":
                authorization = value.decode("latin-1")
            elif key == b"content-length":
                content_length = value
        # The review app calls in-process for a signed-in user (an identity, never a token); an
        # HTTP client cannot put keys in the ASGI scope.
        caller = scope.get("agentdeploy.caller") or self.ws.identify(bearer_token(authorization))

        route = self.table.routes.get(endpoint_name) if endpoint_name is not None else None
        if endpoint_name is not None:
            if route is None:
                raise NotFound(f"Serving endpoint {endpoint_name!r} does not exist.")
            self.ws.authorize(caller, "serving_endpoint", endpoint_name, "CAN_QUERY")
        try:
            if (
                content_length is not None
                and content_length.isdigit()
                and int(content_length) > self.max_payload_bytes
            ):
                raise PayloadTooLarge(self._too_large())
            raw = await self._read_body(receive)
        except PayloadTooLarge as exc:
            if route is not None:  # on an endpoint: logged like any request (without the body)
                await self._log_refused(route, caller.name, api, request_id, arrived_ms, started, exc,
                                        content_length)
            raise

        # From here on the request belongs to an endpoint (or names one in `model`): it is logged.
        payload: Any = None
        error: AgentDeployError | None = None
        try:
            payload = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            error = MalformedRequest(f"Malformed JSON in the request body: {exc}.")
        if error is None and not isinstance(payload, dict):
            error = MalformedRequest("The request body must be a JSON object.")
        if route is None:  # the OpenAI paths name the endpoint in the body
            if error is not None:
                raise error
            model = payload.get("model")
            if not isinstance(model, str) or not model:
                raise InvalidParameterValue("'model' must name the serving endpoint to query.")
            route = self.table.routes.get(model)
            if route is None:
                raise NotFound(f"Serving endpoint {model!r} does not exist.")
            self.ws.authorize(caller, "serving_endpoint", model, "CAN_QUERY")

        client_request_id = payload.get("client_request_id") if isinstance(payload, dict) else None
        if client_request_id is not None and not isinstance(client_request_id, str):
            client_request_id = str(client_request_id)
        target: Target | None = None
        trace: bytes | None = None
        extra: list[tuple[bytes, bytes]] = []
        record = InferenceRecord(
            databricks_request_id=request_id,
            client_request_id=client_request_id,
            endpoint_name=route.name,
            endpoint_id=route.id,
            served_entity_name=None,
            entity_name=None,
            entity_version=None,
            requester=caller.name,
            api=api,
            timestamp_ms=arrived_ms,
            execution_time_ms=0,
            status_code=0,
            request=raw,
            response=b"",
            trace=None,
            inference_table=route.inference_table,
        )
        try:
            if error is not None:
                raise error
            wait = route.limiter.check(caller.id) if route.limiter else 0.0
            if wait > 0:
                raise RateLimited(
                    f"Rate limit of serving endpoint {route.name!r} exceeded; retry in {wait:.1f}s.",
                    retry_after=wait,
                )
            if served is not None:
                target = route.targets.get(served)
                if target is None:
                    raise NotFound(f"Serving endpoint {route.name!r} has no served model {served!r}.")
            else:
                target = route.pick()
                if target is None:
                    raise Unavailable(
                        f"Serving endpoint {route.name!r} is not ready yet.", retry_after=RETRY_AFTER_S
                    )
            return_trace = False
            forward = raw
            options = payload.get("databricks_options")
            if options is not None:
                return_trace = isinstance(options, dict) and options.get("return_trace") is True
                del payload["databricks_options"]
                forward = orjson.dumps(payload)
            record.served_entity_name = target.served_name
            record.entity_name, record.entity_version = target.entity_name, target.entity_version
            if target.native:
                if self.native_handler is None:
                    raise Unavailable(
                        f"Served model {target.served_name!r} is not available on this server.",
                        retry_after=RETRY_AFTER_S,
                    )
                status, response = await self.native_handler(route, target, payload, record)
                trace = None
            elif payload.get("stream") is True:
                streamed = await self._forward(
                    route, target, api, request_id, forward, send=send, record=record, started=started,
                    return_trace=return_trace,
                    # The review app's in-process caller has no connection to lose.
                    receive=None if "agentdeploy.caller" in scope else receive,
                )
                if streamed is None:
                    return None
                status, response, trace = streamed
            else:
                answered = await self._forward(route, target, api, request_id, forward)
                assert answered is not None  # only a stream is relayed and gives None
                status, response, trace = answered
            if status == 200 and return_trace:
                body = splice_output(response, trace or b"null", request_id)
            else:
                body = response
            extra.append((b"served-model-name", target.served_header))
        except AgentDeployError as exc:
            status, response, body, extra = (
                exc.status_code,
                _error_body(exc),
                _error_body(exc),
                _retry_after(exc),
            )
        latency_ms = (time.perf_counter() - started) * 1000.0
        (target.metrics if target is not None else route.refused).observe(status, latency_ms)
        record.execution_time_ms, record.status_code = int(latency_ms), status
        record.response, record.trace = response, trace
        # THE logging hook: the record is kept before the client sees the answer.
        await self.sink.append(record)
        return status, body, extra

    async def _log_refused(
        self,
        route: EndpointRoute,
        requester: str,
        api: str,
        request_id: str,
        arrived_ms: int,
        started: float,
        exc: AgentDeployError,
        content_length: bytes | None,
    ) -> None:
        """Log a request refused before its body was read (413): the row notes the size only."""
        size = int(content_length) if content_length is not None and content_length.isdigit() else None
        latency_ms = (time.perf_counter() - started) * 1000.0
        route.refused.observe(exc.status_code, latency_ms)
        await self.sink.append(
            InferenceRecord(
                databricks_request_id=request_id,
                client_request_id=None,
                endpoint_name=route.name,
                endpoint_id=route.id,
                served_entity_name=None,
                entity_name=None,
                entity_version=None,
                requester=requester,
                api=api,
                timestamp_ms=arrived_ms,
                execution_time_ms=int(latency_ms),
                status_code=exc.status_code,
                request=orjson.dumps({"truncated": True, "size_bytes": size}),
                response=_error_body(exc),
                trace=None,
                inference_table=route.inference_table,
            )
        )

    async def _read_body(self, receive: Any) -> bytes:
        message = await receive()
        body: bytes = message.get("body", b"")
        if not message.get("more_body"):
            if len(body) > self.max_payload_bytes:
                raise PayloadTooLarge(self._too_large())
            return body
        chunks = [body]
        size = len(body)
        while message.get("more_body"):
            message = await receive()
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_payload_bytes:
                raise PayloadTooLarge(self._too_large())
            chunks.append(chunk)
        return b"".join(chunks)

    def _too_large(self) -> str:
        return (
            f"The request body is larger than the limit of {self.max_payload_bytes} bytes "
            "(AGENTDEPLOY_MAX_PAYLOAD_BYTES)."
        )

    def _url(self, address: tuple[str, int]) -> str:
        url = self._urls.get(address)
        if url is None:
            url = self._urls[address] = f"http://{address[0]}:{address[1]}/invocations"
        return url

    async def _forward(
        self,
        route: EndpointRoute,
        target: Target,
        api: str,
        request_id: str,
        body: bytes,
        *,
        send: Any = None,
        record: InferenceRecord | None = None,
        started: float = 0.0,
        return_trace: bool = False,
        receive: Any = None,
    ) -> tuple[int, bytes, bytes | None] | None:
        """(status, response JSON, trace JSON or None) from the worker, or a domain error. With
        `send` (a `stream: true` request) an event stream from the worker is relayed as it comes
        and None is returned once it has been sent."""
        wake = self.scale_to_zero
        if wake is not None:
            wake.touch(target.worker_key)
            if wake.needs_wake(target.worker_key):  # scaled to zero: held while it starts, not refused
                await wake.wake(target.worker_key, timeout_s=route.timeout_s)
        address = self.backend.address(target.worker_key)
        if address is None:
            raise Unavailable(
                f"Served entity {target.served_name!r} of endpoint {route.name!r} is not running; "
                "it is being (re)started.",
                retry_after=RETRY_AFTER_S,
            )
        assert self._session is not None, "Gateway.start() was not called"
        in_flight = self.controller.in_flight
        key = target.worker_key
        in_flight[key] = in_flight.get(key, 0) + 1
        try:
            async with self._session.post(
                self._url(address),
                data=body,
                timeout=route.timeout,
                headers={
                    "content-type": "application/json",
                    "x-request-id": request_id,
                    "x-agentdeploy-api": api,
                },
            ) as answer:
                status = answer.status
                if send is not None and status == 200 and answer.content_type == "text/event-stream":
                    assert record is not None
                    await self._relay_stream(answer, send, target, record, started, return_trace, receive)
                    return None
                data = await answer.read()
                length = answer.headers.get(RESPONSE_LENGTH)
        except TimeoutError:
            raise DeadlineExceeded(
                f"Serving endpoint {route.name!r} did not answer within {route.timeout_s:g}s "
                "(AGENTDEPLOY_ENDPOINT_TIMEOUT_S)."
            ) from None
        except aiohttp.ClientError as exc:
            raise Unavailable(
                f"Served entity {target.served_name!r} of endpoint {route.name!r} is unavailable "
                f"({type(exc).__name__}); retry shortly.",
                retry_after=RETRY_AFTER_S,
            ) from None
        finally:
            in_flight[key] -= 1
            if wake is not None:  # idle time counts from a request's end, not its start
                wake.touch(key)
        if status == 200 and length is not None:
            n = int(length)
            return 200, data[:n], (data[n:] or None)
        if status == 200:
            return 200, data, None
        return status, data, None

    async def _relay_stream(
        self,
        answer: aiohttp.ClientResponse,
        send: Any,
        target: Target,
        record: InferenceRecord,
        started: float,
        return_trace: bool = False,
        receive: Any = None,
    ) -> None:
        """Relay the worker's server-sent events to the client; keep the trace event for the log
        (it reaches the client only with `databricks_options.return_trace`, as a last
        `event: trace`). The record is handed to the sink before the stream ends; its response is
        the chunks aggregated into one non-streamed answer (`tables.streams.aggregate_stream`).
        A client that goes away mid-stream (`receive`: `http.disconnect`) stops the relay and its
        row is logged with status 499 (client closed request) and what it was sent."""
        if record.inference_table and not getattr(self.sink, "available", True):  # refuse, not unlogged
            raise Unavailable("Cannot log this request: the payload spool is not writable; retry shortly.",
                              retry_after=RETRY_AFTER_S)
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [
                    (b"content-type", b"text/event-stream"),
                    (b"cache-control", b"no-cache"),
                    (b"x-request-id", record.databricks_request_id.encode()),
                    (b"served-model-name", target.served_header),
                ],
            }
        )
        chunks: list[bytes] = []
        buffer = b""
        status = 200
        gone = False

        async def watch_disconnect() -> None:
            nonlocal gone
            while (await receive())["type"] != "http.disconnect":
                pass
            gone = True
            answer.close()  # ends the upstream read below; the worker cancels the agent's work

        watcher = asyncio.ensure_future(watch_disconnect()) if receive is not None else None
        try:
            async for piece in answer.content.iter_any():
                buffer += piece
                while b"\n\n" in buffer:
                    event, buffer = buffer.split(b"\n\n", 1)
                    if event.startswith(b"event: trace\n"):
                        record.trace = event[len(b"event: trace\ndata: ") :]
                        if not return_trace:
                            continue
                    if event.startswith(b"data: "):
                        chunks.append(event[6:])
                    elif event.startswith(b"event: error"):
                        status = 500
                    await send({"type": "http.response.body", "body": event + b"\n\n", "more_body": True})
        except (TimeoutError, aiohttp.ClientError) as exc:
            status = 504 if isinstance(exc, TimeoutError) else 503
            error = orjson.dumps(
                {
                    "error_code": "DEADLINE_EXCEEDED" if status == 504 else "TEMPORARILY_UNAVAILABLE",
                    "message": f"The stream from the agent ended early ({type(exc).__name__}).",
                }
            )
            await send(
                {
                    "type": "http.response.body",
                    "body": b"event: error\ndata: " + error + b"\n\n",
                    "more_body": True,
                }
            )
        finally:
            if watcher is not None:
                watcher.cancel()
        if gone:
            status = CLIENT_CLOSED_REQUEST
        elif record.api == "chat.completions":
            await send({"type": "http.response.body", "body": b"data: [DONE]\n\n", "more_body": True})
        latency_ms = (time.perf_counter() - started) * 1000.0
        target.metrics.observe(status, latency_ms)
        record.execution_time_ms, record.status_code = int(latency_ms), status
        record.response = aggregate_stream(chunks)
        record.streamed = True
        try:
            await self.sink.append(record)
        except AgentDeployError as exc:  # the stream was sent: end it with the error, never a 2nd start
            log.error("request %s: its stream was sent but could not be logged: %s",
                      record.databricks_request_id, exc.message)
            await send({"type": "http.response.body", "more_body": True,
                        "body": b"event: error\ndata: " + _error_body(exc) + b"\n\n"})
        await send({"type": "http.response.body", "body": b"", "more_body": False})


def _retry_after(exc: AgentDeployError) -> list[tuple[bytes, bytes]]:
    if exc.retry_after is None:
        return []
    return [(b"retry-after", str(max(1, int(exc.retry_after + 0.999))).encode())]
