"""Helpers for the tables / SQL / secrets tests: everything through the real HTTP API."""

from __future__ import annotations

import io
import uuid
from dataclasses import dataclass
from typing import Any

import httpx
import pyarrow as pa
import pyarrow.parquet as pq

from tests.workspace.identities import create_service_principal, pat_for

__all__ = [
    "UC",
    "unique_name",
    "parquet_bytes",
    "Principal",
    "service_principal",
    "make_schema",
    "upload_table",
    "make_warehouse",
    "grant",
    "revoke",
    "grant_warehouse",
    "run_sql",
    "DataSet",
    "make_dataset",
]

UC = "/api/2.1/unity-catalog"


def unique_name(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:8]}"


def parquet_bytes(table: pa.Table) -> bytes:
    out = io.BytesIO()
    pq.write_table(table, out)
    return out.getvalue()


@dataclass
class Principal:
    id: str
    application_id: str
    token: str
    client: httpx.Client


def service_principal(admin: httpx.Client, base_url: str) -> Principal:
    sp = create_service_principal(admin)
    token = pat_for(admin, sp["applicationId"])
    client = httpx.Client(base_url=base_url, headers={"Authorization": f"Bearer {token}"}, timeout=60)
    return Principal(sp["id"], sp["applicationId"], token, client)


def make_schema(admin: httpx.Client, catalog: str, schema: str) -> None:
    response = admin.post(f"{UC}/catalogs", json={"name": catalog})
    assert response.status_code in (200, 409), response.text
    response = admin.post(f"{UC}/schemas", json={"name": schema, "catalog_name": catalog})
    assert response.status_code in (200, 409), response.text


def upload_table(
    client: httpx.Client, full_name: str, table: pa.Table, *, mode: str = "create"
) -> httpx.Response:
    return client.post(
        f"/api/2.0/agentdeploy/tables/{full_name}",
        params={"mode": mode},
        content=parquet_bytes(table),
        headers={"Content-Type": "application/octet-stream"},
    )


def make_warehouse(admin: httpx.Client, name: str) -> str:
    response = admin.post("/api/2.0/sql/warehouses", json={"name": name})
    assert response.status_code == 200, response.text
    return str(response.json()["id"])


def _permissions(
    admin: httpx.Client, securable_type: str, full_name: str, principal: str, key: str, privileges: list[str]
) -> None:
    response = admin.patch(
        f"{UC}/permissions/{securable_type}/{full_name}",
        json={"changes": [{"principal": principal, key: privileges}]},
    )
    assert response.status_code == 200, response.text


def grant(admin: httpx.Client, securable_type: str, full_name: str, principal: str, *privileges: str) -> None:
    _permissions(admin, securable_type, full_name, principal, "add", list(privileges))


def revoke(
    admin: httpx.Client, securable_type: str, full_name: str, principal: str, *privileges: str
) -> None:
    _permissions(admin, securable_type, full_name, principal, "remove", list(privileges))


def grant_warehouse(
    admin: httpx.Client, warehouse_id: str, application_id: str, level: str = "CAN_USE"
) -> None:
    response = admin.patch(
        f"/api/2.0/permissions/warehouses/{warehouse_id}",
        json={"access_control_list": [{"service_principal_name": application_id, "permission_level": level}]},
    )
    assert response.status_code == 200, response.text


def run_sql(client: httpx.Client, warehouse_id: str, statement: str, **body: Any) -> httpx.Response:
    return client.post(
        "/api/2.0/sql/statements", json={"warehouse_id": warehouse_id, "statement": statement, **body}
    )


FAQ = pa.table(
    {
        "id": pa.array([1, 2, 3], pa.int64()),
        "question": ["What is agentdeploy?", "Where are tables?", None],
        "score": pa.array([0.5, 1.25, None], pa.float64()),
        "published": pa.array([True, False, True]),
    }
)


@dataclass
class DataSet:
    """A catalog and schema with one table, a warehouse and a reader granted exactly SELECT."""

    catalog: str
    schema: str
    table: str
    warehouse_id: str
    reader: Principal

    @property
    def full_name(self) -> str:
        return f"{self.catalog}.{self.schema}.{self.table}"


def make_dataset(admin: httpx.Client, base_url: str) -> DataSet:
    catalog, schema = unique_name("cat"), "docs"
    make_schema(admin, catalog, schema)
    full_name = f"{catalog}.{schema}.faq"
    response = upload_table(admin, full_name, FAQ)
    assert response.status_code == 200, response.text
    warehouse_id = make_warehouse(admin, unique_name("wh"))
    reader = service_principal(admin, base_url)
    grant_warehouse(admin, warehouse_id, reader.application_id)
    grant(admin, "catalog", catalog, reader.application_id, "USE_CATALOG")
    grant(admin, "schema", f"{catalog}.{schema}", reader.application_id, "USE_SCHEMA")
    grant(admin, "table", full_name, reader.application_id, "SELECT")
    return DataSet(catalog, schema, "faq", warehouse_id, reader)
