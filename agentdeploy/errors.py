"""Errors a user sees, each with its HTTP status and Databricks-style `error_code`.

    AgentDeployError (500 INTERNAL_ERROR)
    ├── InvalidParameterValue (400 INVALID_PARAMETER_VALUE; also a ValueError)
    │   └── MalformedRequest (400 MALFORMED_REQUEST)
    ├── Unauthenticated (401 UNAUTHENTICATED)
    ├── PermissionDenied (403 PERMISSION_DENIED)
    ├── NotFound (404 RESOURCE_DOES_NOT_EXIST)
    ├── AlreadyExists (409 RESOURCE_ALREADY_EXISTS)
    ├── Conflict (409 RESOURCE_CONFLICT)
    ├── PayloadTooLarge (413 REQUEST_LIMIT_EXCEEDED)
    ├── RateLimited (429 REQUEST_LIMIT_EXCEEDED, Retry-After)
    ├── Unavailable (503 TEMPORARILY_UNAVAILABLE, Retry-After)
    └── DeadlineExceeded (504 DEADLINE_EXCEEDED)

The server maps every one to `{"error_code": ..., "message": ...}` with its status: the shape
the databricks-sdk parses. Messages name what was wrong and how to fix it; never a stack trace.
"""

from __future__ import annotations

__all__ = [
    "AgentDeployError",
    "InvalidParameterValue",
    "MalformedRequest",
    "Unauthenticated",
    "PermissionDenied",
    "NotFound",
    "AlreadyExists",
    "Conflict",
    "PayloadTooLarge",
    "RateLimited",
    "Unavailable",
    "DeadlineExceeded",
]


class AgentDeployError(Exception):
    status_code: int = 500
    error_code: str = "INTERNAL_ERROR"

    def __init__(self, message: str, *, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.retry_after = retry_after

    def to_json(self) -> dict[str, str]:
        return {"error_code": self.error_code, "message": self.message}


class InvalidParameterValue(AgentDeployError, ValueError):
    """Bad input; also a ValueError, so pydantic validators may raise it."""

    status_code = 400
    error_code = "INVALID_PARAMETER_VALUE"


class MalformedRequest(InvalidParameterValue):
    error_code = "MALFORMED_REQUEST"


class Unauthenticated(AgentDeployError):
    status_code = 401
    error_code = "UNAUTHENTICATED"


class PermissionDenied(AgentDeployError):
    status_code = 403
    error_code = "PERMISSION_DENIED"


class NotFound(AgentDeployError):
    status_code = 404
    error_code = "RESOURCE_DOES_NOT_EXIST"


class AlreadyExists(AgentDeployError):
    status_code = 409
    error_code = "RESOURCE_ALREADY_EXISTS"


class Conflict(AgentDeployError):
    status_code = 409
    error_code = "RESOURCE_CONFLICT"


class PayloadTooLarge(AgentDeployError):
    status_code = 413
    error_code = "REQUEST_LIMIT_EXCEEDED"


class RateLimited(AgentDeployError):
    status_code = 429
    error_code = "REQUEST_LIMIT_EXCEEDED"


class Unavailable(AgentDeployError):
    status_code = 503
    error_code = "TEMPORARILY_UNAVAILABLE"


class DeadlineExceeded(AgentDeployError):
    status_code = 504
    error_code = "DEADLINE_EXCEEDED"
