"""The agentdeploy server: one ASGI app assembled from the domain routers.

    uvicorn agentdeploy.server:app   (what `agentdeploy up` runs)

Routes are explicit lists; errors of every route are mapped by one handler to the Databricks
error shape `{"error_code", "message"}`; an unexpected error answers 500 with a request id and
the stack goes to the server log only.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import uuid
from collections.abc import AsyncIterator
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Receive, Scope, Send

from agentdeploy.errors import AgentDeployError
from agentdeploy.review import api as review_api
from agentdeploy.serving import api as serving_api
from agentdeploy.serving import credentials as agent_credentials
from agentdeploy.serving import deployments
from agentdeploy.settings import Settings, get_settings
from agentdeploy.workspace import audit
from agentdeploy.workspace.api import (
    agents,
    catalog,
    oauth,
    permissions,
    scim,
    secrets,
    sql,
    tokens,
    warehouses,
)
from agentdeploy.workspace.api import tables as table_data
from agentdeploy.workspace.bootstrap import bootstrap
from agentdeploy.workspace.context import Workspace

__all__ = ["create_app", "create_server_app", "ServerApp", "app"]

log = logging.getLogger("agentdeploy.server")

ROUTERS = [
    tokens.router,
    scim.router,
    oauth.router,
    catalog.router,
    permissions.router,
    warehouses.router,
    secrets.router,
    sql.router,
    table_data.router,
    serving_api.router,
    agents.router,
    agent_credentials.router,
    deployments.router,
    review_api.router,
]


def error_response(exc: AgentDeployError) -> JSONResponse:
    headers = {"Retry-After": str(max(1, round(exc.retry_after)))} if exc.retry_after is not None else None
    return JSONResponse(exc.to_json(), status_code=exc.status_code, headers=headers)


def _describe_validation_error(exc: RequestValidationError) -> str:
    parts = []
    for err in exc.errors()[:5]:
        loc = [str(p) for p in err.get("loc", ()) if p not in ("body", "query", "path")]
        if err.get("type") == "json_invalid":
            return "Malformed JSON in the request body."
        if err.get("type") == "missing" and not loc:
            return "The request body is missing or empty; send a JSON object."
        field = ".".join(loc) or "body"
        parts.append(f"'{field}': {err.get('msg', 'invalid value')}")
    return "Invalid request: " + "; ".join(parts) + "."


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(AgentDeployError)
    async def _domain_error(_: Request, exc: AgentDeployError) -> JSONResponse:
        return error_response(exc)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(_: Request, exc: RequestValidationError) -> JSONResponse:
        return JSONResponse(
            {"error_code": "INVALID_PARAMETER_VALUE", "message": _describe_validation_error(exc)}, status_code=400
        )

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        codes = {404: "ENDPOINT_NOT_FOUND", 405: "METHOD_NOT_ALLOWED"}
        message = f"No API at {request.method} {request.url.path}." if exc.status_code in (404, 405) else str(exc.detail)
        return JSONResponse({"error_code": codes.get(exc.status_code, "BAD_REQUEST"), "message": message},
                            status_code=exc.status_code)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        incident = uuid.uuid4().hex[:12]
        log.error("unhandled error on %s %s (incident %s)", request.method, request.url.path, incident, exc_info=exc)
        return JSONResponse(
            {"error_code": "INTERNAL_ERROR", "message": f"Internal error (incident {incident}); see the server log."},
            status_code=500,
        )


class ClientContextMiddleware:
    """Records who is calling from where (user agent, address) for the audit log, and reads
    `/api/` bodies as JSON whatever their content type (as Databricks does for `curl -d`)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            headers = dict(scope.get("headers") or ())
            client = scope.get("client") or ("", 0)
            audit.client_context.set(
                {"ip": str(client[0]), "user_agent": headers.get(b"user-agent", b"").decode("latin-1")}
            )
            if scope["path"].startswith("/api/") and headers.get(b"content-type", b"").split(b";")[0] != b"application/json":
                raw = [(k, v) for k, v in scope["headers"] if k != b"content-type"]
                scope = dict(scope, headers=[*raw, (b"content-type", b"application/json")])
        await self.app(scope, receive, send)


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        workspace = Workspace(settings)
        app.state.workspace = workspace
        app.state.settings = settings
        bootstrap(workspace)
        serving = await _start_serving(app, workspace, settings)
        try:
            yield
        finally:
            await serving.aclose()
            workspace.close()

    app = FastAPI(title="agentdeploy", lifespan=lifespan, docs_url="/api/docs", redoc_url=None,
                  openapi_url="/api/openapi.json")
    install_error_handlers(app)
    app.add_middleware(ClientContextMiddleware)

    @app.get("/api/health", include_in_schema=False)
    def health() -> dict[str, Any]:
        return {"status": "ok"}

    for router in ROUTERS:
        app.include_router(router)
    return app


# Serving: the gateway beside the REST API ----------------------------------------------------


