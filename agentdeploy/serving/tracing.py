"""Per-request MLflow traces in a worker: the one place that touches MLflow's internal serving API.

MLflow 3.17.2 (pinned) captures a request's trace in memory, without exporting it anywhere, only
on its own model-serving path: with `IS_IN_DB_MODEL_SERVING_ENV=true` and
`ENABLE_MLFLOW_TRACING=true` set before mlflow is imported, a prediction run inside
`set_prediction_context(Context(request_id=rid))` leaves its finished trace (as a dict) in an
in-memory buffer keyed by `rid`, and `inference_table.pop_trace(rid)` takes it out. These names
are internal to MLflow; `tests/serving/test_tracing.py` fails if an upgrade moves them.

    enable_request_traces()              # before `import mlflow`
    with request_context(rid):
        output = model.predict(data)
    trace = pop_trace(rid)               # {"info": {...}, "data": {"spans": [...]}} or None
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator
from typing import Any

__all__ = ["SERVING_ENV", "enable_request_traces", "request_context", "pop_trace"]

# Read by mlflow at import time: the serving flag selects the in-memory inference-table exporter.
SERVING_ENV = {"IS_IN_DB_MODEL_SERVING_ENV": "true", "ENABLE_MLFLOW_TRACING": "true"}


def enable_request_traces() -> None:
    """Select MLflow's in-memory per-request trace buffer. Must run before mlflow is imported."""
    if "mlflow" in sys.modules and any(os.environ.get(k) != v for k, v in SERVING_ENV.items()):
        raise RuntimeError("enable_request_traces() must run before mlflow is imported")
    os.environ.update(SERVING_ENV)
    # Traces stay in this process: never exported to a tracking server on the request path.
    os.environ.pop("MLFLOW_EXPERIMENT_ID", None)


@contextlib.contextmanager
def request_context(request_id: str) -> Iterator[None]:
    """Everything traced inside (a predict, or a predict_stream drained inside) is keyed by
    `request_id`. The context is a contextvar: enter it in the thread that runs the prediction."""
    from mlflow.pyfunc.context import Context, set_prediction_context

    with set_prediction_context(Context(request_id=request_id)):
        yield


def pop_trace(request_id: str) -> dict[str, Any] | None:
    """The finished trace of `request_id` as a dict, removed from the buffer; None if there was
    none (the model traced nothing). Call it after a failed prediction too, to free the entry."""
    from mlflow.tracing.export.inference_table import pop_trace as _pop

    trace = _pop(request_id)
    return trace if isinstance(trace, dict) else None
