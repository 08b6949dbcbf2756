"""Scale to zero over any `ServingBackend`: stop idle entities, start them again on demand.

    supervisor = ScaleToZero(backend, idle_s=settings.scale_to_zero_idle_s)
    supervisor.track(spec)                          # after backend.start(spec)
    supervisor.start()                              # the idle sweep, on the server's loop
    # per request, in the gateway:
    if supervisor.needs_wake(name):
        address = await supervisor.wake(name, timeout_s=...)
    supervisor.touch(name)

Only specs with `scale_to_zero` are ever stopped, and never while `busy(name)` (requests in
flight). A request for a stopped entity (or one being stopped) is held, not refused: `wake`
starts it (one start however many requests wait) and returns its address once READY. Each cold
start (stopped -> ready) is logged and kept in `cold_starts[name]` (seconds).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable

from agentdeploy.errors import DeadlineExceeded, Unavailable
from agentdeploy.serving.backends.base import EntityState, ServedEntitySpec, ServingBackend

__all__ = ["ScaleToZero"]

log = logging.getLogger("agentdeploy.serving.supervisor")


class ScaleToZero:
    def __init__(
        self,
        backend: ServingBackend,
        *,
        idle_s: float,
        sweep_every_s: float | None = None,
        busy: Callable[[str], bool] | None = None,
    ) -> None:
        self.backend = backend
        self.idle_s = idle_s
        self.sweep_every_s = sweep_every_s or max(0.2, min(30.0, idle_s / 4))
        # A worker with requests in flight (a long stream) is never stopped under them.
        self.busy = busy or (lambda name: False)
        self.cold_starts: dict[str, float] = {}  # name -> seconds of its last wake-up (for status)
        self.scaled_at: dict[str, float] = {}  # name -> time.time() it was scaled to zero
        self._specs: dict[str, ServedEntitySpec] = {}
        self._last_used: dict[str, float] = {}
        self._waking: dict[str, asyncio.Task[None]] = {}
        self._stopping: dict[str, asyncio.Task[None]] = {}
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

    def phase(self, name: str) -> str | None:
        """"stopping" (idle: its worker is being stopped), "stopped" (its worker is gone),
        "waking" (a request is starting it), or None (running, or not scale-to-zero)."""
        waking = self._waking.get(name)
        if waking is not None and not waking.done():
            return "waking"
        if name in self._stopping:
            return "stopping"
        return "stopped" if self.scaled_to_zero(name) else None

    def needs_wake(self, name: str) -> bool:
        """Scaled to zero, or being woken: a request for it should `wake` (and wait)."""
        waking = self._waking.get(name)
        return (
            name in self._stopping or (waking is not None and not waking.done()) or self.scaled_to_zero(name)
        )

    async def wake(self, name: str, *, timeout_s: float) -> tuple[str, int]:
        """The address of `name`, starting it first if it was scaled to zero (or is being)."""
        stopping = self._stopping.get(name)
        if stopping is not None:  # the sweep is stopping it: let that finish, then start it again
            with contextlib.suppress(Exception):
                await asyncio.shield(stopping)
        address = self.backend.address(name)
        if address is not None:
            return address
        spec = self._specs.get(name)
        if spec is None:
            raise Unavailable(f"Served entity {name} is not running.", retry_after=5)
        task = self._waking.get(name)
        if task is None or task.done():
            log.info("waking %s (scaled to zero)", name)
            task = self._waking[name] = asyncio.ensure_future(self._start(spec))
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

    async def _start(self, spec: ServedEntitySpec) -> None:
        started = time.monotonic()
        await self.backend.start(spec)
        seconds = time.monotonic() - started
        self.cold_starts[spec.name] = seconds
        self.scaled_at.pop(spec.name, None)
        log.info("cold start of %s took %.2fs (scaled to zero -> ready)", spec.name, seconds)

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
                and not self.busy(name)
                and self.backend.health(name).state == EntityState.READY
            ):
                log.info("scaling %s to zero after %.0fs idle", name, idle)
                # Registered before the first await: a request arriving from now on waits in wake().
                task = self._stopping[name] = asyncio.ensure_future(self.backend.stop(name))
                try:
                    await task
                finally:
                    self._stopping.pop(name, None)
                self.scaled_at[name] = time.time()
                stopped.append(name)
        return stopped

    async def _sweep_forever(self) -> None:
        while True:
            await asyncio.sleep(self.sweep_every_s)
            try:
                await self.sweep()
            except Exception:
                log.exception("scale-to-zero sweep failed")
