"""The one REST client of agentdeploy (httpx), used by the CLI, the SDK, flows and tasks.

    client = AgentDeployClient.from_environment()      # AGENTDEPLOY_HOST/TOKEN or credentials
    client.post("/api/2.0/token/create", json={"comment": "ci"})

Error answers are raised as the same `agentdeploy.errors` classes the server raised, with the
server's message. Transient failures (connection refused, 502/503/504) raise `Unavailable`, which
flows retry; denials (401/403) are never retried.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import httpx

from agentdeploy import errors
from agentdeploy.settings import Settings, get_settings

__all__ = ["AgentDeployClient", "read_credentials"]

_BY_STATUS: dict[int, type[errors.AgentDeployError]] = {
    400: errors.InvalidParameterValue,
    401: errors.Unauthenticated,
    403: errors.PermissionDenied,
    404: errors.NotFound,
    409: errors.AlreadyExists,
    413: errors.PayloadTooLarge,
    429: errors.RateLimited,
    502: errors.Unavailable,
    503: errors.Unavailable,
    504: errors.DeadlineExceeded,
}


def read_credentials(settings: Settings | None = None) -> tuple[str, str]:
    """(host, token) from `AGENTDEPLOY_HOST`/`AGENTDEPLOY_TOKEN`, else `AGENTDEPLOY_HOME/credentials`."""
    settings = settings or get_settings()
    host = os.environ.get("AGENTDEPLOY_HOST") or settings.host
    token = os.environ.get("AGENTDEPLOY_TOKEN") or (settings.token.get_secret_value() if settings.token else None)
    if host and token:
        return host.rstrip("/"), token
    path: Path = settings.credentials_path
    try:
        stored = json.loads(path.read_text())
    except FileNotFoundError:
        raise errors.Unauthenticated(
            f"No credentials: {path} does not exist. Start the stack with 'agentdeploy up' "
            "or set AGENTDEPLOY_HOST and AGENTDEPLOY_TOKEN."
        ) from None
    return (host or stored["host"]).rstrip("/"), token or stored["token"]


class AgentDeployClient:
    def __init__(self, host: str, token: str, *, timeout: float = 60.0) -> None:
        self.host = host.rstrip("/")
        self._token = token
        self._http = httpx.Client(
            base_url=self.host,
            headers={"Authorization": f"Bearer {token}", "User-Agent": "agentdeploy-client"},
            timeout=timeout,
        )

    @classmethod
    def from_environment(cls, settings: Settings | None = None) -> AgentDeployClient:
        host, token = read_credentials(settings)
        return cls(host, token)

    @property
    def token(self) -> str:
        """The credential this client sends (to save it in a Prefect block; never log it)."""
        return self._token

    def __repr__(self) -> str:  # never shows the token
        return f"AgentDeployClient(host={self.host!r})"

    def request(self, method: str, path: str, **kwargs: Any) -> Any:
        try:
            response = self._http.request(method, path, **kwargs)
        except httpx.TransportError as exc:
            raise errors.Unavailable(f"Cannot reach agentdeploy at {self.host}: {exc.__class__.__name__}.") from None
        if response.status_code >= 400:
            try:
                body = response.json()
                message = body.get("message") or response.text
            except ValueError:
                message = response.text[:500]
            error_class = _BY_STATUS.get(response.status_code, errors.AgentDeployError)
            retry_after = response.headers.get("retry-after")
            raise error_class(message, retry_after=float(retry_after) if retry_after else None)
        if not response.content:
            return {}
        return response.json()

    def get(self, path: str, **kwargs: Any) -> Any:
        return self.request("GET", path, **kwargs)

    def post(self, path: str, json: Any = None, **kwargs: Any) -> Any:
        return self.request("POST", path, json=json if json is not None else {}, **kwargs)

    def put(self, path: str, json: Any = None, **kwargs: Any) -> Any:
        return self.request("PUT", path, json=json if json is not None else {}, **kwargs)

    def patch(self, path: str, json: Any = None, **kwargs: Any) -> Any:
        return self.request("PATCH", path, json=json if json is not None else {}, **kwargs)

    def delete(self, path: str, **kwargs: Any) -> Any:
        return self.request("DELETE", path, **kwargs)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> AgentDeployClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
