"""Running items on Ray worker actors, for every phase: the session, and the loop that keeps workers fed.

    with ExitStack() as stack:
        session = RaySession(config, roles, factory, stack)      # Ray and engines start on first use
        drive(pool, session.engines(), items, method="play", ...)

`drive` sends at most `bound` items at once, the least loaded worker first, and hands each result to
`finish` as it arrives. An item whose engine died is run again once the engines are back (Ray restarts an
engine; `Engines.ensure_alive` starts a new one when Ray gave up), at most `max_attempts` times; a worker
that dies is replaced and its items are run again the same way. Nothing else is retried.
"""

from __future__ import annotations

import logging
import os
import signal
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future
from contextlib import ExitStack, contextmanager
from dataclasses import replace
from queue import SimpleQueue
from typing import Any, TypeVar

from apigen_mt.pipeline.config import RunConfig
from apigen_mt.pipeline.engines.pool import Engines, ModelFactory
from apigen_mt.pipeline.run.progress import FunnelProgress
from apigen_mt.pipeline.run.proposals import ProposalItem, RecombinationItem
from apigen_mt.pipeline.run.trials import TrialItem
from apigen_mt.pipeline.run.workers import WorkerPool, WorkerStartError
from apigen_mt.pipeline.signals import Stopped, stop_handlers_kept

Item = TypeVar("Item", TrialItem, ProposalItem, RecombinationItem)
Result = TypeVar("Result")


@contextmanager
def ray_session() -> Iterator[None]:
    """Join the cluster named by RAY_ADDRESS, else start an embedded local Ray.

    `ray job submit` sets RAY_ADDRESS to the cluster's GCS address for the job's command; "auto" reads it
    from there. A user can set it too (`RAY_ADDRESS=auto` on a node of a running cluster). Without it the
    run never joins a cluster some `ray start` left on the machine: "local" always starts a new one.
    Ray that does not start (its start-up timed out on a busy machine, no cluster at RAY_ADDRESS) is a
    `WorkerStartError` saying what to do.
    """
    import ray

    if ray.is_initialized():
        yield
        return
    cluster = os.environ.get("RAY_ADDRESS")
    # Ray 2.60 warns on stderr that the local cluster it starts uses its default token authentication, a notice
    # with nothing for the user to do; the run's stderr is its summary, or its one error line.
    logging.getLogger("ray._private.authentication.authentication_token_setup").setLevel(logging.ERROR)
    try:
        # ray.init makes SIGTERM exit at once (sys.exit) and its core worker prints a C-level stack dump on it:
        # the process's own handlers come back, so that a stop keeps its rows and says so in one line.
        with stop_handlers_kept():
            address = "auto" if cluster else "local"
            ray.init(address=address, include_dashboard=False, log_to_driver=False, configure_logging=False)
    except SystemExit as exc:
        ray.shutdown()
        if exc.code == signal.SIGTERM:  # Ray's handler, called before ours came back
            raise Stopped(signal.SIGTERM) from None
        raise
    except Exception as exc:  # ray.init raises bare Exceptions (a start-up timeout among them)
        ray.shutdown()
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        remedy = (
            f"check that the cluster at RAY_ADDRESS={cluster} is up (`ray status`)"
            if cluster
            else "if the machine is busy, rerun when the load is lower"
        )
        raise WorkerStartError(
            f"Ray did not start ({reason}); {remedy}. Finished items are kept: rerun to resume."
        ) from None
    try:
        yield
    finally:
        ray.shutdown()


class RaySession:
    """Ray and the engines of every role the run needs, started on first use: a run with nothing left to do
    starts neither, and both phases of `generate` share them."""

    def __init__(self, config: RunConfig, roles: tuple[str, ...], factory: ModelFactory | None, stack: ExitStack):
        self.config, self.roles, self.factory, self.stack = config, roles, factory, stack
        self._engines: Engines | None = None

    def engines(self) -> Engines:
        if self._engines is None:
            self.stack.enter_context(ray_session())
            self._engines = Engines.start(self.config, self.roles, self.factory)
            self.stack.callback(self._engines.shutdown)
        return self._engines

    @property
    def restarts(self) -> list[str]:
        return [] if self._engines is None else self._engines.restarts


def drive(
    pool: WorkerPool,
    engines: Engines,
    items: Iterable[tuple[str, Item]],
    *,
    method: str,
    bound: int,
    max_attempts: int,
    lost: Callable[[str, Item, str], Result],
    retry: Callable[[Result], bool],
    finish: Callable[[str, Item, Result], None],
    progress: FunnelProgress,
) -> None:
    """Run every item through `pool.<method>(key, item)`, at most `bound` at once; `finish` each result.

    `lost` makes the result of an item whose worker died; a result for which `retry` holds (its engine died)
    is run again, after the engines are back, while the item has attempts left.
    """
    import ray

    fresh = iter(items)
    again: deque[tuple[str, Item]] = deque()  # items to run again: before new ones, so they end soon
    pending: dict[Future, tuple[str, Item, tuple[int, Any]]] = {}
    # Ray's threads put each result's future here as it completes: taking one costs the same however many
    # are in flight, where `ray.wait` over the pending list costs in proportion to the bound, per result.
    done: SimpleQueue[Future] = SimpleQueue()

    def next_item() -> tuple[str, Item] | None:
        return again.popleft() if again else next(fresh, None)

    while True:
        while len(pending) < bound and (work := next_item()) is not None:
            key, item = work
            ref, slot = pool.submit(method, key, item)
            future = ref.future()
            pending[future] = (key, item, slot)
            future.add_done_callback(done.put)
        if not pending:
            return
        future = done.get()  # a signal still interrupts the wait
        key, item, slot = pending.pop(future)
        pool.release(slot)
        try:
            result = future.result()
        except ray.exceptions.RayActorError as exc:
            pool.replace(slot)
            result = lost(key, item, f"the worker running it died ({type(exc).__name__})")
        if retry(result) and item.attempt < max_attempts:
            if engines.ensure_alive():
                pool.refresh_models()
            again.append((key, replace(item, attempt=item.attempt + 1)))
            progress.retried()
            continue
        finish(key, item, result)
