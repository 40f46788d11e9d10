"""``python -m flows.task_worker``: a long-lived Prefect task worker that runs searches' trials.

A process worker on a work pool starts a new Python process for every flow run: importing PyTorch,
MLflow and Prefect and loading the data costs 10-15 s on a small machine before the first trial, every
search. A task worker pays that once: it subscribes to the Prefect server (``PREFECT_API_URL``) for
background runs of the ``search-worker`` task (:func:`flows.worker.search_worker_task`), which
``search-learners`` submits with ``workers > 0``, and runs them in threads of this process (``--slots``
at once). ``metaauto stack up`` starts these; ``metaauto stack worker`` starts one on another machine.

Prefect's own :class:`~prefect.task_worker.TaskWorker` stays subscribed while its slots are full: the
server hands the next run to whichever subscriber polls first, and a busy worker takes it, acknowledges
it and holds it until its slot frees, while an idle worker waits. For runs that last a whole search
that serialises the workers (measured: two workers, every run on one of them). :class:`SlotTaskWorker`
subscribes for runs only while it has a free slot (one run per subscription; a run the server sends
as the subscription closes goes back to the server's retry queue), and keeps a separate presence
subscription, so ``search-learners`` can tell a busy worker from a missing one (:data:`PRESENCE_KEY`).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import sys
import time
import uuid
from typing import Any

import anyio
from prefect._internal.concurrency.api import create_call, from_sync
from prefect.task_worker import TaskWorker

from metaauto.platform.workers import PRESENCE_KEY

if sys.version_info < (3, 11):
    from exceptiongroup import BaseExceptionGroup


class SlotTaskWorker(TaskWorker):
    """A task worker that asks the server for a run only when it can start it (see the module docstring)."""

    async def _subscribe_to_task_scheduling(self) -> None:
        async with anyio.create_task_group() as group:  # both run until the worker stops
            group.start_soon(self._stay_visible)
            await self._take_runs()

    def _subscription(self, keys: Any, client_id: str) -> Any:
        from prefect.client.schemas.objects import TaskRun
        from prefect.client.subscriptions import Subscription
        from prefect.settings import get_current_settings

        return Subscription(model=TaskRun, path="/task_runs/subscriptions/scheduled", keys=keys, client_id=client_id,
                            base_url=get_current_settings().api.url)

    async def _stay_visible(self) -> None:
        async for _ in self._subscription([PRESENCE_KEY], self.client_id):  # nothing is ever sent on this key
            pass

    async def _take_runs(self) -> None:
        while True:
            slot = uuid.uuid4()
            await self._acquire_token(slot)  # wait for a free slot before asking for work
            subscription = self._subscription(self.task_keys, f"{self.client_id}-runs")
            try:
                task_run = await subscription.__anext__()
            finally:
                if subscription._websocket is not None:  # Subscription has no close(): leave its connection
                    await subscription._connect.__aexit__(None, None, None)
            self._release_token(slot)
            if await self._acquire_token(task_run.id):  # the slot just freed: immediate
                assert self._runs_task_group is not None
                self._runs_task_group.start_soon(self._safe_submit_scheduled_task_run, task_run)


def warm_up() -> float:
    """Import what every trial needs before the first one arrives; returns the seconds it took."""
    start = time.perf_counter()
    import mlflow  # noqa: F401
    import torch  # noqa: F401

    import metaauto.search  # noqa: F401
    import metaauto.tasks  # noqa: F401
    from metaauto.tracking.store import get_client

    get_client()
    return time.perf_counter() - start


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--slots", type=int, default=1, help="search-worker runs (so trials) executed at once")
    args = parser.parse_args(argv)
    if args.slots < 1:
        parser.error("--slots must be at least 1")
    from flows.worker import search_worker_task

    seconds = warm_up()
    print(f"task worker {socket.gethostname()}-{os.getpid()} ready in {seconds:.1f}s: serving search-worker, "
          f"{args.slots} slot(s)", flush=True)
    # as prefect.task_worker.serve does: on Prefect's loop thread, where its SIGTERM handler stops the worker
    from_sync.call_soon_in_loop_thread(create_call(_serve, search_worker_task, args.slots)).result()


async def _serve(task: Any, slots: int) -> None:
    from prefect.task_worker import StopTaskWorker

    try:
        await SlotTaskWorker(task, limit=slots).astart()
    except BaseExceptionGroup as group:  # anyio's task groups wrap the ways a worker stops
        _, unexpected = group.split((StopTaskWorker, asyncio.CancelledError, KeyboardInterrupt))
        if unexpected:
            raise unexpected
    except (StopTaskWorker, asyncio.CancelledError, KeyboardInterrupt):
        pass


if __name__ == "__main__":
    main()
