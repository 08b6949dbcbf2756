"""Scale to zero over any `ServingBackend`: stop idle entities, start them again on demand.

    supervisor = ScaleToZero(backend, idle_s=settings.scale_to_zero_idle_s)
    supervisor.track(spec)                          # after backend.start(spec)
    supervisor.start()                              # the idle sweep, on the server's loop
    # per request, in the gateway:
    address = backend.address(name) or await supervisor.wake(name, timeout_s=...)
    supervisor.touch(name)

Only specs with `scale_to_zero` are ever stopped. A request for a stopped entity is held, not
refused: `wake` starts it (one start however many requests wait) and returns its address once
READY; the cold-start time is the backend's `health(name).last_start_s`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

from agentdeploy.errors import DeadlineExceeded, Unavailable
from agentdeploy.serving.backends.base import EntityState, ServedEntitySpec, ServingBackend

__all__ = ["ScaleToZero"]

log = logging.getLogger("agentdeploy.serving.supervisor")


class ScaleToZero:
    def __init__(self, backend: ServingBackend, *, idle_s: float, sweep_every_s: float | None = None) -> None:
        self.backend = backend
        self.idle_s = idle_s
        self.sweep_every_s = sweep_every_s or max(0.2, min(30.0, idle_s / 4))
        self._specs: dict[str, ServedEntitySpec] = {}
        self._last_used: dict[str, float] = {}
        self._waking: dict[str, asyncio.Task[None]] = {}
        self._sweeper: asyncio.Task[None] | None = None

    def track(self, spec: ServedEntitySpec) -> None:
        """Remember `spec` so it can be woken; it counts as used now."""
        self._specs[spec.name] = spec
        self._last_used[spec.name] = time.monotonic()

    def untrack(self, name: str) -> None:
        self._specs.pop(name, None)
        self._last_used.pop(name, None)

    def touch(self, name: str) -> None:
        """A request reached `name` (a dict write: cheap enough for every request)."""
        self._last_used[name] = time.monotonic()

    def scaled_to_zero(self, name: str) -> bool:
        return name in self._specs and self.backend.health(name).state == EntityState.STOPPED

    async def wake(self, name: str, *, timeout_s: float) -> tuple[str, int]:
        """The address of `name`, starting it first if it was scaled to zero."""
        address = self.backend.address(name)
        if address is not None:
            return address
        spec = self._specs.get(name)
        if spec is None:
            raise Unavailable(f"Served entity {name} is not running.", retry_after=5)
        task = self._waking.get(name)
        if task is None or task.done():
            log.info("waking %s (scaled to zero)", name)
            task = self._waking[name] = asyncio.ensure_future(self.backend.start(spec))
        try:
            await asyncio.wait_for(asyncio.shield(task), timeout_s)
        except TimeoutError:
            raise DeadlineExceeded(f"Served entity {name} did not start within {timeout_s:.0f}s.") from None
        except Exception as exc:
            raise Unavailable(
                f"Served entity {name} could not start: {str(exc).splitlines()[0]}", retry_after=10
            ) from None
        self.touch(name)
        address = self.backend.address(name)
        if address is None:
            raise Unavailable(f"Served entity {name} is restarting.", retry_after=1)
        return address

    def start(self) -> None:
        if self._sweeper is None:
            self._sweeper = asyncio.ensure_future(self._sweep_forever())

    async def close(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sweeper
            self._sweeper = None

    async def sweep(self) -> list[str]:
        """Stop every scale-to-zero entity idle for `idle_s`; the names stopped."""
        now = time.monotonic()
        stopped = []
        for name, spec in list(self._specs.items()):
            idle = now - self._last_used.get(name, now)
            waking = self._waking.get(name)
            if (
                spec.scale_to_zero
                and idle >= self.idle_s
                and (waking is None or waking.done())
                and self.backend.health(name).state == EntityState.READY
            ):
                log.info("scaling %s to zero after %.0fs idle", name, idle)
                await self.backend.stop(name)
                stopped.append(name)
        return stopped

    async def _sweep_forever(self) -> None:
        while True:
            await asyncio.sleep(self.sweep_every_s)
            try:
                await self.sweep()
            except Exception:
                log.exception("scale-to-zero sweep failed")
