"""The demo data `agentdeploy quickstart` creates, through the REST API only (so it works against
any agentdeploy server the client can reach), and idempotently (a second run changes nothing):

- catalog `main`, schema `main.docs`;
- the Delta table `main.docs.faq`: questions and answers about agentdeploy itself, which the
  example support bot reads through the SQL statements API;
- a SQL warehouse named `demo`;
- the user `reviewer`, who is granted nothing here: the quickstart shows how to grant.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.parquet as pq

from agentdeploy.client import AgentDeployClient
from agentdeploy.errors import AlreadyExists

__all__ = [
    "DemoData",
    "create_demo_data",
    "FAQ",
    "DEMO_CATALOG",
    "DEMO_SCHEMA",
    "DEMO_TABLE",
    "DEMO_WAREHOUSE",
    "REVIEWER",
]

DEMO_CATALOG = "main"
DEMO_SCHEMA = "main.docs"
DEMO_TABLE = "main.docs.faq"
DEMO_WAREHOUSE = "demo"
REVIEWER = "reviewer"
_UC = "/api/2.1/unity-catalog"
_SCIM = "/api/2.0/preview/scim/v2"

# (question, answer, source): true of this code base, so the support bot answers something real.
FAQ: list[tuple[str, str, str]] = [
    (
        "What is agentdeploy?",
        "A self-hosted agents.deploy(): it serves an MLflow-logged agent on an endpoint, logs every request "
        "to Delta inference tables, and gives stakeholders a review app to rate answers.",
        "docs/overview",
    ),
    (
        "How do I deploy an agent?",
        "Register the agent as catalog.schema.model in MLflow, then call "
        'deploy("main.agents.support_bot", 3) or run the deploy-agent flow from the Prefect UI.',
        "docs/deploy",
    ),
    (
        "Where do requests and responses go?",
        "To three Delta tables next to the model: {model}_payload (raw), {model}_payload_request_logs "
        "(formatted, with traces) and {model}_payload_assessment_logs (reviewer feedback).",
        "docs/inference-tables",
    ),
    (
        "How fast do logs appear in the inference tables?",
        "Within seconds: the gateway spools each request durably and commits batches to Delta, instead of "
        "the tens of minutes the reference platform documents.",
        "docs/inference-tables",
    ),
    (
        "How does a deployed agent authenticate to a table or warehouse?",
        "Each model version gets its own service principal, granted exactly the resources declared when the "
        "agent was logged, with short-lived OAuth tokens rotated on a schedule.",
        "docs/authentication",
    ),
    (
        "What does the deployer need to hold?",
        "Every privilege the agent declares: SELECT on tables (plus USE_CATALOG and USE_SCHEMA on the "
        "parents), CAN_USE on SQL warehouses, CAN_QUERY on serving endpoints. No privilege escalation.",
        "docs/permissions",
    ),
    (
        "How do I pass an API key to my agent?",
        "Put it in a secret scope (agentdeploy secrets put SCOPE KEY) and declare it as a secret-backed "
        "environment variable at deploy time; the value never appears in logs, tables or flow parameters.",
        "docs/secrets",
    ),
    (
        "How do reviewers give feedback?",
        "They open the review app URL returned by the deployment, chat with the agent and rate answers and "
        "retrieved documents; ratings land in the assessment logs table.",
        "docs/review-app",
    ),
    (
        "How do I query my tables?",
        'With SQL through POST /api/2.0/sql/statements (or agentdeploy sql "SELECT ..."), as the '
        "databricks-sdk statement_execution API does; you need CAN_USE on the warehouse and SELECT on "
        "the tables.",
        "docs/sql",
    ),
    (
        "Can idle endpoints stop?",
        "Yes: with scale_to_zero_enabled an endpoint stops its workers when idle and starts them again "
        "on the next request, which is then slower.",
        "docs/serving",
    ),
]


@dataclass(frozen=True)
class DemoData:
    catalog: str
    schema: str
    table: str
    warehouse_id: str
    warehouse_name: str
    reviewer_id: str
    reviewer_user_name: str


def _faq_parquet() -> bytes:
    questions, answers, sources = (list(column) for column in zip(*FAQ, strict=True))
    out = io.BytesIO()
    pq.write_table(pa.table({"question": questions, "answer": answers, "source": sources}), out)
    return out.getvalue()


def _ensure_created(client: AgentDeployClient, path: str, body: dict[str, object]) -> None:
    try:
        client.post(path, json=body)
    except AlreadyExists:
        pass


def _warehouse(client: AgentDeployClient) -> str:
    for warehouse in client.get("/api/2.0/sql/warehouses").get("warehouses", []):
        if warehouse.get("name") == DEMO_WAREHOUSE:
            return str(warehouse["id"])
    return str(client.post("/api/2.0/sql/warehouses", json={"name": DEMO_WAREHOUSE})["id"])


def _reviewer(client: AgentDeployClient) -> str:
    found = (
        client.get(f"{_SCIM}/Users", params={"filter": f'userName eq "{REVIEWER}"'}).get("Resources") or []
    )
    if found:
        return str(found[0]["id"])
    created = client.post(f"{_SCIM}/Users", json={"userName": REVIEWER, "displayName": "Demo reviewer"})
    return str(created["id"])


def create_demo_data(client: AgentDeployClient) -> DemoData:
    """Create (or find) the demo catalog, schema, FAQ table, warehouse and reviewer. Needs an admin
    (creating a catalog, a warehouse and a user are admin actions)."""
    _ensure_created(client, f"{_UC}/catalogs", {"name": DEMO_CATALOG, "comment": "agentdeploy demo catalog"})
    _ensure_created(
        client,
        f"{_UC}/schemas",
        {
            "name": "docs",
            "catalog_name": DEMO_CATALOG,
            "comment": "Documents the example support bot answers from.",
        },
    )
    try:
        client.request(
            "POST",
            f"/api/2.0/agentdeploy/tables/{DEMO_TABLE}",
            params={"mode": "create"},
            content=_faq_parquet(),
            headers={"Content-Type": "application/vnd.apache.parquet"},
        )
    except AlreadyExists:
        pass  # keep the table as it is: someone may have added rows
    warehouse_id = _warehouse(client)
    reviewer_id = _reviewer(client)
    return DemoData(
        catalog=DEMO_CATALOG,
        schema=DEMO_SCHEMA,
        table=DEMO_TABLE,
        warehouse_id=warehouse_id,
        warehouse_name=DEMO_WAREHOUSE,
        reviewer_id=reviewer_id,
        reviewer_user_name=REVIEWER,
    )
