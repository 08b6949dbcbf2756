"""A worker: one served entity's MLflow model behind HTTP on loopback.

    python -m agentdeploy.serving.worker            a worker, configured by its environment
    python -m agentdeploy.serving.worker --spare    a spare: imports first, is told what to be

A spare is how workers start fast: the backend keeps one interpreter that has already imported
mlflow and the web server (most of a start), waiting on stdin. To become a worker it reads one
JSON line, `{"log", "uid", "cwd", "env"}`: it sends its output to the log, drops to the uid
(groups, gid, uid; no way back), moves to cwd and replaces its whole environment with env, then
runs as any worker. Until then it holds nothing of an entity's.

Configured only by its environment (the backend scrubs everything else away):

    AGENTDEPLOY_WORKER_NAME         served entity key (for logs)
    AGENTDEPLOY_WORKER_MODEL_PATH   local directory holding the downloaded MLflow model
    AGENTDEPLOY_WORKER_HOST/PORT    where to listen (127.0.0.1)
    AGENTDEPLOY_HOST                workspace URL, for agent code (`agentdeploy.runtime`)
    AGENTDEPLOY_CREDENTIALS_FILE    the served entity's token file, for agent code

Protocol (the gateway speaks it):

- `GET /health`: 503 `{"status": "LOADING"}` until the model is loaded, then 200
  `{"status": "READY", "agent_type": ...}`. A model that fails to load ends the process (exit 3)
  with the stack in the log, so the supervisor sees it at once.
- `POST /invocations`, headers `x-request-id` (the Databricks request id) and `x-agentdeploy-api`
  (`invocations` | `chat.completions` | `responses`: the client shape), body = the client's JSON
  without `databricks_options`. Success: 200, header `x-agentdeploy-response-length: N`, body =
  the response JSON (exactly N bytes, an object) immediately followed by the trace JSON (a dict,
  or `null`), so the gateway passes the first N bytes through without parsing them.
  Failure: 400 (input the model rejects) or 500 (the agent raised), body
  `{"error_code": "BAD_REQUEST" | "AGENT_ERROR", "message": "<ExceptionType>: <message>"}`;
  the stack goes to this worker's log only.
- `"stream": true` in the body: `text/event-stream`, one `data: <chunk>\\n\\n` per chunk of the
  model's `predict_stream` as it is produced, a failure mid-stream as `event: error`, and last
  `event: trace\\ndata: <trace or null>\\n\\n`. A failure before the first chunk is a plain JSON
  error as above.

Predictions run on a thread pool so `/health` answers while an agent works; each request's trace
is captured in-process (`agentdeploy.serving.tracing`), never exported on the request path.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import logging
import os
import signal
import sys
import threading
import time
import uuid
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any, cast

from agentdeploy.serving import schemas, tracing

try:  # ~5x faster than json for the response and the trace; json when absent.
    import orjson

    def _dumps(value: Any) -> bytes:
        return orjson.dumps(value, default=str, option=orjson.OPT_SERIALIZE_NUMPY)

    _loads: Callable[[bytes], Any] = orjson.loads
except ImportError:  # pragma: no cover
    import json

    def _dumps(value: Any) -> bytes:
        return json.dumps(value, default=str, separators=(",", ":")).encode()

    _loads = json.loads

__all__ = ["WorkerApp", "load_model", "main", "ENV_NAME", "ENV_MODEL_PATH", "ENV_HOST", "ENV_PORT"]

ENV_NAME = "AGENTDEPLOY_WORKER_NAME"
ENV_MODEL_PATH = "AGENTDEPLOY_WORKER_MODEL_PATH"
ENV_HOST = "AGENTDEPLOY_WORKER_HOST"
ENV_PORT = "AGENTDEPLOY_WORKER_PORT"

PREDICT_THREADS = 16  # agents mostly wait on I/O (SQL, other endpoints): more threads than cores
MAX_MESSAGE_CHARS = 1000
EXIT_LOAD_FAILED = 3

log = logging.getLogger("agentdeploy.worker")

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]


class LoadedModel:
    """The pyfunc model, its flavour and (for plain pyfunc models) its input schema."""

    def __init__(self, model: Any, agent_type: schemas.AgentType) -> None:
        self.model = model
        self.agent_type: schemas.AgentType = agent_type
        self.input_schema = model.metadata.get_input_schema() if agent_type == "PythonModel" else None
        flavor = model.metadata.flavors.get("python_function", {})
        self.streamable = bool(flavor.get("streamable")) or agent_type == "ResponsesAgent"


def load_model(model_path: str) -> LoadedModel:
    import mlflow.pyfunc
    from mlflow.pyfunc import ChatAgent, ChatModel, ResponsesAgent

    model = mlflow.pyfunc.load_model(model_path)
    # The flavour wrappers keep the user's object under different names (chat_model,
    # responses_agent, ...); get_raw_model() returns it, plain pyfunc wrappers have python_model.
    impl = getattr(model, "_model_impl", None)
    get_raw = getattr(impl, "get_raw_model", None)
    raw = get_raw() if callable(get_raw) else getattr(impl, "python_model", None)
    agent_type: schemas.AgentType = "PythonModel"
    for cls, name in ((ResponsesAgent, "ResponsesAgent"), (ChatModel, "ChatModel"), (ChatAgent, "ChatAgent")):
        if isinstance(raw, cls):
            agent_type = name  # type: ignore[assignment]
            break
    return LoadedModel(model, agent_type)


class RequestError(Exception):
    def __init__(self, status: int, error_code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.error_code, self.message = status, error_code, message


def _describe(exc: BaseException) -> str:
    text = f"{type(exc).__name__}: {exc}"
    return text if len(text) <= MAX_MESSAGE_CHARS else text[: MAX_MESSAGE_CHARS - 3] + "..."


def _is_bad_input(exc: BaseException) -> bool:
    """Input the model rejects as invalid (400) rather than an agent failure (500)."""
    if isinstance(exc, schemas.InvalidModelInput):
        return True
    try:
        import pydantic
        from mlflow.exceptions import MlflowException
    except ImportError:  # pragma: no cover
        return False
    if isinstance(exc, pydantic.ValidationError):
        return True
    return isinstance(exc, MlflowException) and exc.error_code in ("INVALID_PARAMETER_VALUE", "BAD_REQUEST")


def _error_for(exc: BaseException, request_id: str) -> RequestError:
    if isinstance(exc, RequestError):
        return exc
    bad_input = _is_bad_input(exc)
    log.error("request %s failed: %s", request_id, "bad input" if bad_input else "agent error", exc_info=exc)
    return RequestError(
        400 if bad_input else 500, "BAD_REQUEST" if bad_input else "AGENT_ERROR", _describe(exc)
    )


class WorkerApp:
    """The raw ASGI app of a worker (no framework on the request path)."""

    def __init__(self, name: str, model_path: str) -> None:
        self.name = name
        self.model_path = model_path
        self.loaded: LoadedModel | None = None
        self.executor = concurrent.futures.ThreadPoolExecutor(PREDICT_THREADS, thread_name_prefix="predict")
        self._ready_body = b""

    # --- loading ------------------------------------------------------------------------------
    def load(self) -> None:
        """Load the model (in a thread, while /health answers 503). Exits the process on failure."""
        started = time.monotonic()
        try:
            loaded = load_model(self.model_path)
        except BaseException:
            log.exception("worker %s: the model at %s failed to load", self.name, self.model_path)
            logging.shutdown()
            sys.stderr.flush()
            os._exit(EXIT_LOAD_FAILED)
        self._ready_body = _dumps({"status": "READY", "agent_type": loaded.agent_type})
        self.loaded = loaded
        log.info("worker %s: %s loaded in %.2fs", self.name, loaded.agent_type, time.monotonic() - started)

    # --- ASGI ---------------------------------------------------------------------------------
    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        path, method = scope["path"], scope["method"]
        if path == "/health" and method == "GET":
            if self.loaded is None:
                await _respond(send, 503, b'{"status":"LOADING"}')
            else:
                await _respond(send, 200, self._ready_body)
            return
        if path != "/invocations":
            await _respond(send, 404, _dumps({"error_code": "NOT_FOUND", "message": f"No route {path}."}))
            return
        if method != "POST":
            await _respond(send, 405, b'{"error_code":"METHOD_NOT_ALLOWED","message":"Use POST."}')
            return
        await self._invocations(scope, receive, send)

    async def _invocations(self, scope: Scope, receive: Receive, send: Send) -> None:
        request_id, api_header = "", "invocations"
        for key, value in scope["headers"]:
            if key == b"x-request-id":
                request_id = value.decode("latin-1")
            elif key == b"x-agentdeploy-api":
                api_header = value.decode("latin-1")
        request_id = request_id or uuid.uuid4().hex
        chunks = []
        while True:
            message = await receive()
            chunks.append(message.get("body", b""))
            if not message.get("more_body"):
                break
        try:
            loaded = self.loaded
            if loaded is None:
                raise RequestError(503, "TEMPORARILY_UNAVAILABLE", "The model is still loading.")
            if api_header not in schemas.APIS:
                raise RequestError(
                    400, "BAD_REQUEST", f"x-agentdeploy-api must be one of {', '.join(schemas.APIS)}."
                )
            api = cast(schemas.Api, api_header)
            try:
                body = _loads(b"".join(chunks))
            except ValueError:
                raise RequestError(400, "BAD_REQUEST", "Malformed JSON in the request body.") from None
            if not isinstance(body, dict):
                raise RequestError(400, "BAD_REQUEST", "The request body must be a JSON object.")
            if body.get("stream") is True:
                await self._stream(loaded, request_id, api, body, receive, send)
                return
            loop = asyncio.get_running_loop()
            response, trace = await loop.run_in_executor(
                self.executor, self._predict, loaded, request_id, api, body
            )
        except RequestError as exc:
            await _respond(send, exc.status, _dumps({"error_code": exc.error_code, "message": exc.message}))
            return
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(response) + len(trace)).encode()),
                    (b"x-agentdeploy-response-length", str(len(response)).encode()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": response + trace})

    # --- prediction (on the pool) ---------------------------------------------------------------
    def _model_input(self, loaded: LoadedModel, api: schemas.Api, body: dict[str, Any]) -> Any:
        data = schemas.to_model_input(loaded.agent_type, api, body)
        if loaded.agent_type == "PythonModel" and any(
            k in data for k in ("dataframe_split", "dataframe_records", "instances", "inputs")
        ):
            from mlflow.pyfunc.scoring_server import infer_and_parse_data

            data = infer_and_parse_data(data, loaded.input_schema)  # type: ignore[arg-type]
        return data

    def _predict(
        self, loaded: LoadedModel, request_id: str, api: schemas.Api, body: dict[str, Any]
    ) -> tuple[bytes, bytes]:
        try:
            data = self._model_input(loaded, api, body)
            with tracing.request_context(request_id):
                try:
                    output = loaded.model.predict(data)
                finally:
                    trace = tracing.pop_trace(request_id)
            if loaded.agent_type == "PythonModel":
                output = _jsonable_predictions(output)
            client_output = schemas.to_client_output(
                loaded.agent_type,
                api,
                output,
                model=self.name,
            )
            response = _dumps(client_output)
        except Exception as exc:
            raise _error_for(exc, request_id) from None
        if not response.startswith(b"{"):
            response = _dumps({"predictions": client_output})
        try:
            trace_bytes = _dumps(trace)
        except Exception:  # a trace that cannot be serialised must not fail the answer
            log.exception("request %s: trace not serialisable; answered without it", request_id)
            trace_bytes = b"null"
        return response, trace_bytes

    async def _stream(
        self,
        loaded: LoadedModel,
        request_id: str,
        api: schemas.Api,
        body: dict[str, Any],
        receive: Receive,
        send: Send,
    ) -> None:
        if not loaded.streamable:
            raise RequestError(
                400, "BAD_REQUEST", f"This {loaded.agent_type} does not stream; omit 'stream'."
            )
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()
        cancelled = threading.Event()
        stream_id = f"chatcmpl-{uuid.uuid4().hex[:24]}"

        def put(kind: str, value: Any) -> None:
            loop.call_soon_threadsafe(queue.put_nowait, (kind, value))

        def produce() -> None:
            trace = None
            try:
                data = self._model_input(loaded, api, body)
                with tracing.request_context(request_id):
                    try:
                        chunks = loaded.model.predict_stream(data)
                        for chunk in chunks:
                            converted = schemas.to_client_chunk(
                                loaded.agent_type,
                                api,
                                chunk,
                                model=self.name,
                                stream_id=stream_id,
                            )
                            if converted is not None:
                                put("chunk", _dumps(converted))
                            if cancelled.is_set():  # the client went away: stop the agent's work
                                close = getattr(chunks, "close", None)
                                if close:
                                    close()
                                break
                    finally:
                        trace = tracing.pop_trace(request_id)
            except Exception as exc:
                put("error", _error_for(exc, request_id))
            finally:
                put("trace", trace)

        future = loop.run_in_executor(self.executor, produce)
        kind, value = await queue.get()
        if kind == "error":  # failed before its first chunk: a plain JSON error
            await queue.get()
            await future
            raise value
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [
                    (b"content-type", b"text/event-stream"),
                    (b"cache-control", b"no-cache"),
                ],
            }
        )

        async def watch_disconnect() -> None:
            while (await receive())["type"] != "http.disconnect":
                pass
            cancelled.set()

        watcher = asyncio.ensure_future(watch_disconnect())
        try:
            while True:
                if kind == "chunk":
                    await send(
                        {"type": "http.response.body", "body": b"data: " + value + b"\n\n", "more_body": True}
                    )
                elif kind == "error":
                    error = _dumps({"error_code": value.error_code, "message": value.message})
                    await send(
                        {
                            "type": "http.response.body",
                            "body": b"event: error\ndata: " + error + b"\n\n",
                            "more_body": True,
                        }
                    )
                else:
                    await send(
                        {
                            "type": "http.response.body",
                            "body": b"event: trace\ndata: " + _dumps(value) + b"\n\n",
                        }
                    )
                    break
                kind, value = await queue.get()
        finally:
            watcher.cancel()
            cancelled.set()
        await future


def _jsonable_predictions(output: Any) -> Any:
    """A plain pyfunc's predictions as Databricks answers them: `{"predictions": ...}`."""
    if isinstance(output, dict):
        return output
    import io

    from mlflow.pyfunc.scoring_server import predictions_to_json

    buffer = io.StringIO()
    predictions_to_json(output, buffer)
    return _loads(buffer.getvalue().encode())


