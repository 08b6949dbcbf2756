"""SQL statements over Delta tables: translation, refusals, authorization, the Databricks shape."""

from __future__ import annotations

from pathlib import Path

import duckdb
import httpx
import pyarrow as pa
import pytest

from agentdeploy.errors import InvalidParameterValue
from agentdeploy.workspace.sql import (
    PreparedStatement,
    StatementParameter,
    locked_database,
    run_prepared,
    translate,
)
from tests.harness import ServerProcess
from tests.workspace.data_helpers import (
    DataSet,
    grant,
    make_dataset,
    make_schema,
    revoke,
    run_sql,
    service_principal,
    unique_name,
    upload_table,
)


@pytest.fixture(scope="module")
def data(server: ServerProcess) -> DataSet:
    with server.client() as admin:
        return make_dataset(admin, server.url)


# Translation (no server) ----------------------------------------------------------------------


def test_three_part_names_become_hidden_tables_aliased_by_their_name() -> None:
    prepared = translate("SELECT faq.question, main.docs.faq.id FROM main.docs.faq WHERE id > 1")
    assert prepared.table_names == ["main.docs.faq"]
    # DuckDB reserves the catalog `main`: the name must not reach DuckDB as such.
    assert "main.docs" not in prepared.duckdb_sql
    assert "AS faq" in prepared.duckdb_sql and "faq.id" in prepared.duckdb_sql


def test_missing_parts_come_from_the_request_defaults_and_ctes_are_not_tables() -> None:
    prepared = translate(
        "WITH recent AS (SELECT * FROM docs.faq) SELECT * FROM recent JOIN other o ON true",
        catalog="cat1",
        schema="s1",
    )
    assert prepared.table_names == ["cat1.docs.faq", "cat1.s1.other"]
    assert "recent" in prepared.duckdb_sql and "AS o" in prepared.duckdb_sql


def test_named_parameters_become_typed_duckdb_parameters() -> None:
    prepared = translate(
        "SELECT * FROM a.b.c WHERE id = :id AND q = :q",
        parameters=[StatementParameter("id", "2", "INT"), StatementParameter("q", "x'; DROP")],
    )
    assert "CAST($id AS INT)" in prepared.duckdb_sql and "CAST($q AS TEXT)" in prepared.duckdb_sql
    assert prepared.parameters == {"id": "2", "q": "x'; DROP"}  # values never enter the SQL text
    with pytest.raises(InvalidParameterValue, match="no parameter named 'nope'"):
        translate("SELECT :nope")
    with pytest.raises(InvalidParameterValue, match="not a SQL type"):
        translate("SELECT :x", parameters=[StatementParameter("x", "1", "NOT A TYPE(")])


# Refusals over HTTP ---------------------------------------------------------------------------

HOSTILE = [
    ("SELECT * FROM read_csv('/etc/passwd')", "read_csv"),
    ("SELECT * FROM glob('/*')", "glob"),
    ("ATTACH ':memory:' AS x", "ATTACH"),
    ("COPY (SELECT 1) TO '/tmp/agentdeploy-copy.csv'", "COPY"),
    ("INSTALL httpfs", "INSTALL"),
    ("LOAD httpfs", "LOAD"),
    ("SET threads = 8", "SET"),
    ("PRAGMA version", "PRAGMA"),
    ("SELECT 1; SELECT 2", "2 statements"),
    ("CREATE TABLE t (a INT)", "CREATE"),
    ("DROP TABLE {table}", "DROP"),
    ("INSERT INTO {table} VALUES (1, 'x', 1.0, true)", "INSERT"),
    ("DELETE FROM {table}", "DELETE"),
    ("UPDATE {table} SET id = 0", "UPDATE"),
    ("SELECT * INTO copy_of FROM {table}", "INTO"),
    ("SELECT * FROM read_text('/etc/hostname')", "read_text"),
    ("SELECT * FROM 'file.csv'", "not a valid name"),
    ("SELECT * FROM {table} VERSION AS OF 0", "time travel"),
    ("SELECT ?", "positional"),
]


