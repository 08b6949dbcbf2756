"""`/api/2.0/serving-endpoints`: the Databricks REST API for serving endpoints.

    POST   /api/2.0/serving-endpoints                        create (returns at once, IN_PROGRESS)
    GET    /api/2.0/serving-endpoints                        list (what the caller may view)
    GET    /api/2.0/serving-endpoints/{name}                 ServingEndpointDetailed   (CAN_VIEW)
    DELETE /api/2.0/serving-endpoints/{name}                                           (CAN_MANAGE)
    PUT    /api/2.0/serving-endpoints/{name}/config          new config, rolled out    (CAN_MANAGE)
    PUT    /api/2.0/serving-endpoints/{name}/ai-gateway                                (CAN_MANAGE)
    PATCH  /api/2.0/serving-endpoints/{name}/tags                                      (CAN_MANAGE)
    GET    /api/2.0/serving-endpoints/{name}/served-models/{served}/logs|build-logs    (CAN_MANAGE)
    GET    /api/2.0/serving-endpoints/{name}/metrics         Prometheus text           (CAN_VIEW)

Shapes follow databricks-sdk `service/serving.py`, so `create_and_wait` and
`update_config_and_wait` poll GET until `state.config_update` leaves IN_PROGRESS.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import PlainTextResponse
from pydantic import BaseModel, ConfigDict, Field

from agentdeploy.errors import NotFound
from agentdeploy.serving import endpoints
from agentdeploy.serving.endpoints import EndpointController, ServingEndpoint
from agentdeploy.tables import inference_tables
from agentdeploy.workspace import audit, catalog
from agentdeploy.workspace.api.deps import Caller, WorkspaceDep
from agentdeploy.workspace.db import utcnow
from agentdeploy.workspace.identity import Identity

__all__ = ["router", "endpoint_json"]

router = APIRouter(tags=["serving-endpoints"])
SECURABLE = "serving_endpoint"


class EndpointCreate(BaseModel):
    model_config = ConfigDict(extra="ignore")
    name: str = Field(max_length=63)
    config: dict[str, Any] | None = None
    tags: list[dict[str, Any]] | None = None
    ai_gateway: dict[str, Any] | None = None
    rate_limits: list[dict[str, Any]] | None = None  # deprecated spelling of ai_gateway.rate_limits
    description: str = Field(default="", max_length=1024)


class TagsPatch(BaseModel):
    model_config = ConfigDict(extra="ignore")
    add_tags: list[dict[str, Any]] | None = None
    delete_tags: list[str] | None = None


def _controller(request: Request) -> EndpointController:
    return request.app.state.serving_controller  # type: ignore[no-any-return]


def _ms(value: Any) -> int:
    return int(value.timestamp() * 1000)


def _entity_json(
    controller: EndpointController, row: ServingEndpoint, entity: dict[str, Any], *, pending: bool
) -> dict[str, Any]:
    state = controller.entity_state(row.id, entity)
    if pending and state.deployment == "DEPLOYMENT_READY":
        state = endpoints.EntityState(
            "DEPLOYMENT_READY", "Ready; traffic switches once every entity is ready."
        )
    out = {
        k: entity[k]
        for k in (
            "name",
            "entity_name",
            "entity_version",
            "workload_size",
            "scale_to_zero_enabled",
            "creator",
            "creation_timestamp",
        )
    }
    if entity["environment_vars"]:
        out["environment_vars"] = dict(entity["environment_vars"])  # secret references, never values
    out["state"] = {"deployment": state.deployment, "deployment_state_message": state.message}
    return out


def _config_json(
    controller: EndpointController, row: ServingEndpoint, config: dict[str, Any], *, pending: bool
) -> dict[str, Any]:
    out: dict[str, Any] = {
        "config_version": config["config_version"],
        "served_entities": [
            _entity_json(controller, row, e, pending=pending) for e in config["served_entities"]
        ],
        "traffic_config": config["traffic_config"],
    }
    if pending and "start_time" in config:
        out["start_time"] = config["start_time"]
    return out


def endpoint_state(controller: EndpointController, row: ServingEndpoint) -> dict[str, Any]:
    serving = endpoints.served_entities(row.config)
    ready = bool(serving) and all(
        controller.entity_state(row.id, e).deployment == "DEPLOYMENT_READY" for e in serving
    )
    state: dict[str, Any] = {"ready": "READY" if ready else "NOT_READY", "config_update": row.config_update}
    if row.state_message:
        state["config_update_message"] = row.state_message
    return state


def _permission_level(ws: Any, caller: Identity, name: str) -> str | None:
    for level in ("CAN_MANAGE", "CAN_QUERY", "CAN_VIEW"):
        if ws.is_authorized(caller, SECURABLE, name, level):
            return level
    return None


def _may_view(ws: Any, caller: Identity, name: str) -> bool:
    try:
        return bool(ws.is_authorized(caller, SECURABLE, name, "CAN_VIEW"))
    except NotFound:  # its securable is gone (deleted meanwhile)
        return False


def endpoint_json(
    ws: Any, controller: EndpointController, row: ServingEndpoint, caller: Identity, *, detailed: bool = True
) -> dict[str, Any]:
    """ServingEndpointDetailed (or the ServingEndpoint summary of a listing)."""
    out: dict[str, Any] = {
        "name": row.name,
        "id": row.id,
        "creator": row.creator,
        "creation_timestamp": _ms(row.created_at),
        "last_updated_timestamp": _ms(row.updated_at),
        "state": endpoint_state(controller, row),
        "tags": list(row.tags or []),
    }
    if row.description:
        out["description"] = row.description
    if row.ai_gateway is not None:
        out["ai_gateway"] = row.ai_gateway
    if not detailed:
        if row.config:
            out["config"] = {
                "served_entities": [
                    {
                        "name": e["name"],
                        "entity_name": e["entity_name"],
                        "entity_version": e["entity_version"],
                    }
                    for e in row.config["served_entities"]
                ]
            }
        return out
    if row.config:
        out["config"] = _config_json(controller, row, row.config, pending=False)
    if row.pending_config:
        out["pending_config"] = _config_json(controller, row, row.pending_config, pending=True)
    level = _permission_level(ws, caller, row.name)
    if level:
        out["permission_level"] = level
    out["endpoint_url"] = f"{ws.settings.server_url}/serving-endpoints/{row.name}/invocations"
    return out


def _load(ws: Any, name: str) -> ServingEndpoint:
    with ws.read() as session:
        return endpoints.get_endpoint(session, name)


# Routes ---------------------------------------------------------------------------------------


@router.post("/api/2.0/serving-endpoints")
def create_endpoint(
    body: EndpointCreate, caller: Caller, ws: WorkspaceDep, request: Request
) -> dict[str, Any]:
    name = endpoints.validate_endpoint_name(body.name)
    config = endpoints.normalize_config(body.config, creator=caller.name) if body.config is not None else None
    ai_gateway = endpoints.normalize_ai_gateway(body.ai_gateway)
    if body.rate_limits and not (ai_gateway or {}).get("rate_limits"):
        ai_gateway = endpoints.normalize_ai_gateway({**(ai_gateway or {}), "rate_limits": body.rate_limits})
    tags = endpoints.normalize_tags(body.tags)
    payload_table = inference_tables.plan_payload_table(ws, caller, name, ai_gateway)
    if payload_table is not None:
        inference_tables.create_payload_table(ws.settings.warehouse_dir, payload_table)
    with ws.change() as session:
        row = endpoints.create_endpoint(
            session,
            name=name,
            creator_id=caller.id,
            creator=caller.name,
            config=config,
            tags=tags,
            ai_gateway=ai_gateway,
            description=body.description,
        )
        catalog.register_securable(session, SECURABLE, name, owner_id=caller.id, object_id=row.id)
        if payload_table is not None:
            _register_payload_table(ws, session, caller, payload_table, owner_id=caller.id, endpoint_name=name)
        audit.record(
            session,
            actor=caller,
            action="createServingEndpoint",
            securable_type=SECURABLE,
            securable_name=name,
            params={"config": _audit_config(config), "tags": tags},
        )
    if config is not None:
        _controller(request).schedule_rollout(row.id)
    return endpoint_json(ws, _controller(request), row, caller)


@router.get("/api/2.0/serving-endpoints")
def list_endpoints(caller: Caller, ws: WorkspaceDep, request: Request) -> dict[str, Any]:
    with ws.read() as session:
        rows = endpoints.list_endpoints(session)
    controller = _controller(request)
    visible = [r for r in rows if _may_view(ws, caller, r.name)]
    return {"endpoints": [endpoint_json(ws, controller, r, caller, detailed=False) for r in visible]}


@router.get("/api/2.0/serving-endpoints/{name}")
def get_endpoint(name: str, caller: Caller, ws: WorkspaceDep, request: Request) -> dict[str, Any]:
    row = _load(ws, name)
    ws.authorize(caller, SECURABLE, name, "CAN_VIEW")
    return endpoint_json(ws, _controller(request), row, caller)


@router.delete("/api/2.0/serving-endpoints/{name}")
def delete_endpoint(name: str, caller: Caller, ws: WorkspaceDep, request: Request) -> dict[str, Any]:
    with ws.change() as session:
        row = endpoints.get_endpoint(session, name)
        ws.authorize(caller, SECURABLE, name, "CAN_MANAGE")
        securable = catalog.find_securable(session, SECURABLE, name)
        if securable is not None:
            catalog.delete_securable(session, securable)
        config, pending, endpoint_id = row.config, row.pending_config, row.id
        session.delete(row)
        audit.record(
            session,
            actor=caller,
            action="deleteServingEndpoint",
            securable_type=SECURABLE,
            securable_name=name,
        )
    _controller(request).schedule_teardown(endpoint_id, config, pending)
    return {}


@router.put("/api/2.0/serving-endpoints/{name}/config")
def update_config(
    name: str, body: dict[str, Any], caller: Caller, ws: WorkspaceDep, request: Request
) -> dict[str, Any]:
    with ws.change() as session:
        row = endpoints.get_endpoint(session, name)
        ws.authorize(caller, SECURABLE, name, "CAN_MANAGE")
        endpoints.begin_update(session, row, body, actor=caller.name)
        audit.record(
            session,
            actor=caller,
            action="updateServingEndpointConfig",
            securable_type=SECURABLE,
            securable_name=name,
            params={"config": _audit_config(row.pending_config)},
        )
    _controller(request).schedule_rollout(row.id)
    return endpoint_json(ws, _controller(request), row, caller)


@router.put("/api/2.0/serving-endpoints/{name}/ai-gateway")
def put_ai_gateway(name: str, body: dict[str, Any], caller: Caller, ws: WorkspaceDep) -> dict[str, Any]:
    ai_gateway = endpoints.normalize_ai_gateway(body) or {}
    ws.authorize(caller, SECURABLE, name, "CAN_MANAGE")
    payload_table = inference_tables.plan_payload_table(ws, caller, name, ai_gateway)
    if payload_table is not None:
        inference_tables.create_payload_table(ws.settings.warehouse_dir, payload_table)
    with ws.change() as session:
        row = endpoints.get_endpoint(session, name)
        ws.authorize(caller, SECURABLE, name, "CAN_MANAGE")
        if payload_table is not None:  # owned by the endpoint's creator, whoever turns it on
            owner = row.creator_id if row.creator_id is not None else caller.id
            _register_payload_table(ws, session, caller, payload_table, owner_id=owner, endpoint_name=name)
        row.ai_gateway = ai_gateway
        row.updated_at = utcnow()
        audit.record(
            session,
            actor=caller,
            action="putServingEndpointAiGateway",
            securable_type=SECURABLE,
            securable_name=name,
            params={"ai_gateway": ai_gateway},
        )
    return ai_gateway


@router.patch("/api/2.0/serving-endpoints/{name}/tags")
def patch_tags(name: str, body: TagsPatch, caller: Caller, ws: WorkspaceDep) -> dict[str, Any]:
    added = endpoints.normalize_tags(body.add_tags, "add_tags")
    with ws.change() as session:
        row = endpoints.get_endpoint(session, name)
        ws.authorize(caller, SECURABLE, name, "CAN_MANAGE")
        tags = {t["key"]: t["value"] for t in row.tags or []}
        for key in body.delete_tags or []:
            tags.pop(key, None)
        tags.update({t["key"]: t["value"] for t in added})
        row.tags = [{"key": k, "value": v} for k, v in tags.items()]
        row.updated_at = utcnow()
        audit.record(
            session,
            actor=caller,
            action="patchServingEndpointTags",
            securable_type=SECURABLE,
            securable_name=name,
            params={"add_tags": added, "delete_tags": body.delete_tags or []},
        )
        return {"tags": row.tags}


def _served_entity(row: ServingEndpoint, served: str) -> dict[str, Any]:
    for config in (row.config, row.pending_config):
        for entity in endpoints.served_entities(config):
            if entity["name"] == served:
                return entity
    raise NotFound(f"Serving endpoint {row.name!r} has no served model {served!r}.")


@router.get("/api/2.0/serving-endpoints/{name}/served-models/{served}/logs")
def served_model_logs(
    name: str, served: str, caller: Caller, ws: WorkspaceDep, request: Request
) -> dict[str, Any]:
    row = _load(ws, name)
    ws.authorize(caller, SECURABLE, name, "CAN_MANAGE")
    return {"logs": _controller(request).log_tail(row.id, _served_entity(row, served), 500)}


@router.get("/api/2.0/serving-endpoints/{name}/served-models/{served}/build-logs")
def served_model_build_logs(
    name: str, served: str, caller: Caller, ws: WorkspaceDep, request: Request
) -> dict[str, Any]:
    """No image is built here: the "build" is fetching the model and starting its worker, so the
    build log is that start's state and the worker log's first lines."""
    row = _load(ws, name)
    ws.authorize(caller, SECURABLE, name, "CAN_MANAGE")
    entity = _served_entity(row, served)
    controller = _controller(request)
    state = controller.entity_state(row.id, entity)
    head = "\n".join(controller.log_tail(row.id, entity, 5000).splitlines()[:200])
    summary = (
        f"Served entity {served!r}: model models:/{entity['entity_name']}/{entity['entity_version']} "
        f"on a local worker process (no container image is built).\nState: {state.deployment}"
        f"{': ' + state.message if state.message else ''}\n"
    )
    return {"logs": summary + head}


@router.get("/api/2.0/serving-endpoints/{name}/metrics")
def endpoint_metrics(name: str, caller: Caller, ws: WorkspaceDep, request: Request) -> PlainTextResponse:
    _load(ws, name)
    ws.authorize(caller, SECURABLE, name, "CAN_VIEW")
    text = request.app.state.serving_metrics.render(name)
    return PlainTextResponse(text, media_type="text/plain; version=0.0.4")


def _register_payload_table(ws: Any, session: Any, caller: Identity, plan: inference_tables.PayloadTablePlan, *,
                            owner_id: int, endpoint_name: str) -> None:
    if inference_tables.register_payload_table(session, ws.settings.warehouse_dir, plan, owner_id=owner_id,
                                               endpoint_name=endpoint_name):
        audit.record(session, actor=caller, action="createTable", securable_type="table",
                     securable_name=plan.full_name, params={"endpoint_name": endpoint_name})


def _audit_config(config: dict[str, Any] | None) -> dict[str, Any] | None:
    """The config as audited: environment variable names only (values may be plain secrets)."""
    if config is None:
        return None
    return {
        "config_version": config.get("config_version"),
        "served_entities": [
            {
                "name": e["name"],
                "entity_name": e["entity_name"],
                "entity_version": e["entity_version"],
                "environment_vars": sorted(e["environment_vars"]),
            }
            for e in config.get("served_entities", [])
        ],
        "traffic_config": config.get("traffic_config"),
    }
