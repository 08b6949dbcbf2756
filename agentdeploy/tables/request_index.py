"""Which request ids an endpoint has served: what the feedback model checks a `request_id` against.

Recent ids are held in memory, per endpoint, in a bounded insertion-ordered set fed by the
gateway as it logs each request (a dict membership test on the feedback path). An id older than
that window, or served before a restart, is looked up in the endpoint's payload table with a
polars filter on `databricks_request_id` (Delta's per-file min/max statistics prune most files).
"""

from __future__ import annotations

import asyncio
import collections
from pathlib import Path

from agentdeploy.tables.payload_writer import payload_table_path

__all__ = ["RecentRequests", "payload_has_request"]


class RecentRequests:
    """Per endpoint, the last `capacity` request ids seen (oldest forgotten first)."""

    def __init__(self, capacity: int = 100_000) -> None:
        self.capacity = capacity
        self._ids: dict[str, collections.OrderedDict[str, None]] = {}

    def add(self, endpoint_name: str, request_id: str) -> None:
        ids = self._ids.get(endpoint_name)
        if ids is None:
            ids = self._ids[endpoint_name] = collections.OrderedDict()
        ids[request_id] = None
        if len(ids) > self.capacity:
            ids.popitem(last=False)

    def __contains__(self, key: tuple[str, str]) -> bool:
        ids = self._ids.get(key[0])
        return ids is not None and key[1] in ids

    def forget(self, endpoint_name: str) -> None:
        self._ids.pop(endpoint_name, None)


def _lookup(path: Path, request_ids: list[str]) -> set[str]:
    import polars as pl  # only on this rare path: keeps it out of the server's start-up

    if not (path / "_delta_log").is_dir():
        return set()
    found = (
        pl.scan_delta(str(path))
        .filter(pl.col("databricks_request_id").is_in(request_ids))
        .select("databricks_request_id")
        .unique()
        .collect()
    )
    return set(found["databricks_request_id"].to_list())


async def payload_has_request(warehouse_dir: Path, table: str, request_ids: list[str]) -> set[str]:
    """The ids among `request_ids` that have a row in the payload table `table` (off the loop)."""
    if not request_ids:
        return set()
    return await asyncio.to_thread(_lookup, payload_table_path(warehouse_dir, table), request_ids)
