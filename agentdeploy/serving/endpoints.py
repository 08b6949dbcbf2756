"""Serving endpoints: their configs in the workspace database, and the roll-out of a new config.

An endpoint row holds the config that serves (`config`), the one being rolled out
(`pending_config`), tags, `ai_gateway` (stored as given) and the state of the last update. A
config is a plain JSON document in the Databricks shape:

    {"config_version": 2,
     "served_entities": [{"name", "entity_name", "entity_version", "workload_size",
                          "scale_to_zero_enabled", "environment_vars", "creator", "creation_timestamp"}],
     "traffic_config": {"routes": [{"served_model_name", "served_entity_name", "traffic_percentage"}]}}

`environment_vars` values may be secret references (`{{secrets/scope/key}}`): the reference is
stored; it is resolved only when the worker starts.

`EndpointController` owns the roll-out: a create or a config update is stored as `pending_config`
with `config_update = IN_PROGRESS` and returns at once; in the background the new served entities
start through the serving backend; once every one is healthy the pending config becomes the
serving config in one transaction (the gateway's routing table is rebuilt on that commit), the
requests still running on removed entities drain, and those entities stop. A failed start leaves
the old config serving and records UPDATE_FAILED with the worker's last log lines.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import re
import uuid
from collections.abc import Callable, Coroutine
from concurrent.futures import Future
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import JSON, ForeignKey, Integer, String, Text, select
from sqlalchemy.orm import Mapped, Session, mapped_column

from agentdeploy.errors import AlreadyExists, Conflict, InvalidParameterValue, NotFound
from agentdeploy.workspace.db import Base, UTCDateTime, utcnow

__all__ = [
    "ServingEndpoint",
    "EndpointController",
    "EntityState",
    "validate_endpoint_name",
    "normalize_config",
    "normalize_ai_gateway",
    "normalize_tags",
    "worker_key",
    "get_endpoint",
    "find_endpoint",
    "list_endpoints",
    "served_entities",
    "SECRET_REFERENCE",
    "resolve_secret_references",
    "is_native",
    "FEEDBACK_SERVED_MODEL",
]

log = logging.getLogger("agentdeploy.serving")

_ENDPOINT_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,62}$")
_SERVED_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,127}$")
SECRET_REFERENCE = re.compile(r"^\{\{secrets/([A-Za-z0-9_.\-]+)/([A-Za-z0-9_.\-]+)\}\}$")
WORKLOAD_SIZES = ("Small", "Medium", "Large")
MAX_SERVED_ENTITIES = 10
# Names the platform sets in a worker's environment: an agent's config may not override them.
_RESERVED_ENV_PREFIXES = ("AGENTDEPLOY_", "MLFLOW_", "IS_IN_DB_MODEL_SERVING_ENV", "ENABLE_MLFLOW_TRACING")


class ServingEndpoint(Base):
    __tablename__ = "serving_endpoints"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    name: Mapped[str] = mapped_column(String(63), unique=True)
    creator_id: Mapped[int | None] = mapped_column(
        ForeignKey("principals.id", ondelete="SET NULL"), nullable=True
    )
    creator: Mapped[str] = mapped_column(String(255))
    description: Mapped[str] = mapped_column(String(1024), default="")
    config: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    pending_config: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    tags: Mapped[list[dict[str, str]]] = mapped_column(JSON, default=list)
    ai_gateway: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    ready: Mapped[str] = mapped_column(String(16), default="NOT_READY")
    config_update: Mapped[str] = mapped_column(String(16), default="IN_PROGRESS")
    state_message: Mapped[str] = mapped_column(Text, default="")
    # The highest config_version handed out (a failed update's number is not reused).
    last_config_version: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


# Validation -----------------------------------------------------------------------------------


def validate_endpoint_name(name: object) -> str:
    if not isinstance(name, str) or not _ENDPOINT_NAME.match(name):
        raise InvalidParameterValue(
            "'name' must be 1 to 63 letters, digits, '-' or '_' (starting with a letter or digit); "
            f"got {str(name)[:80]!r}."
        )
    return name


def _default_served_name(entity_name: str, version: str) -> str:
    # Databricks' rule for agents: the model name cut to fit 63 with `_{version}`, `.` -> `-`.
    suffix = f"_{version}"
    return entity_name[: 63 - len(suffix)].replace(".", "-").rstrip("_-") + suffix


def _check_environment(field: str, env: object) -> dict[str, str]:
    if env is None:
        return {}
    if not isinstance(env, dict):
        raise InvalidParameterValue(f"'{field}' must be an object of name -> string value.")
    out: dict[str, str] = {}
    for key, value in env.items():
        if not isinstance(key, str) or not _ENV_NAME.match(key):
            raise InvalidParameterValue(f"'{field}' has an invalid variable name {str(key)[:80]!r}.")
        if key.startswith(_RESERVED_ENV_PREFIXES):
            raise InvalidParameterValue(f"'{field}.{key}' is set by the platform and cannot be overridden.")
        if not isinstance(value, str):
            raise InvalidParameterValue(f"'{field}.{key}' must be a string.")
        if value.startswith("{{") and not SECRET_REFERENCE.match(value):
            raise InvalidParameterValue(
                f"'{field}.{key}' looks like a secret reference but is not '{{{{secrets/<scope>/<key>}}}}'."
            )
        out[key] = value
    return out


def _normalize_entity(raw: object, index: int, *, field: str, creator: str, now_ms: int) -> dict[str, Any]:
    where = f"{field}[{index}]"
    if not isinstance(raw, dict):
        raise InvalidParameterValue(f"'{where}' must be an object.")
    # `served_models` (the older shape) names the model `model_name` / `model_version`.
    entity_name = raw.get("entity_name", raw.get("model_name"))
    entity_version = raw.get("entity_version", raw.get("model_version"))
    if raw.get("external_model") or raw.get("foundation_model"):
        raise InvalidParameterValue(f"'{where}': external and foundation models are not served here.")
    if not isinstance(entity_name, str) or not entity_name.strip() or len(entity_name) > 255:
        raise InvalidParameterValue(
            f"'{where}.entity_name' must name a registered model (catalog.schema.model)."
        )
    if isinstance(entity_version, int) and not isinstance(entity_version, bool):
        entity_version = str(entity_version)
    if not isinstance(entity_version, str) or not entity_version.isdigit():
        raise InvalidParameterValue(
            f"'{where}.entity_version' must be a model version number; got {entity_version!r}."
        )
    name = raw.get("name") or _default_served_name(entity_name, entity_version)
    if not isinstance(name, str) or not _SERVED_NAME.match(name):
        raise InvalidParameterValue(f"'{where}.name' must be 1 to 63 letters, digits, '.', '-' or '_'.")
    size = raw.get("workload_size") or "Small"
    if size not in WORKLOAD_SIZES:
        raise InvalidParameterValue(f"'{where}.workload_size' must be one of {', '.join(WORKLOAD_SIZES)}.")
    scale_to_zero = raw.get("scale_to_zero_enabled", False)
    if not isinstance(scale_to_zero, bool):
        raise InvalidParameterValue(f"'{where}.scale_to_zero_enabled' must be true or false.")
    return {
        "name": name,
        "entity_name": entity_name,
        "entity_version": entity_version,
        "workload_size": size,
        "scale_to_zero_enabled": scale_to_zero,
        "environment_vars": _check_environment(f"{where}.environment_vars", raw.get("environment_vars")),
        "creator": creator,
        "creation_timestamp": now_ms,
    }


def normalize_config(
    raw: object, *, creator: str, previous: dict[str, Any] | None = None, version: int = 1
) -> dict[str, Any]:
    """A validated config in the stored shape; `previous` supplies what a partial update omits."""
    if not isinstance(raw, dict):
        raise InvalidParameterValue("'config' must be an object with 'served_entities'.")
    now_ms = int(utcnow().timestamp() * 1000)
    field = "served_entities" if raw.get("served_entities") is not None else "served_models"
    given = raw.get(field)
    if given is None:
        if previous is None:
            raise InvalidParameterValue("'config.served_entities' is required: list the models to serve.")
        entities = [dict(e) for e in previous["served_entities"]]
    else:
        if not isinstance(given, list) or not given:
            raise InvalidParameterValue(f"'{field}' must be a non-empty list.")
        if len(given) > MAX_SERVED_ENTITIES:
            raise InvalidParameterValue(f"'{field}' may hold at most {MAX_SERVED_ENTITIES} served entities.")
        old = {e["name"]: e for e in (previous or {}).get("served_entities", [])}
        entities = []
        for i, item in enumerate(given):
            entity = _normalize_entity(item, i, field=field, creator=creator, now_ms=now_ms)
            kept = old.get(entity["name"])
            if kept is not None and _entity_identity(kept) == _entity_identity(entity):
                entity["creator"], entity["creation_timestamp"] = kept["creator"], kept["creation_timestamp"]
            entities.append(entity)
    names = [e["name"] for e in entities]
    if len(set(names)) != len(names):
        raise InvalidParameterValue(f"'{field}' names must be unique; got {names}.")
    traffic = raw.get("traffic_config")
    if traffic is None and previous is not None and given is None:
        traffic = previous["traffic_config"]
    routes = _normalize_routes(traffic, names)
    return {"config_version": version, "served_entities": entities, "traffic_config": {"routes": routes}}


def _normalize_routes(traffic: object, names: list[str]) -> list[dict[str, Any]]:
    if traffic is None:
        # No traffic config: an even split, the remainder to the first entity.
        share, rest = divmod(100, len(names))
        pct = [share + (rest if i == 0 else 0) for i in range(len(names))]
        return [
            {"served_model_name": n, "served_entity_name": n, "traffic_percentage": p}
            for n, p in zip(names, pct, strict=False)
        ]
    if not isinstance(traffic, dict) or not isinstance(traffic.get("routes"), list):
        raise InvalidParameterValue("'traffic_config' must be an object with a 'routes' list.")
    routes: list[dict[str, Any]] = []
    for i, route in enumerate(traffic["routes"]):
        if not isinstance(route, dict):
            raise InvalidParameterValue(f"'traffic_config.routes[{i}]' must be an object.")
        target = route.get("served_entity_name") or route.get("served_model_name")
        if target not in names:
            raise InvalidParameterValue(
                f"'traffic_config.routes[{i}]' names {target!r}, which is not a served entity of this config "
                f"({', '.join(names)})."
            )
        percent = route.get("traffic_percentage")
        if not isinstance(percent, int) or isinstance(percent, bool) or not 0 <= percent <= 100:
            raise InvalidParameterValue(
                f"'traffic_config.routes[{i}].traffic_percentage' must be an integer 0-100."
            )
        routes.append(
            {"served_model_name": target, "served_entity_name": target, "traffic_percentage": percent}
        )
    if sum(r["traffic_percentage"] for r in routes) != 100:
        raise InvalidParameterValue("'traffic_config.routes' percentages must add up to 100.")
    if len({r["served_entity_name"] for r in routes}) != len(routes):
        raise InvalidParameterValue("'traffic_config.routes' names a served entity more than once.")
    return routes


def normalize_ai_gateway(raw: object) -> dict[str, Any] | None:
    """The AI gateway config, stored as given once the parts used here are checked."""
    if raw is None:
        return None
    if not isinstance(raw, dict):
        raise InvalidParameterValue("'ai_gateway' must be an object.")
    limits = raw.get("rate_limits")
    if limits is not None:
        if not isinstance(limits, list):
            raise InvalidParameterValue("'ai_gateway.rate_limits' must be a list.")
        for i, limit in enumerate(limits):
            where = f"ai_gateway.rate_limits[{i}]"
            if not isinstance(limit, dict):
                raise InvalidParameterValue(f"'{where}' must be an object.")
            calls = limit.get("calls")
            if not isinstance(calls, int) or isinstance(calls, bool) or calls < 0:
                raise InvalidParameterValue(
                    f"'{where}.calls' must be a non-negative integer (calls per minute)."
                )
            if limit.get("key", "user") not in ("user", "endpoint"):
                raise InvalidParameterValue(f"'{where}.key' must be 'user' or 'endpoint'.")
            if limit.get("renewal_period", "minute") != "minute":
                raise InvalidParameterValue(f"'{where}.renewal_period' must be 'minute'.")
    table = raw.get("inference_table_config")
    if table is not None and not isinstance(table, dict):
        raise InvalidParameterValue("'ai_gateway.inference_table_config' must be an object.")
    return json.loads(json.dumps(raw))


def normalize_tags(raw: object, field: str = "tags") -> list[dict[str, str]]:
    if raw is None:
        return []
    if not isinstance(raw, list):
        raise InvalidParameterValue(f"'{field}' must be a list of {{key, value}}.")
    tags: dict[str, str] = {}
    for i, tag in enumerate(raw):
        if not isinstance(tag, dict) or not isinstance(tag.get("key"), str) or not tag["key"]:
            raise InvalidParameterValue(f"'{field}[{i}].key' must be a non-empty string.")
        value = tag.get("value", "")
        if not isinstance(value, str):
            raise InvalidParameterValue(f"'{field}[{i}].value' must be a string.")
        tags[tag["key"]] = value
    return [{"key": k, "value": v} for k, v in tags.items()]


def _entity_identity(entity: dict[str, Any]) -> tuple[Any, ...]:
    return (
        entity["entity_name"],
        entity["entity_version"],
        entity["workload_size"],
        tuple(sorted(entity["environment_vars"].items())),
    )


FEEDBACK_SERVED_MODEL = "feedback"


def is_native(entity: dict[str, Any]) -> bool:
    """Served by the gateway itself, with no worker: the feedback model (served model `feedback`
    of a registered `{catalog}.{schema}.feedback`)."""
    return entity["name"] == FEEDBACK_SERVED_MODEL and str(entity["entity_name"]).endswith(".feedback")


def worker_key(endpoint_id: str, entity: dict[str, Any]) -> str:
    """The backend's name for one served entity's worker. The same entity in the next config
    keeps its worker (no restart); a changed one gets a new name, so old and new run side by side."""
    digest = hashlib.sha256(repr(_entity_identity(entity)).encode()).hexdigest()[:10]
    return f"{endpoint_id[:12]}-{entity['name']}-{digest}"


# Reads ----------------------------------------------------------------------------------------


def find_endpoint(session: Session, name: str) -> ServingEndpoint | None:
    return session.scalars(select(ServingEndpoint).where(ServingEndpoint.name == name)).first()


def get_endpoint(session: Session, name: str) -> ServingEndpoint:
    row = find_endpoint(session, name)
    if row is None:
        raise NotFound(f"Serving endpoint {name!r} does not exist.")
    return row


def list_endpoints(session: Session) -> list[ServingEndpoint]:
    return list(session.scalars(select(ServingEndpoint).order_by(ServingEndpoint.name)))


def served_entities(config: dict[str, Any] | None) -> list[dict[str, Any]]:
    return list((config or {}).get("served_entities", []))


# Writes (inside the caller's `ws.change()`) --------------------------------------------------


def create_endpoint(
    session: Session,
    *,
    name: str,
    creator_id: int,
    creator: str,
    config: dict[str, Any] | None,
    tags: list[dict[str, str]],
    ai_gateway: dict[str, Any] | None,
    description: str = "",
) -> ServingEndpoint:
    if find_endpoint(session, name) is not None:
        raise AlreadyExists(f"A serving endpoint named {name!r} already exists.")
    now = utcnow()
    row = ServingEndpoint(
        id=uuid.uuid4().hex,
        name=name,
        creator_id=creator_id,
        creator=creator,
        description=description,
        config=None,
        pending_config=None if config is None else dict(config, start_time=int(now.timestamp() * 1000)),
        tags=tags,
        ai_gateway=ai_gateway,
        ready="NOT_READY",
        config_update="NOT_UPDATING" if config is None else "IN_PROGRESS",
        state_message="",
        last_config_version=0 if config is None else 1,
        created_at=now,
        updated_at=now,
    )
    session.add(row)
    session.flush()
    return row


def begin_update(
    session: Session, row: ServingEndpoint, raw_config: object, *, actor: str
) -> ServingEndpoint:
    if row.config_update == "IN_PROGRESS":
        raise Conflict(
            f"Serving endpoint {row.name!r} is already being updated; wait until its config_update is "
            "NOT_UPDATING or UPDATE_FAILED, then retry."
        )
    previous = row.config
    version = row.last_config_version + 1
    config = normalize_config(raw_config, creator=actor, previous=previous, version=version)
    row.last_config_version = version
    row.pending_config = dict(config, start_time=int(utcnow().timestamp() * 1000))
    row.config_update = "IN_PROGRESS"
    row.state_message = ""
    row.updated_at = utcnow()
    session.flush()
    return row


# The roll-out ---------------------------------------------------------------------------------


@dataclass(slots=True)
class EntityState:
    """What the server knows of one worker: DEPLOYMENT_CREATING/READY/FAILED/RECOVERING."""

    deployment: str
    message: str = ""


class EndpointController:
    """Starts, switches and stops the served entities of every endpoint through one backend.

    Runs on the server's event loop; sync REST routes hand work to it with `schedule_*`.
    `in_flight` counts the requests the gateway has sent to each worker (so removed workers are
    drained before they stop).
    """

    def __init__(
        self,
        workspace: Any,
        backend: Any,
        *,
        resolve_environment: Callable[..., dict[str, str]] | None = None,
        drain_timeout_s: float = 120.0,
        credentials: Any = None,
    ) -> None:
        self.ws = workspace
        self.backend = backend
        # Agent tokens by served entity name (serving/credentials.py); copied into each worker.
        self.credentials = credentials
        self._keys_by_served_name: dict[str, set[str]] = {}
        self.resolve_environment = resolve_environment
        self.drain_timeout_s = drain_timeout_s
        self.entity_states: dict[str, EntityState] = {}
        self.in_flight: dict[str, int] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._loop: asyncio.AbstractEventLoop | None = None
        # supervisor.ScaleToZero, set by the server: idle scale-to-zero entities are stopped.
        self.scale_to_zero: Any = None

    # Life cycle -------------------------------------------------------------------------------
    async def restore(self) -> None:
        """Bring back every endpoint's workers after a restart (in the background) and resume an
        interrupted update."""
        self._loop = asyncio.get_running_loop()
        rows = await asyncio.to_thread(self._snapshot_all)
        for endpoint_id, name, config, pending in rows:
            for entity in served_entities(config):
                key = worker_key(endpoint_id, entity)
                self.entity_states[key] = EntityState(
                    "DEPLOYMENT_CREATING", "Starting after a server restart."
                )
            self._spawn(self._restore_endpoint(endpoint_id, name, config, pending is not None))

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)

    def _snapshot_all(self) -> list[tuple[str, str, dict[str, Any] | None, dict[str, Any] | None]]:
        with self.ws.read() as session:
            return [(r.id, r.name, r.config, r.pending_config) for r in list_endpoints(session)]

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _submit(self, coro: Coroutine[Any, Any, None]) -> Future[None]:
        """Run a coroutine on the server's loop from a REST route's thread."""
        assert self._loop is not None, "restore() must run at start-up"
        return asyncio.run_coroutine_threadsafe(self._tracked(coro), self._loop)

    async def _tracked(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            await coro
        finally:
            self._tasks.discard(task)

    def _lock(self, endpoint_id: str) -> asyncio.Lock:
        return self._locks.setdefault(endpoint_id, asyncio.Lock())

    # Requests from the REST API ---------------------------------------------------------------
    def schedule_rollout(self, endpoint_id: str) -> None:
        self._submit(self._rollout(endpoint_id))

    def schedule_teardown(
        self, endpoint_id: str, config: dict[str, Any] | None, pending: dict[str, Any] | None
    ) -> None:
        keys = {worker_key(endpoint_id, e) for e in served_entities(config) + served_entities(pending)}
        self._submit(self._teardown(endpoint_id, keys))

    # State for GET ----------------------------------------------------------------------------
    def entity_state(self, endpoint_id: str, entity: dict[str, Any]) -> EntityState:
        key = worker_key(endpoint_id, entity)
        state = self.entity_states.get(key)
        if state is None:
            return EntityState("DEPLOYMENT_CREATING", "Waiting to start.")
        if state.deployment == "DEPLOYMENT_READY" and not is_native(entity):
            if self.scale_to_zero is not None and self.scale_to_zero.needs_wake(key):
                return EntityState("DEPLOYMENT_READY", _scaled_to_zero_message(self.scale_to_zero, key))
            health = _health_of(self.backend, key)
            if health is not None and not health[0]:
                return EntityState("DEPLOYMENT_RECOVERING", health[1] or "The worker is restarting.")
            last = self.scale_to_zero.cold_starts.get(key) if self.scale_to_zero is not None else None
            if last is not None:
                return EntityState(state.deployment, f"{state.message} Last cold start: {last:.1f}s.")
        return state

    def push_credentials(self, served_entity_name: str, credential: Any) -> None:
        """A new token for every worker of that served entity (atomic file swap in the backend)."""
        for key in list(self._keys_by_served_name.get(served_entity_name, ())):
            self.backend.write_credentials(key, credential.token, credential.expires_at)

    def log_tail(self, endpoint_id: str, entity: dict[str, Any], lines: int = 500) -> str:
        try:
            return str(self.backend.log_tail(worker_key(endpoint_id, entity), lines))
        except Exception as exc:  # a worker that never started has no log yet
            return f"(no log: {exc})"

    # Work -------------------------------------------------------------------------------------
    async def _start_entity(self, endpoint_id: str, endpoint_name: str, entity: dict[str, Any]) -> None:
        key = worker_key(endpoint_id, entity)
        if is_native(entity):  # answered in the gateway: nothing to start
            self.entity_states[key] = EntityState("DEPLOYMENT_READY", "Served natively by the gateway.")
            return
        self.entity_states[key] = EntityState("DEPLOYMENT_CREATING", "Starting the worker.")
        try:
            env = entity["environment_vars"]
            if self.resolve_environment is not None and env:
                env = await asyncio.to_thread(self.resolve_environment, env, entity["creator"])
            spec = _entity_spec(key, entity, env, self.ws.settings.server_url)
            self._keys_by_served_name.setdefault(entity["name"], set()).add(key)
            credential = self.credentials.get(entity["name"]) if self.credentials is not None else None
            if credential is not None:  # the agent's first token, before its code runs
                self.backend.write_credentials(key, credential.token, credential.expires_at)
            await self.backend.start(spec)
            if self.scale_to_zero is not None:
                self.scale_to_zero.track(spec)
        except asyncio.CancelledError:
            self.entity_states[key] = EntityState("DEPLOYMENT_ABORTED", "The start was cancelled.")
            raise
        except Exception as exc:
            self.entity_states[key] = EntityState("DEPLOYMENT_FAILED", _short(str(exc)))
            raise
        self.entity_states[key] = EntityState("DEPLOYMENT_READY", "The served entity is ready.")

    async def _restore_endpoint(
        self, endpoint_id: str, name: str, config: dict[str, Any] | None, resume: bool
    ) -> None:
        async with self._lock(endpoint_id):
            failed = await self._start_all(endpoint_id, name, served_entities(config))
        if resume:
            await self._rollout(endpoint_id)
        # A served entity that did not come back (say, the registry was not up yet) is retried
        # with backoff for as long as it is in the serving config.
        delay = 2.0
        while failed:
            await asyncio.sleep(delay)
            delay = min(delay * 2, 60.0)
            async with self._lock(endpoint_id):
                snapshot = await asyncio.to_thread(self._snapshot, endpoint_id)
                if snapshot is None:
                    return
                serving = {worker_key(endpoint_id, e) for e in served_entities(snapshot[1])}
                retry = [e for e in failed if worker_key(endpoint_id, e) in serving]
                failed = await self._start_all(endpoint_id, name, retry)

    async def _start_all(
        self, endpoint_id: str, name: str, entities: list[dict[str, Any]]
    ) -> list[dict[str, Any]]:
        """Start entities side by side; the ones that failed."""
        results = await asyncio.gather(
            *(self._start_entity(endpoint_id, name, e) for e in entities), return_exceptions=True
        )
        failed = []
        for entity, result in zip(entities, results, strict=True):
            if isinstance(result, BaseException):
                log.error("endpoint %s: served entity %s did not come back: %s", name, entity["name"], result)
                failed.append(entity)
        return failed

    async def _rollout(self, endpoint_id: str) -> None:
        async with self._lock(endpoint_id):
            snapshot = await asyncio.to_thread(self._snapshot, endpoint_id)
            if snapshot is None or snapshot[2] is None:
                return  # deleted meanwhile, or nothing pending
            name, current, pending = snapshot
            assert pending is not None
            current_keys = {worker_key(endpoint_id, e) for e in served_entities(current)}
            new = served_entities(pending)
            new_keys = {worker_key(endpoint_id, e) for e in new}
            to_start = [
                e
                for e in new
                if self.entity_states.get(worker_key(endpoint_id, e)) is None
                or self.entity_states[worker_key(endpoint_id, e)].deployment != "DEPLOYMENT_READY"
                or worker_key(endpoint_id, e) not in current_keys
            ]
            results = await asyncio.gather(
                *(self._start_entity(endpoint_id, name, e) for e in to_start), return_exceptions=True
            )
            failed = [(e, r) for e, r in zip(to_start, results, strict=False) if isinstance(r, BaseException)]
            if failed:
                for entity in to_start:
                    key = worker_key(endpoint_id, entity)
                    if key not in current_keys:
                        if self.scale_to_zero is not None:
                            self.scale_to_zero.untrack(key)
                        await _quiet_remove(self.backend, key)
                message = "; ".join(f"served entity {e['name']!r} failed to start: {r}" for e, r in failed)
                await asyncio.to_thread(self._finish, endpoint_id, pending["config_version"], _short(message))
                log.warning("endpoint %s: config update failed: %s", name, message[:500])
                return
            await asyncio.to_thread(self._finish, endpoint_id, pending["config_version"], None)
            removed = current_keys - new_keys
            await self._drain(removed)
            for key in removed:
                if self.scale_to_zero is not None:
                    self.scale_to_zero.untrack(key)
                await _quiet_remove(self.backend, key)
                self.entity_states.pop(key, None)

    async def _teardown(self, endpoint_id: str, keys: set[str]) -> None:
        async with self._lock(endpoint_id):
            await self._drain(keys)
            for key in keys:
                if self.scale_to_zero is not None:
                    self.scale_to_zero.untrack(key)
                await _quiet_remove(self.backend, key)
                self.entity_states.pop(key, None)
        self._locks.pop(endpoint_id, None)

    async def _drain(self, keys: set[str]) -> None:
        deadline = asyncio.get_running_loop().time() + self.drain_timeout_s
        while any(self.in_flight.get(k, 0) for k in keys) and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.01)

    def _snapshot(self, endpoint_id: str) -> tuple[str, dict[str, Any] | None, dict[str, Any] | None] | None:
        with self.ws.read() as session:
            row = session.get(ServingEndpoint, endpoint_id)
            return None if row is None else (row.name, row.config, row.pending_config)

    def _finish(self, endpoint_id: str, version: int, failure: str | None) -> None:
        """Switch to the pending config (the routing table is rebuilt on commit), or record why not."""
        with self.ws.change() as session:
            row = session.get(ServingEndpoint, endpoint_id)
            if row is None or not row.pending_config or row.pending_config.get("config_version") != version:
                return
            if failure is None:
                config = dict(row.pending_config)
                config.pop("start_time", None)
                row.config, row.pending_config = config, None
                row.ready, row.config_update, row.state_message = "READY", "NOT_UPDATING", ""
            else:
                row.pending_config = None
                row.config_update, row.state_message = "UPDATE_FAILED", failure
                row.ready = "READY" if row.config else "NOT_READY"
            row.updated_at = utcnow()


def resolve_secret_references(workspace: Any, env: dict[str, str], creator: str) -> dict[str, str]:
    """Environment values with `{{secrets/scope/key}}` replaced by the secret, read as the served
    entity's creator (who needs READ on the scope, as on Databricks). Values stay in memory: they
    go to the worker's environment only."""
    from agentdeploy.workspace import secrets

    identities = workspace.identities
    who = identities.by_name.get(("user", creator)) or identities.by_name.get(("service_principal", creator))
    out: dict[str, str] = {}
    for name, value in env.items():
        match = SECRET_REFERENCE.match(value)
        if match is None:
            out[name] = value
            continue
        if who is None:
            raise InvalidParameterValue(f"environment_vars.{name}: its creator {creator!r} no longer exists.")
        try:
            out[name] = secrets.read_secret(workspace, who, match.group(1), match.group(2)).get_secret_value()
        except Exception as exc:
            raise InvalidParameterValue(f"environment_vars.{name}: cannot read {value}: {exc}") from None
    return out