class ServerApp:
    """The outer ASGI app: `/serving-endpoints/...` goes to the gateway (a raw ASGI app, the hot
    path), everything else (and the lifespan) to the FastAPI app."""

    def __init__(self, api: FastAPI) -> None:
        self.api = api
        self.gateway: ASGIApp | None = None
        api.state.server_app = self

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.gateway is not None and scope["type"] == "http" and scope["path"].startswith("/serving-endpoints/"):
            await self.gateway(scope, receive, send)
        else:
            await self.api(scope, receive, send)


def _not_a_query(record: logging.LogRecord) -> bool:
    args = record.args
    return not (isinstance(args, tuple) and len(args) > 2 and str(args[2]).startswith("/serving-endpoints/"))


async def _start_serving(app: FastAPI, workspace: Workspace, settings: Settings) -> contextlib.AsyncExitStack:
    """Backend, endpoint controller and gateway; then every endpoint's workers come back."""
    from agentdeploy.serving.backends.local import LocalProcessBackend
    from agentdeploy.serving.endpoints import EndpointController
    from agentdeploy.serving.feedback_native import FeedbackHandler, IndexingSink
    from agentdeploy.serving.gateway import Gateway
    from agentdeploy.tables.payload_writer import PayloadSink
    from agentdeploy.tables.request_index import RecentRequests

    stack = contextlib.AsyncExitStack()
    # Queries are logged in the payload tables; an access-log line each would only slow them.
    logging.getLogger("uvicorn.access").addFilter(_not_a_query)
    # The payload spool first and stopped last: what a crash left is replayed before any endpoint
    # comes back, and every answered request is spooled before the sink stops.
    secrets = KnownSecrets(workspace)
    payload_sink = PayloadSink.from_settings(settings, redactors=secrets.redactor_for)
    await payload_sink.start()
    stack.push_async_callback(payload_sink.stop)
    app.state.payload_sink = payload_sink
    backend = LocalProcessBackend(settings)
    stack.push_async_callback(backend.close)
    credentials = agent_credentials.CredentialStore(settings.home_dir / "agent-credentials")
    controller = EndpointController(
        workspace, backend, drain_timeout_s=settings.endpoint_timeout_s,
        resolve_environment=secrets.resolve,
        credentials=credentials,
    )
    credentials.subscribe(controller.push_credentials)
    app.state.agent_credentials = credentials
    recent = RecentRequests()
    from agentdeploy.serving.supervisor import ScaleToZero

    # Scale to zero: idle workers of scale_to_zero_enabled entities stop; a request wakes them.
    scale_to_zero = ScaleToZero(backend, idle_s=settings.scale_to_zero_idle_s,
                                busy=lambda key: controller.in_flight.get(key, 0) > 0)
    controller.scale_to_zero = scale_to_zero
    scale_to_zero.start()
    stack.push_async_callback(scale_to_zero.close)
    app.state.scale_to_zero = scale_to_zero
    gateway = Gateway(workspace, controller, backend, sink=IndexingSink(payload_sink, recent))
    gateway.scale_to_zero = scale_to_zero
    gateway.native_handler = FeedbackHandler(recent, settings.warehouse_dir, payload_sink)
    app.state.serving_controller = controller
    app.state.serving_metrics = gateway.metrics
    app.state.serving_backend = backend
    app.state.gateway = gateway
    await gateway.start()
    stack.push_async_callback(gateway.close)
    stack.push_async_callback(controller.close)
    server_app = getattr(app.state, "server_app", None)
    if server_app is not None:
        server_app.gateway = gateway
    await controller.restore()
    return stack


class KnownSecrets:
    """The secret values resolved into workers' environments (memory only), as one `Redactor`.

    Every payload row is redacted of every known value, not only its own entity's: a secret of
    one agent echoed by another is as much a leak, and the check is a substring search per value.
    """

    def __init__(self, workspace: Workspace) -> None:
        from agentdeploy.tables.payload import Redactor

        self.workspace = workspace
        self._values: set[str] = set()
        self._redactor = Redactor(())
        self._lock = threading.Lock()

    def resolve(self, env: dict[str, str], creator: str) -> dict[str, str]:
        """The controller's `resolve_environment`: resolves, and remembers the secret values."""
        from agentdeploy.serving.endpoints import SECRET_REFERENCE, resolve_secret_references
        from agentdeploy.tables.payload import Redactor

        resolved = resolve_secret_references(self.workspace, env, creator)
        found = {resolved[k] for k, v in env.items() if SECRET_REFERENCE.match(v) and resolved.get(k)}
        with self._lock:
            if not found <= self._values:
                self._values |= found
                self._redactor = Redactor(self._values)
        return resolved

    def redactor_for(self, _request: Any) -> Any:
        return self._redactor if self._redactor else None


def create_server_app(settings: Settings | None = None) -> ServerApp:
    return ServerApp(create_app(settings))


def __getattr__(name: str) -> Any:
    # `uvicorn agentdeploy.server:app` builds the app from the environment on first access.
    if name == "app":
        return create_server_app()
    raise AttributeError(name)