@pytest.mark.parametrize(("statement", "named"), HOSTILE, ids=[h[0][:30] for h in HOSTILE])
def test_hostile_sql_is_refused_with_400_naming_why(data: DataSet, statement: str, named: str) -> None:
    response = run_sql(data.reader.client, data.warehouse_id, statement.format(table=data.full_name))
    assert response.status_code == 400, response.text
    body = response.json()
    assert body["error_code"] == "INVALID_PARAMETER_VALUE"
    assert named.lower() in body["message"].lower(), body["message"]


def test_hostile_sql_changed_nothing(server: ServerProcess, data: DataSet) -> None:
    with server.client() as admin:
        response = run_sql(admin, data.warehouse_id, f"SELECT count(*) FROM {data.full_name}")
    assert response.json()["result"]["data_array"] == [["3"]]
    assert not Path("/tmp/agentdeploy-copy.csv").exists()


def test_table_without_select_is_403_naming_privilege_and_table(server: ServerProcess, data: DataSet) -> None:
    with server.client() as admin:
        other = f"{data.catalog}.{data.schema}.secret_{unique_name('t')}"
        assert upload_table(admin, other, pa.table({"x": [1]})).status_code == 200
    response = run_sql(data.reader.client, data.warehouse_id, f"SELECT * FROM {data.full_name}, {other}")
    assert response.status_code == 403, response.text
    assert f"SELECT on table '{other}'" in response.json()["message"]


def test_table_in_schema_without_use_schema_is_403(server: ServerProcess, data: DataSet) -> None:
    schema = f"{data.catalog}.{unique_name('s')}"
    table = f"{schema}.t"
    with server.client() as admin:
        make_schema(admin, data.catalog, schema.split(".")[1])
        assert upload_table(admin, table, pa.table({"x": [1]})).status_code == 200
        grant(admin, "table", table, data.reader.application_id, "SELECT")  # SELECT, but no USE_SCHEMA
    response = run_sql(data.reader.client, data.warehouse_id, f"SELECT * FROM {table}")
    assert response.status_code == 403
    assert f"USE_SCHEMA on schema '{schema}'" in response.json()["message"]


def test_warehouse_without_can_use_is_403(server: ServerProcess, data: DataSet) -> None:
    with server.client() as admin:
        stranger = service_principal(admin, server.url)
    response = run_sql(stranger.client, data.warehouse_id, "SELECT 1")
    assert response.status_code == 403 and "CAN_USE on sql warehouse" in response.json()["message"]
    assert run_sql(stranger.client, "no-such-warehouse", "SELECT 1").status_code == 404


def test_revoke_takes_effect_on_the_next_statement(server: ServerProcess, data: DataSet) -> None:
    with server.client() as admin:
        reader = service_principal(admin, server.url)
        from tests.workspace.data_helpers import grant_warehouse

        grant_warehouse(admin, data.warehouse_id, reader.application_id)
        grant(admin, "catalog", data.catalog, reader.application_id, "USE_CATALOG", "USE_SCHEMA", "SELECT")
        assert (
            run_sql(reader.client, data.warehouse_id, f"SELECT id FROM {data.full_name}").status_code == 200
        )
        revoke(admin, "catalog", data.catalog, reader.application_id, "SELECT")
        response = run_sql(reader.client, data.warehouse_id, f"SELECT id FROM {data.full_name}")
    assert response.status_code == 403 and f"SELECT on table '{data.full_name}'" in response.json()["message"]


def test_bad_request_options_are_400_naming_the_field(data: DataSet) -> None:
    for body, field in [
        ({"disposition": "EXTERNAL_LINKS"}, "disposition"),
        ({"format": "CSV"}, "format"),
        ({"wait_timeout": "2s"}, "wait_timeout"),
        ({"parameters": [{"name": "bad name", "value": "1"}]}, "parameters"),
    ]:
        response = run_sql(data.reader.client, data.warehouse_id, "SELECT 1", **body)
        assert response.status_code == 400 and field in response.json()["message"], response.text
    response = data.reader.client.post("/api/2.0/sql/statements", json={"statement": "SELECT 1"})
    assert response.status_code == 400 and "warehouse_id" in response.json()["message"]


# Results ------------------------------------------------------------------------------------------


