"""The feedback model, answered natively by the gateway (served model `feedback`, no worker).

`FeedbackHandler` is set as `Gateway.native_handler`. It checks every `request_id` against the
requests the endpoint served — first the in-memory `RecentRequests` (fed by `IndexingSink` as the
gateway logs each request), then the endpoint's payload table — validates the body with
`parse_feedback` (400 naming the field) and answers like Databricks' feedback model:

    {"predictions": [{"result": "accepted", "request_id": "<id>"}, ...]}

The gateway logs the feedback request itself as a payload row like any other request; the
request-log formatting turns those rows into the assessment log.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson

from agentdeploy.serving.feedback import parse_feedback
from agentdeploy.serving.gateway import EndpointRoute, InferenceRecord, InferenceSink, Target
from agentdeploy.tables.payload import payload_table_name
from agentdeploy.tables.payload_writer import PayloadSink
from agentdeploy.tables.request_index import RecentRequests, payload_has_request

__all__ = ["FeedbackHandler", "IndexingSink"]


class IndexingSink:
    """The gateway's sink: logs through `inner`, then remembers the request id as served by its
    endpoint (only once logging succeeded: a refused request was never served)."""

    def __init__(self, inner: InferenceSink, recent: RecentRequests) -> None:
        self.inner = inner
        self.recent = recent

    @property
    def available(self) -> bool:
        return bool(getattr(self.inner, "available", True))

    async def append(self, record: InferenceRecord) -> None:
        await self.inner.append(record)
        self.recent.add(record.endpoint_name, record.databricks_request_id)


def _request_ids(payload: Any) -> list[str]:
    records = payload.get("dataframe_records") if isinstance(payload, dict) else None
    if not isinstance(records, list):
        return []
    return [r["request_id"] for r in records if isinstance(r, dict) and isinstance(r.get("request_id"), str)]


class FeedbackHandler:
    def __init__(self, recent: RecentRequests, warehouse_dir: Path, sink: PayloadSink | None = None) -> None:
        self.recent = recent
        self.warehouse_dir = Path(warehouse_dir)
        self.sink = sink

    async def __call__(
        self, route: EndpointRoute, target: Target, payload: dict[str, Any], record: InferenceRecord
    ) -> tuple[int, bytes]:
        known = set()
        unknown = []
        for request_id in _request_ids(payload):
            (known.add if (route.name, request_id) in self.recent else unknown.append)(request_id)
        config = route.inference_table
        if unknown and config:
            # Older than the in-memory window, or served before a restart: ask the payload table,
            # after committing what the spool still holds (replayed rows of the last run).
            if self.sink is not None and self.sink.writer.cursor < self.sink.spool.end:
                try:
                    await self.sink.flush()
                except RuntimeError:
                    pass  # the table may miss the newest rows: the ids are then reported unknown
            table = payload_table_name(
                config["catalog_name"], config["schema_name"], config.get("table_name_prefix") or route.name
            )
            known |= await payload_has_request(self.warehouse_dir, table, unknown)
        records = parse_feedback(payload, known.__contains__)
        return 200, orjson.dumps(
            {"predictions": [{"result": "accepted", "request_id": r["request_id"]} for r in records]}
        )
