"""The feedback model: reviewers' assessments of an endpoint's requests.

It is a real registered model version (`{catalog}.{schema}.feedback`, logged from
`feedback_model.py`) so it lives in the registry and catalog like any model, but the gateway
serves it natively as served model `feedback` (no worker process), validating each request with
`agentdeploy.tables.assessments.parse_feedback`. Its rows land in the payload table like any
request.
"""

from __future__ import annotations

from pathlib import Path

from agentdeploy.tables.assessments import parse_feedback

__all__ = ["log_feedback_model", "parse_feedback", "FEEDBACK_MODEL_CODE"]

FEEDBACK_MODEL_CODE = Path(__file__).with_name("feedback_model.py")


def log_feedback_model(registered_name: str) -> int:
    """Log the feedback model from code and register it as `registered_name`; returns the version."""
    import mlflow

    info = mlflow.pyfunc.log_model(
        name="feedback",
        python_model=str(FEEDBACK_MODEL_CODE),
        registered_model_name=registered_name,
        pip_requirements=["mlflow"],
        metadata={"agentdeploy": "feedback-model"},
    )
    return int(info.registered_model_version or 1)
