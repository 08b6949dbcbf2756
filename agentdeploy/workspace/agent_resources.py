"""What an agent's declared resources require: the privilege its deployer must hold (no
privilege escalation) and exactly what its service principal is granted (least privilege).

The declared resources are the MLmodel file's `resources` dict, keyed by type then `name`:
`{"api_version": "1", "databricks": {"table": [{"name": "main.docs.faq"}], ...}}`.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from agentdeploy.errors import InvalidParameterValue

__all__ = [
    "Requirement",
    "RESOURCE_PRIVILEGES",
    "declared_requirements",
    "secret_references",
    "secret_scope_requirements",
    "grants_for",
]


@dataclass(frozen=True, slots=True, order=True)
class Requirement:
    securable_type: str
    full_name: str
    privilege: str

    def as_json(self) -> dict[str, str]:
        return {"securable_type": self.securable_type, "full_name": self.full_name, "privilege": self.privilege}

    @classmethod
    def from_json(cls, body: Mapping[str, Any]) -> Requirement:
        return cls(str(body["securable_type"]), str(body["full_name"]), str(body["privilege"]))

    def describe(self) -> str:
        return f"{self.privilege} on {self.securable_type.replace('_', ' ')} '{self.full_name}'"


# MLflow resource type -> (securable type, the least privilege that lets the agent use it).
RESOURCE_PRIVILEGES: dict[str, tuple[str, str]] = {
    "sql_warehouse": ("sql_warehouse", "CAN_USE"),
    "serving_endpoint": ("serving_endpoint", "CAN_QUERY"),
    "function": ("function", "EXECUTE"),
    "genie_space": ("genie_space", "CAN_RUN"),
    "vector_search_index": ("vector_search_index", "CAN_USE"),
    "table": ("table", "SELECT"),
    "uc_connection": ("connection", "USE_CONNECTION"),
}
_UNITY_CATALOG = {"table", "function"}
_SECRET_REF = re.compile(r"\{\{\s*secrets/([^/\s}]+)/([^/\s}]+)\s*\}\}")


def declared_requirements(resources: Mapping[str, Any] | None) -> list[Requirement]:
    """One requirement per declared resource; an unsupported type is refused, naming it."""
    if not resources:
        return []
    declared = resources.get("databricks", {}) if isinstance(resources, Mapping) else {}
    if not isinstance(declared, Mapping):
        raise InvalidParameterValue("The model's 'resources.databricks' must be a mapping of type -> list.")
    unsupported = sorted(set(declared) - set(RESOURCE_PRIVILEGES))
    if unsupported:
        raise InvalidParameterValue(
            f"The model declares resource type(s) agentdeploy does not support: {', '.join(unsupported)}. "
            f"Supported: {', '.join(sorted(RESOURCE_PRIVILEGES))}."
        )
    out: set[Requirement] = set()
    for resource_type, entries in declared.items():
        securable_type, privilege = RESOURCE_PRIVILEGES[resource_type]
        for entry in entries or ():
            name = entry.get("name") if isinstance(entry, Mapping) else None
            if not isinstance(name, str) or not name:
                raise InvalidParameterValue(f"A declared '{resource_type}' resource has no 'name'.")
            out.add(Requirement(securable_type, name, privilege))
    return sorted(out)


def secret_references(environment_vars: Mapping[str, str] | None) -> list[tuple[str, str]]:
    """(scope, key) of every `{{secrets/scope/key}}` in the values."""
    refs: set[tuple[str, str]] = set()
    for value in (environment_vars or {}).values():
        refs.update(_SECRET_REF.findall(str(value)))
    return sorted(refs)


def secret_scope_requirements(environment_vars: Mapping[str, str] | None) -> list[Requirement]:
    return sorted({Requirement("secret_scope", scope, "READ") for scope, _ in secret_references(environment_vars)})


def grants_for(requirements: Iterable[Requirement]) -> list[Requirement]:
    """What the agent's principal is granted: each resource's least privilege, plus USE_CATALOG
    and USE_SCHEMA on the parents of Unity Catalog objects. Nothing else."""
    out: set[Requirement] = set()
    for req in requirements:
        out.add(req)
        if req.securable_type in _UNITY_CATALOG:
            catalog, schema, _ = req.full_name.split(".", 2)
            out.add(Requirement("catalog", catalog, "USE_CATALOG"))
            out.add(Requirement("schema", f"{catalog}.{schema}", "USE_SCHEMA"))
    return sorted(out)
