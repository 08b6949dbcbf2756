"""The feedback model's code (MLflow models-from-code). The gateway serves it natively with the
same validation (`agentdeploy.serving.feedback.parse_feedback`); this file makes it a real,
loadable registered model version."""

from __future__ import annotations

from typing import Any

import mlflow
from mlflow.pyfunc import PythonModel


class FeedbackModel(PythonModel):
    def predict(self, context: Any, model_input: Any, params: Any = None) -> dict[str, Any]:
        from agentdeploy.tables.assessments import parse_feedback

        if hasattr(model_input, "to_dict"):
            model_input = {"dataframe_records": model_input.to_dict(orient="records")}
        records = parse_feedback(model_input, lambda _: True)
        return {"predictions": [{"result": "accepted", "request_id": r["request_id"]} for r in records]}


mlflow.models.set_model(FeedbackModel())
