"""SQL statements: `POST /api/2.0/sql/statements` and `GET /api/2.0/sql/statements/{id}`, the
shapes of the databricks-sdk `w.statement_execution` API (INLINE + JSON_ARRAY only).

Statements finish before the answer (they are small reads), so `wait_timeout` is only checked,
and the answer is always final: SUCCEEDED with the rows, or FAILED with the error.
"""

from __future__ import annotations

import re
from typing import Any

from fastapi import APIRouter
from pydantic import BaseModel, ConfigDict, Field

from agentdeploy.errors import InvalidParameterValue
from agentdeploy.workspace.api.deps import Caller, WorkspaceDep
from agentdeploy.workspace.sql import MAX_STATEMENT_CHARS, StatementParameter, statement_service

__all__ = ["router"]

router = APIRouter(prefix="/api/2.0/sql/statements", tags=["sql"])

_WAIT = re.compile(r"^(\d{1,2})s$")


class Parameter(BaseModel):
    model_config = ConfigDict(extra="ignore")
    name: str = Field(min_length=1, max_length=255, pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")
    value: str | None = Field(default=None, max_length=1_000_000)
    type: str | None = Field(default=None, max_length=64)


class StatementRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")
    warehouse_id: str = Field(min_length=1, max_length=255)
    statement: str = Field(min_length=1, max_length=MAX_STATEMENT_CHARS)
    catalog: str | None = Field(default=None, max_length=255)
    schema_: str | None = Field(default=None, max_length=255, alias="schema")
    parameters: list[Parameter] = Field(default_factory=list, max_length=256)
    wait_timeout: str | None = None
    on_wait_timeout: str | None = None
    disposition: str | None = None
    format: str | None = None
    row_limit: int | None = Field(default=None, ge=0)
    byte_limit: int | None = Field(default=None, ge=0)


def _check_options(body: StatementRequest) -> None:
    if body.disposition not in (None, "INLINE"):
        raise InvalidParameterValue(
            f"'disposition': only INLINE is supported; got {body.disposition[:40]!r}."
        )
    if body.format not in (None, "JSON_ARRAY"):
        raise InvalidParameterValue(f"'format': only JSON_ARRAY is supported; got {body.format[:40]!r}.")
    if body.wait_timeout is not None:
        match = _WAIT.match(body.wait_timeout)
        seconds = int(match.group(1)) if match else -1
        if not (seconds == 0 or 5 <= seconds <= 50):
            raise InvalidParameterValue(
                f"'wait_timeout' must be '0s' or between '5s' and '50s'; got {body.wait_timeout[:40]!r}."
            )
    if body.on_wait_timeout not in (None, "CONTINUE", "CANCEL"):
        raise InvalidParameterValue("'on_wait_timeout' must be CONTINUE or CANCEL.")
    names = [p.name for p in body.parameters]
    if len(names) != len(set(names)):
        raise InvalidParameterValue("'parameters': each parameter name may be given once.")


@router.post("")
def execute_statement(body: StatementRequest, caller: Caller, ws: WorkspaceDep) -> dict[str, Any]:
    _check_options(body)
    return statement_service(ws).execute(
        caller,
        warehouse_id=body.warehouse_id,
        statement=body.statement,
        catalog=body.catalog,
        schema=body.schema_,
        parameters=[StatementParameter(p.name, p.value, p.type or "STRING") for p in body.parameters],
        row_limit=body.row_limit or None,
    )


@router.get("/{statement_id}")
def get_statement(statement_id: str, caller: Caller, ws: WorkspaceDep) -> dict[str, Any]:
    return statement_service(ws).get(caller, statement_id)


@router.get("/{statement_id}/result/chunks/{chunk_index}")
def get_result_chunk(statement_id: str, chunk_index: int, caller: Caller, ws: WorkspaceDep) -> dict[str, Any]:
    response = statement_service(ws).get(caller, statement_id)
    if chunk_index != 0 or "result" not in response:
        raise InvalidParameterValue(
            f"'chunk_index': statement {statement_id!r} has one result chunk, index 0."
        )
    return dict(response["result"])


@router.post("/{statement_id}/cancel")
def cancel_statement(statement_id: str, caller: Caller, ws: WorkspaceDep) -> dict[str, Any]:
    statement_service(ws).get(caller, statement_id)  # 404 unless it is the caller's; it has finished
    return {}