def test_result_is_in_the_databricks_shape(data: DataSet) -> None:
    response = run_sql(
        data.reader.client,
        data.warehouse_id,
        "SELECT id, question, score, published, CAST(:day AS DATE) AS day FROM faq "
        "WHERE id <= :n ORDER BY id",
        catalog=data.catalog,
        schema=data.schema,
        wait_timeout="10s",
        parameters=[{"name": "n", "value": "3", "type": "INT"}, {"name": "day", "value": "2024-05-01"}],
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["status"] == {"state": "SUCCEEDED"}
    manifest = body["manifest"]
    assert (
        manifest["format"] == "JSON_ARRAY" and manifest["total_row_count"] == 3 and not manifest["truncated"]
    )
    columns = manifest["schema"]["columns"]
    assert manifest["schema"]["column_count"] == 5
    assert [(c["name"], c["type_name"], c["position"]) for c in columns] == [
        ("id", "LONG", 0),
        ("question", "STRING", 1),
        ("score", "DOUBLE", 2),
        ("published", "BOOLEAN", 3),
        ("day", "DATE", 4),
    ]
    assert body["result"]["data_array"] == [
        ["1", "What is agentdeploy?", "0.5", "true", "2024-05-01"],
        ["2", "Where are tables?", "1.25", "false", "2024-05-01"],
        ["3", None, None, "true", "2024-05-01"],
    ]
    assert body["result"]["row_count"] == 3 and body["result"]["chunk_index"] == 0


def test_statement_can_be_fetched_again_by_its_owner_only(server: ServerProcess, data: DataSet) -> None:
    body = run_sql(
        data.reader.client, data.warehouse_id, f"SELECT count(*) AS n FROM {data.full_name}"
    ).json()
    again = data.reader.client.get(f"/api/2.0/sql/statements/{body['statement_id']}")
    assert again.status_code == 200 and again.json() == body
    with server.client() as admin:
        assert admin.get(f"/api/2.0/sql/statements/{body['statement_id']}").status_code == 404


def test_a_statement_duckdb_rejects_is_failed_naming_the_table_as_written(data: DataSet) -> None:
    response = run_sql(data.reader.client, data.warehouse_id, f"SELECT no_such_column FROM {data.full_name}")
    assert response.status_code == 200
    body = response.json()
    assert body["status"]["state"] == "FAILED"
    assert "no_such_column" in body["status"]["error"]["message"]
    assert "__agentdeploy" not in body["status"]["error"]["message"]


def test_new_rows_are_seen_by_the_next_statement(server: ServerProcess, data: DataSet) -> None:
    with server.client() as admin:
        table = f"{data.catalog}.{data.schema}.{unique_name('grow')}"
        assert upload_table(admin, table, pa.table({"x": [1, 2]})).status_code == 200
        count = run_sql(admin, data.warehouse_id, f"SELECT sum(x) FROM {table}").json()["result"][
            "data_array"
        ]
        assert count == [["3"]]
        assert upload_table(admin, table, pa.table({"x": [10]}), mode="append").status_code == 200
        count = run_sql(admin, data.warehouse_id, f"SELECT sum(x) FROM {table}").json()["result"][
            "data_array"
        ]
    assert count == [["13"]]


def test_row_limit_truncates(data: DataSet) -> None:
    body = run_sql(
        data.reader.client, data.warehouse_id, f"SELECT id FROM {data.full_name} ORDER BY id", row_limit=2
    ).json()
    assert body["result"]["data_array"] == [["1"], ["2"]] and body["manifest"]["truncated"] is True


# The table upload API -------------------------------------------------------------------------


def test_upload_needs_create_table_and_the_creator_owns_the_table(
    server: ServerProcess, data: DataSet
) -> None:
    table = f"{data.catalog}.{data.schema}.{unique_name('mine')}"
    refused = upload_table(data.reader.client, table, pa.table({"x": [1]}))
    assert refused.status_code == 403 and "CREATE_TABLE on schema" in refused.json()["message"]
    with server.client() as admin:
        grant(admin, "schema", f"{data.catalog}.{data.schema}", data.reader.application_id, "CREATE_TABLE")
    created = upload_table(data.reader.client, table, pa.table({"x": [1]}))
    assert created.status_code == 200, created.text
    assert created.json()["columns"][0]["type_name"] == "LONG"
    assert upload_table(data.reader.client, table, pa.table({"x": [1]})).status_code == 409
    # The owner reads it without any grant on the table itself.
    rows = run_sql(data.reader.client, data.warehouse_id, f"SELECT x FROM {table}").json()["result"][
        "data_array"
    ]
    assert rows == [["1"]]
    info = data.reader.client.get(f"/api/2.1/unity-catalog/tables/{table}")
    assert info.status_code == 200 and info.json()["full_name"] == table


def test_upload_of_garbage_is_400(data: DataSet, server: ServerProcess) -> None:
    with server.client() as admin:
        response = admin.post(
            f"/api/2.0/agentdeploy/tables/{data.catalog}.{data.schema}.junk", content=b"not parquet"
        )
        assert response.status_code == 400 and "Parquet" in response.json()["message"]
        response = admin.post("/api/2.0/agentdeploy/tables/only.two", content=b"PAR1")
        assert response.status_code == 400 and "full_name" in response.json()["message"]


def test_tables_listing_holds_only_what_the_caller_may_read(data: DataSet) -> None:
    listed = data.reader.client.get(
        "/api/2.0/agentdeploy/tables", params={"catalog_name": data.catalog}
    ).json()
    names = {t["full_name"] for t in listed["tables"]}
    assert data.full_name in names
    assert not any(n.split(".")[2].startswith("secret_") for n in names)


def test_many_statements_are_fast_enough_for_agents(data: DataSet) -> None:
    import time

    client: httpx.Client = data.reader.client
    run_sql(client, data.warehouse_id, f"SELECT * FROM {data.full_name} WHERE id = 1")
    started = time.perf_counter()
    for i in range(20):
        response = run_sql(
            client,
            data.warehouse_id,
            f"SELECT question FROM {data.full_name} WHERE id = :i",
            parameters=[{"name": "i", "value": str(i % 3 + 1), "type": "INT"}],
        )
        assert response.status_code == 200
    per_statement_ms = (time.perf_counter() - started) / 20 * 1000
    assert per_statement_ms < 100, per_statement_ms  # a fresh DuckDB per statement alone costs ~30 ms


def test_concurrent_statements_each_see_their_own_tables(server: ServerProcess, data: DataSet) -> None:
    from concurrent.futures import ThreadPoolExecutor

    with server.client() as admin:
        other = f"{data.catalog}.{data.schema}.{unique_name('other')}"
        assert upload_table(admin, other, pa.table({"id": [100, 200]})).status_code == 200

        def one(i: int) -> list[list[str]]:
            table = data.full_name if i % 2 else other
            response = run_sql(admin, data.warehouse_id, f"SELECT sum(id) FROM {table}")
            assert response.status_code == 200, response.text
            return response.json()["result"]["data_array"]

        with ThreadPoolExecutor(max_workers=6) as pool:
            results = list(pool.map(one, range(24)))
    assert results == [[["300"]] if i % 2 == 0 else [["6"]] for i in range(24)]


# The second wall: the locked DuckDB itself, should a statement get past the checks -----------


def _raw(sql: str) -> PreparedStatement:
    return PreparedStatement(duckdb_sql=sql, tables={}, parameters={})


@pytest.mark.parametrize(
    "sql",
    [
        "SELECT * FROM read_csv('/etc/passwd')",
        "SELECT * FROM glob('/*')",
        "COPY (SELECT 42) TO '/tmp/agentdeploy-wall.csv'",
        "INSTALL httpfs",
        "LOAD httpfs",
        "SET enable_external_access = true",
    ],
)
def test_the_locked_database_refuses_files_extensions_and_settings(sql: str) -> None:
    database = locked_database()
    try:
        with pytest.raises(duckdb.Error, match="disabled|locked|Permission"):
            run_prepared(database, _raw(sql), {})
    finally:
        database.close()


def test_python_objects_are_not_reachable_by_name() -> None:
    secret_frame = pa.table({"token": ["in-process"]})  # noqa: F841 (what a replacement scan would find)
    database = locked_database()
    try:
        with pytest.raises(duckdb.CatalogException):
            run_prepared(database, _raw("SELECT * FROM secret_frame"), {})
    finally:
        database.close()


def test_a_runaway_statement_is_interrupted() -> None:
    database = locked_database()
    try:
        with pytest.raises(duckdb.InterruptException):
            run_prepared(database, _raw("SELECT count(*) FROM range(1000000000000)"), {}, timeout_s=0.3)
        assert run_prepared(database, _raw("SELECT 1"), {}).rows == [["1"]]  # the database still works
    finally:
        database.close()
