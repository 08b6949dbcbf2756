"""Delta storage of catalog tables: create, append, replace, cached handles, Unity Catalog columns."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pytest
from deltalake import DeltaTable, write_deltalake

from agentdeploy.errors import AlreadyExists, InvalidParameterValue, NotFound
from agentdeploy.tables.delta import DeltaStore, uc_columns


@pytest.fixture()
def store(tmp_path: Path) -> DeltaStore:
    return DeltaStore(tmp_path / "warehouse")


def test_tables_live_at_warehouse_catalog_schema_table(store: DeltaStore, tmp_path: Path) -> None:
    store.write("Main.Docs.FAQ", pa.table({"q": ["a", "b"]}))
    path = tmp_path / "warehouse" / "main" / "docs" / "faq"
    assert (path / "_delta_log").is_dir()
    assert DeltaTable(str(path)).to_pyarrow_table().num_rows == 2  # plain Delta, readable by anyone
    assert store.exists("main.docs.faq")


def test_create_append_replace(store: DeltaStore) -> None:
    store.write("c.s.t", pa.table({"x": [1, 2]}))
    with pytest.raises(AlreadyExists):
        store.write("c.s.t", pa.table({"x": [3]}))
    store.write("c.s.t", pa.table({"x": [3]}), mode="append")
    assert sorted(store.dataset("c.s.t").to_table()["x"].to_pylist()) == [1, 2, 3]
    with pytest.raises(InvalidParameterValue, match="Cannot write table"):
        store.write("c.s.t", pa.table({"y": ["other schema"]}), mode="append")
    store.write("c.s.t", pa.table({"y": ["replaced"]}), mode="overwrite")
    assert store.dataset("c.s.t").to_table().to_pylist() == [{"y": "replaced"}]
    with pytest.raises(NotFound, match="tables create"):
        store.dataset("c.s.missing")
    with pytest.raises(NotFound):
        store.write("c.s.missing", pa.table({"x": [1]}), mode="append")


def test_cached_handle_sees_commits_made_elsewhere(store: DeltaStore) -> None:
    store.write("c.s.log", pa.table({"n": [1]}))
    assert store.dataset("c.s.log").count_rows() == 1
    write_deltalake(str(store.path("c.s.log")), pa.table({"n": [2]}), mode="append")  # another writer
    assert store.dataset("c.s.log").count_rows() == 2
    assert store.open("c.s.log") is store.open("c.s.log")  # one handle per table


def test_types_delta_cannot_hold_are_widened(store: DeltaStore) -> None:
    data = pa.table(
        {
            "u8": pa.array([1], pa.uint8()),
            "u64": pa.array([2], pa.uint64()),
            "nothing": pa.array([None]),
            "big": pa.array(["s"], pa.large_string()),
        }
    )
    store.write("c.s.wide", data)
    types = {c["name"]: c["type_name"] for c in store.columns("c.s.wide")}
    assert types == {"u8": "SHORT", "u64": "LONG", "nothing": "STRING", "big": "STRING"}


def test_uc_columns_names_types_as_unity_catalog_does() -> None:
    schema = pa.schema(
        [
            ("id", pa.int64()),
            ("n", pa.int32()),
            ("price", pa.decimal128(10, 2)),
            ("at", pa.timestamp("us", tz="UTC")),
            ("local", pa.timestamp("us")),
            ("tags", pa.list_(pa.string())),
            ("attrs", pa.map_(pa.string(), pa.int64())),
            ("who", pa.struct([("email", pa.string())])),
            ("day", pa.date32()),
            ("raw", pa.binary()),
        ]
    )
    columns = uc_columns(schema)
    assert [(c["name"], c["type_name"], c["type_text"], c["position"]) for c in columns] == [
        ("id", "LONG", "bigint", 0),
        ("n", "INT", "int", 1),
        ("price", "DECIMAL", "decimal(10,2)", 2),
        ("at", "TIMESTAMP", "timestamp", 3),
        ("local", "TIMESTAMP", "timestamp_ntz", 4),
        ("tags", "ARRAY", "array<string>", 5),
        ("attrs", "MAP", "map<string,bigint>", 6),
        ("who", "STRUCT", "struct<email:string>", 7),
        ("day", "DATE", "date", 8),
        ("raw", "BINARY", "binary", 9),
    ]


def test_bad_names_are_400(store: DeltaStore) -> None:
    for name in ("two.parts", "a.b.c.d", "../etc.passwd.x", "a.b./"):
        with pytest.raises(InvalidParameterValue, match="full_name"):
            store.write(name, pa.table({"x": [1]}))
    with pytest.raises(InvalidParameterValue, match="no columns"):
        store.write("c.s.empty", pa.table({}))
