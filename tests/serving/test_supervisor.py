"""Scale to zero over the local backend: an idle entity stops; the next requests wake it, held."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

from agentdeploy.serving.backends.base import EntityState, ServedEntitySpec
from agentdeploy.serving.backends.local import LocalProcessBackend
from agentdeploy.serving.supervisor import ScaleToZero
from tests.serving.worker_fixtures import LoopThread, invoke, split_answer

ASK = {
    "messages": [
        {"role": "system", "content": "Context:\nThe sky is blue."},
        {"role": "user", "content": "What colour is the sky?"},
    ]
}


def test_an_idle_entity_scales_to_zero_and_wakes_on_demand(
    backend: LocalProcessBackend, loop_thread: LoopThread, registry: dict[str, Any], responder: str
) -> None:
    spec = ServedEntitySpec(
        name=responder,
        model_uri=registry["responder"]["model_uri"],
        model_path=registry["responder"]["path"],
        scale_to_zero=True,
    )
    supervisor = ScaleToZero(backend, idle_s=0.5)
    supervisor.track(spec)
    supervisor.touch(responder)
    assert loop_thread.run(supervisor.sweep()) == []  # used just now
    assert supervisor.phase(responder) is None
    time.sleep(0.6)
    pid = backend.health(responder).pid

    async def sweep_seeing_the_phase() -> tuple[list[str], str | None]:
        sweep = asyncio.ensure_future(supervisor.sweep())
        await asyncio.sleep(0)  # the sweep has started stopping it
        during = supervisor.phase(responder)
        return await sweep, during

    stopped, during = loop_thread.run(sweep_seeing_the_phase())
    assert stopped == [responder] and during == "stopping"
    # "stopped" (what the endpoint's state calls scaled to zero) only once the process is gone.
    assert supervisor.phase(responder) == "stopped" and not Path(f"/proc/{pid}").exists()
    assert supervisor.scaled_to_zero(responder)

    async def three_requests_at_once() -> list[tuple[str, int]]:
        return await asyncio.gather(*(supervisor.wake(responder, timeout_s=120) for _ in range(3)))

    addresses = loop_thread.run(three_requests_at_once())
    assert len(set(addresses)) == 1  # one start served all three
    health = backend.health(responder)
    assert health.state == EntityState.READY and health.last_start_s and health.last_start_s > 0
    body, _ = split_answer(invoke(backend, responder, ASK))
    assert body["choices"][0]["message"]["content"] == "The sky is blue."