async def _respond(send: Send, status: int, body: bytes) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


def _die_with_parent() -> None:
    """Linux: end when the supervising server dies, instead of lingering on its port."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):  # pragma: no cover - not Linux
        return
    if os.getppid() == 1:  # the parent is already gone
        sys.exit("the supervising process is gone")


def _preload() -> None:
    """What every worker imports anyway, most of its start-up time."""
    import mlflow.pyfunc  # noqa: F401
    import uvicorn  # noqa: F401
    import uvicorn.loops.uvloop  # noqa: F401
    import uvicorn.protocols.http.httptools_impl  # noqa: F401
    from mlflow.pyfunc import ChatAgent, ChatModel, ResponsesAgent  # noqa: F401
    from mlflow.pyfunc.scoring_server import infer_and_parse_data  # noqa: F401


def _become(order: dict[str, Any]) -> None:
    """Turn this spare into the worker `order` describes (see the module docstring)."""
    import tempfile

    log_fd = os.open(order["log"], os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    os.dup2(log_fd, 1)
    os.dup2(log_fd, 2)
    os.close(log_fd)
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.close(null)
    uid = order.get("uid")
    if uid is not None:
        os.setgroups([])
        os.setresgid(uid, uid, uid)
        os.setresuid(uid, uid, uid)
    os.chdir(order["cwd"])
    os.environ.clear()
    os.environ.update(order["env"])
    os.environ.update(tracing.SERVING_ENV)  # what mlflow was imported under
    tempfile.tempdir = None  # chosen again from the new TMPDIR


def spare_main() -> None:
    tracing.enable_request_traces()  # before anything imports mlflow
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    _die_with_parent()
    _preload()
    line = sys.stdin.buffer.readline()
    if not line.strip():
        sys.exit(0)  # the backend closed it unused
    _become(json.loads(line))
    main()


def main() -> None:
    tracing.enable_request_traces()  # before anything imports mlflow (a spare: already done)
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")  # a worker makes no calls of its own
    _die_with_parent()  # again in a spare: a change of uid clears the parent-death signal
    logging.basicConfig(
        level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    name = os.environ.get(ENV_NAME, "worker")
    model_path = os.environ.get(ENV_MODEL_PATH)
    if not model_path:
        sys.exit(f"{ENV_MODEL_PATH} is not set")
    host = os.environ.get(ENV_HOST, "127.0.0.1")
    port = int(os.environ.get(ENV_PORT, "0") or 0)
    app = WorkerApp(name, model_path)
    threading.Thread(target=app.load, name="load-model", daemon=True).start()

    import uvicorn

    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        loop="uvloop",
        http="httptools",
        lifespan="off",
        access_log=False,
        log_level="warning",
        # Longer than any gateway pool keeps an idle connection: the gateway closes first, so it
        # never sends on a connection the worker has just dropped.
        timeout_keep_alive=300,
    )
    log.info("worker %s listening on %s:%d (pid %d, uid %d)", name, host, port, os.getpid(), os.getuid())
    uvicorn.Server(config).run()


if __name__ == "__main__":
    spare_main() if sys.argv[1:] == ["--spare"] else main()
