"""The quickstart's demo data, created through the REST API, twice (idempotent)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from agentdeploy.client import AgentDeployClient
from agentdeploy.demo import FAQ, create_demo_data
from tests.harness import ServerProcess


@pytest.fixture(scope="module")
def fresh_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """Its own server: the demo owns the names `main`, `main.docs.faq`, `demo` and `reviewer`."""
    proc = ServerProcess(home=Path(tmp_path_factory.mktemp("demo-home")))
    proc.start()
    yield proc
    proc.stop()


def test_demo_data_is_created_once_and_queryable(fresh_server: ServerProcess) -> None:
    with AgentDeployClient(fresh_server.url, fresh_server.admin_token) as client:
        first = create_demo_data(client)
        second = create_demo_data(client)
        assert first == second  # same warehouse, same reviewer: nothing created twice
        assert (first.catalog, first.schema, first.table) == ("main", "main.docs", "main.docs.faq")
        warehouses = client.get("/api/2.0/sql/warehouses")["warehouses"]
        assert [w["name"] for w in warehouses].count("demo") == 1
        users = client.get("/api/2.0/preview/scim/v2/Users", params={"filter": 'userName eq "reviewer"'})
        assert [u["id"] for u in users["Resources"]] == [first.reviewer_id]
        result = client.post(
            "/api/2.0/sql/statements",
            json={
                "warehouse_id": first.warehouse_id,
                "statement": "SELECT count(*), count(DISTINCT question), min(length(answer)) "
                "FROM main.docs.faq",
            },
        )
    assert 8 <= len(FAQ) <= 12
    count, distinct, shortest = result["result"]["data_array"][0]
    assert int(count) == int(distinct) == len(FAQ) and int(shortest) > 40
    columns = [c["name"] for c in result["manifest"]["schema"]["columns"]]
    assert len(columns) == 3