def _short(message: str, limit: int = 4000) -> str:
    return (
        message if len(message) <= limit else message[: limit // 4] + "\n...\n" + message[-3 * limit // 4 :]
    )


def _scaled_to_zero_message(supervisor: Any, key: str) -> str:
    message = {
        "stopping": "Scaling to zero (no request for the idle period); the next request starts it and waits.",
        "waking": "Starting after scale to zero; requests wait for it.",
    }.get(supervisor.phase(key), "Scaled to zero (no request for the idle period); the next request starts it "
                                 "and waits.")
    last = supervisor.cold_starts.get(key)
    return message + (f" Last cold start: {last:.1f}s." if last is not None else "")


async def _quiet_remove(backend: Any, key: str) -> None:
    try:
        await backend.remove(key)
    except Exception:
        log.exception("stopping worker %s failed", key)


def _health_of(backend: Any, key: str) -> tuple[bool, str] | None:
    """(healthy, message) from the backend, whatever shape its EntityHealth has."""
    try:
        health = backend.health(key)
    except Exception:
        return None
    if health is None:
        return None
    ready = getattr(health, "ready", None)
    if ready is None:
        ready = getattr(health, "healthy", None)
    if ready is None:
        state = str(getattr(health, "state", "")).upper()
        ready = state.endswith("READY") or state.endswith("HEALTHY") or state.endswith("RUNNING")
    return bool(ready), str(getattr(health, "message", "") or "")


def _entity_spec(key: str, entity: dict[str, Any], env: dict[str, str], workspace_host: str) -> Any:
    from agentdeploy.serving.backends.base import ServedEntitySpec

    return ServedEntitySpec(
        name=key,
        model_uri=f"models:/{entity['entity_name']}/{entity['entity_version']}",
        environment_vars=dict(env),
        scale_to_zero=entity["scale_to_zero_enabled"],
        workload_size=entity["workload_size"],
        entity_name=entity["entity_name"],
        entity_version=str(entity["entity_version"]),
        workspace_host=workspace_host,
    )
