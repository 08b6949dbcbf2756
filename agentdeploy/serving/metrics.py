"""Per served entity request metrics, kept in memory by the gateway and exported in the
Prometheus text format (`GET /api/2.0/serving-endpoints/{name}/metrics`).

Counting is a few integer increments on the request path; the histogram's cumulative buckets
are only summed when the metrics are read.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass, field

__all__ = ["EntityMetrics", "ServingMetrics", "LATENCY_BUCKETS_MS"]

LATENCY_BUCKETS_MS: tuple[float, ...] = (
    1,
    2.5,
    5,
    10,
    25,
    50,
    100,
    250,
    500,
    1000,
    2500,
    5000,
    10000,
    30000,
    60000,
    120000,
)


@dataclass(slots=True)
class EntityMetrics:
    """Counters of one served entity of one endpoint (`served_entity` is "" for requests refused
    before a served entity was chosen, such as 429s)."""

    endpoint: str
    served_entity: str
    requests: int = 0
    errors_4xx: int = 0
    errors_5xx: int = 0
    latency_sum_ms: float = 0.0
    buckets: list[int] = field(default_factory=lambda: [0] * (len(LATENCY_BUCKETS_MS) + 1))

    def observe(self, status: int, latency_ms: float) -> None:
        self.requests += 1
        if status >= 500:
            self.errors_5xx += 1
        elif status >= 400:
            self.errors_4xx += 1
        self.latency_sum_ms += latency_ms
        self.buckets[bisect.bisect_left(LATENCY_BUCKETS_MS, latency_ms)] += 1


def _label(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


class ServingMetrics:
    """All endpoints' metrics: entries are made when the routing table is built, not per request."""

    def __init__(self) -> None:
        self._entries: dict[tuple[str, str], EntityMetrics] = {}

    def entity(self, endpoint: str, served_entity: str) -> EntityMetrics:
        key = (endpoint, served_entity)
        entry = self._entries.get(key)
        if entry is None:
            entry = self._entries[key] = EntityMetrics(endpoint, served_entity)
        return entry

    def forget(self, endpoint: str) -> None:
        for key in [k for k in self._entries if k[0] == endpoint]:
            del self._entries[key]

    def render(self, endpoint: str) -> str:
        """The endpoint's metrics in the Prometheus text exposition format (version 0.0.4)."""
        entries = [e for (name, _), e in sorted(self._entries.items()) if name == endpoint]
        lines: list[str] = []

        def family(name: str, kind: str, help_text: str) -> None:
            lines.append(f"# HELP {name} {help_text}")
            lines.append(f"# TYPE {name} {kind}")

        def labels(e: EntityMetrics, extra: str = "") -> str:
            base = f'endpoint_name="{_label(e.endpoint)}",served_entity_name="{_label(e.served_entity)}"'
            return "{" + base + extra + "}"

        family("request_count_total", "counter", "Requests answered, by served entity.")
        lines += [f"request_count_total{labels(e)} {e.requests}" for e in entries]
        family("request_4xx_count_total", "counter", "Requests answered with a 4xx status.")
        lines += [f"request_4xx_count_total{labels(e)} {e.errors_4xx}" for e in entries]
        family("request_5xx_count_total", "counter", "Requests answered with a 5xx status.")
        lines += [f"request_5xx_count_total{labels(e)} {e.errors_5xx}" for e in entries]
        family("request_latency_ms", "histogram", "Time from request to response in the gateway, in ms.")
        for e in entries:
            running = 0
            for bound, count in zip(LATENCY_BUCKETS_MS, e.buckets, strict=False):
                running += count
                le = f',le="{bound:g}"'
                lines.append(f"request_latency_ms_bucket{labels(e, le)} {running}")
            running += e.buckets[-1]
            inf = ',le="+Inf"'
            lines.append(f"request_latency_ms_bucket{labels(e, inf)} {running}")
            lines.append(f"request_latency_ms_sum{labels(e)} {e.latency_sum_ms:.3f}")
            lines.append(f"request_latency_ms_count{labels(e)} {e.requests}")
        return "\n".join(lines) + "\n"
