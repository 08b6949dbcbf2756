"""Names derived from a registered model, by the reference's rules (databricks.agents)."""

from __future__ import annotations

from agentdeploy.errors import InvalidParameterValue
from agentdeploy.workspace.names import check_full_name

__all__ = [
    "endpoint_name_for",
    "served_entity_name_for",
    "feedback_model_name_for",
    "inference_table_prefix_for",
    "principal_block_name",
    "FEEDBACK_SERVED_MODEL",
    "MAX_NAME",
]

MAX_NAME = 63
FEEDBACK_SERVED_MODEL = "feedback"
_STRIP_SUFFIX = "_-"


def _sanitize(name: str) -> str:
    return name.replace(".", "-").rstrip(_STRIP_SUFFIX)


def _check_model_name(model_name: str) -> tuple[str, str, str]:
    catalog, schema, model = check_full_name("model_name", model_name, parts=3)
    return catalog, schema, model


def endpoint_name_for(model_name: str) -> str:
    """`agents_` + the model name cut to 56 characters, `.` -> `-`."""
    _check_model_name(model_name)
    prefix = "agents_"
    return prefix + _sanitize(model_name[: MAX_NAME - len(prefix)])


def served_entity_name_for(model_name: str, version: int | str) -> str:
    """The model name cut to fit 63 characters with `_{version}`, `.` -> `-`."""
    _check_model_name(model_name)
    suffix = f"_{version}"
    return _sanitize(model_name[: MAX_NAME - len(suffix)]) + suffix


def feedback_model_name_for(model_name: str) -> str:
    catalog, schema, _ = _check_model_name(model_name)
    return f"{catalog}.{schema}.feedback"


def inference_table_prefix_for(model_name: str) -> str:
    """The model's own name (the third part): tables are `{catalog}.{schema}.{model}_payload`."""
    _, _, model = _check_model_name(model_name)
    if len(model) > MAX_NAME:
        raise InvalidParameterValue(f"'model_name' part {model!r} is longer than {MAX_NAME} characters.")
    return model


def principal_block_name(application_id: str) -> str:
    """The Prefect block holding an agent principal's OAuth secret (block names allow lowercase
    letters, digits and dashes)."""
    return f"agent-principal-{application_id.lower()}"
