"""The contract of a serving backend: how served entities are started, watched and stopped.

The server (its endpoint configs, the gateway) talks to one `ServingBackend` and nothing below
it, so that local processes (`backends.local`) can be replaced by Ray Serve or Kubernetes
without touching the gateway. A backend runs each served entity as a worker speaking the
protocol of `agentdeploy.serving.worker` on an address the gateway can reach.

Every method is keyed by the served entity's `name` (unique across endpoints; the caller makes it
so, e.g. `<endpoint>.<served entity>`).
"""

from __future__ import annotations

import abc
import enum
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

__all__ = ["EntityState", "EntityHealth", "ServedEntitySpec", "ServingBackend", "StartFailed"]


class EntityState(enum.StrEnum):
    STARTING = "STARTING"  # being prepared or (re)started; not answering yet
    READY = "READY"  # answering on `address(name)`
    FAILED = "FAILED"  # could not start (see `message` and `log_tail`); not retried by itself
    STOPPED = "STOPPED"  # stopped on purpose (removed, or scaled to zero); `start` brings it back


@dataclass(frozen=True)
class EntityHealth:
    state: EntityState
    message: str = ""
    restarts: int = 0  # restarts after unexpected exits since the last `start`
    last_start_s: float | None = None  # duration of the last (re)start until healthy: cold-start time
    since: datetime | None = None  # when it entered `state`
    pid: int | None = None


@dataclass
class ServedEntitySpec:
    """What to serve. `environment_vars` are resolved values and may hold secrets: a backend
    never logs them and never puts them in argv (readable by anyone in /proc)."""

    name: str
    model_uri: str  # models:/<catalog.schema.model>/<version>
    model_path: Path | None = None  # a local copy, when the caller already has one
    environment_vars: dict[str, str] = field(default_factory=dict, repr=False)
    scale_to_zero: bool = False
    workload_size: str = "Small"
    entity_name: str = ""  # the registered model (catalog.schema.model)
    entity_version: str = ""
    workspace_host: str = ""  # AGENTDEPLOY_HOST given to the agent code

    def __post_init__(self) -> None:
        if not self.name or "/" in self.name or self.name.startswith("."):
            raise ValueError(f"invalid served entity name {self.name!r}")


class StartFailed(RuntimeError):
    """A served entity did not become healthy; the message ends with the worker's last log lines."""


class ServingBackend(abc.ABC):
    """Runs served entities. Methods are called from the server's event loop."""

    @abc.abstractmethod
    async def start(self, spec: ServedEntitySpec) -> None:
        """Start serving `spec` and return once it answers healthy (state READY).

        Raises `StartFailed` (with the worker's last log lines) if it cannot: a model that does
        not load, a timeout. Starting a name that is already running replaces it: the new worker
        is started and becomes current only once healthy, then the old one is stopped. After
        READY the backend keeps it running: a worker that dies is restarted with backoff
        (state STARTING meanwhile, `restarts` counting) with no call from the caller.
        """

    @abc.abstractmethod
    async def stop(self, name: str) -> None:
        """Stop serving `name` (state STOPPED). Idempotent: stopping an unknown or stopped
        entity does nothing. Keeps what a later `start` of the same name can reuse (the model)."""

    @abc.abstractmethod
    async def remove(self, name: str) -> None:
        """Stop `name` and delete everything kept for it (model copy, credentials). Idempotent."""

    @abc.abstractmethod
    def health(self, name: str) -> EntityHealth:
        """The current state of `name` (STOPPED if unknown). Cheap: no I/O."""

    @abc.abstractmethod
    def address(self, name: str) -> tuple[str, int] | None:
        """(host, port) of `name`'s worker while READY, else None. Cheap: call it per request;
        it may change across restarts."""

    @abc.abstractmethod
    def write_credentials(self, name: str, token: str, expires_at: datetime | float | None) -> None:
        """Give `name`'s agent code a new token: written atomically, readable by that worker only;
        picked up by `agentdeploy.runtime.workspace_token()` on its next call. Allowed before
        `start` (the first token) and while stopped."""

    @abc.abstractmethod
    def log_tail(self, name: str, lines: int = 100) -> str:
        """The last `lines` lines of `name`'s worker log ('' if none)."""

    @abc.abstractmethod
    async def close(self) -> None:
        """Stop every served entity (server shutdown). Their kept state stays for the next start."""
