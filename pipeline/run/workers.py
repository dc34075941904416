"""Ray worker actors: one async actor runs many trials (Phase 2) or proposals (Phase 1) at once.

The driver sends each worker the models (picklable clients of the engine actors), the phase's settings and
the sources it may be asked about; a worker loads each source's database once and keeps it. `WorkerPool`
feeds the actors least loaded first, replaces one that died and hands on new engine handles.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from apigen_mt.blueprints.loop import Phase1Models
from apigen_mt.pipeline.config import BlueprintPhase
from apigen_mt.pipeline.run.proposals import (
    ProposalItem,
    ProposalOutcome,
    RecombinationItem,
    run_proposal,
    run_recombination,
)
from apigen_mt.pipeline.run.sources import LoadedSource
from apigen_mt.pipeline.run.trials import TrialItem, TrialModels, TrialSettings, play_trial
from apigen_mt.simulators.domain import Domain, get_domain
from apigen_mt.simulators.state import JSON

SourceSpec = tuple[str, str | None]  # (domain name, data folder or None for the domain's seeded data)


def source_specs(sources: Iterable[tuple[str, LoadedSource]]) -> dict[str, SourceSpec]:
    """What a worker needs of each keyed source to load its database itself: its domain and data folder."""
    return {key: (s.domain.name, None if s.data_dir is None else str(s.data_dir)) for key, s in sources}


# A worker reserves no resources, so one that does not start in this time never will: the cluster lost the
# node it was placed on (or its raylet). The run then stops (a rerun resumes) instead of waiting forever.
WORKER_START_TIMEOUT_S = 300.0


class WorkerStartError(RuntimeError):
    """Ray or a worker actor did not start; the message says what to check."""


class _SourceWorker:
    def __init__(self, models: Any, settings: Any, sources: dict[str, SourceSpec]) -> None:
        self.models = models
        self.settings = settings
        self.sources = sources
        self._loaded: dict[str, tuple[Domain, JSON, str]] = {}

    def set_models(self, models: Any) -> None:
        """New engine handles after the driver replaced a dead engine."""
        self.models = models

    def _source(self, key: str) -> tuple[Domain, JSON, str]:
        if key not in self._loaded:
            name, data_dir = self.sources[key]
            domain = get_domain(name)
            self._loaded[key] = (domain, domain.load(data_dir), domain.policy_text(data_dir))
        return self._loaded[key]

    def ready(self) -> bool:
        return True


class TrialWorker(_SourceWorker):
    """Plays trials on request. Run it through `WorkerPool`; every method is called through Ray."""

    models: TrialModels
    settings: TrialSettings

    async def play(self, source: str, item: TrialItem) -> dict[str, Any]:
        domain, db, policy = self._source(source)
        return await play_trial(domain, db, policy, item, self.models, self.settings)


class ProposalWorker(_SourceWorker):
    """Runs Phase-1 proposals on request. Run it through `WorkerPool`; every method is called through Ray."""

    models: Phase1Models
    settings: BlueprintPhase

    async def propose(self, source: str, item: ProposalItem) -> ProposalOutcome:
        domain, db, _ = self._source(source)
        return await run_proposal(domain, db, item, self.models, self.settings)

    async def recombine(self, source: str, item: RecombinationItem) -> ProposalOutcome:
        domain, db, _ = self._source(source)
        return await run_recombination(domain, db, item, self.models, self.settings)


class WorkerPool:
    """`count` actors of one worker class, each taking up to `max_concurrency` items at once.

    `models` gives the current engine handles: called when an actor starts and by `refresh_models`.
    """

    def __init__(
        self,
        worker: type[_SourceWorker],
        count: int,
        models: Callable[[], Any],
        settings: Any,
        sources: dict[str, SourceSpec],
        max_concurrency: int,
    ) -> None:
        import ray

        # No CPU reserved: a worker mostly awaits its engines, and on a small machine the engines need the cores.
        self._actor = ray.remote(worker).options(num_cpus=0, max_concurrency=max_concurrency, max_restarts=0)
        self._models = models
        self._settings = settings
        self._sources = sources
        self.workers = [self._start() for _ in range(count)]
        self.load = [0] * count
        self._ready(self.workers)

    def _start(self) -> Any:
        return self._actor.remote(self._models(), self._settings, self._sources)

    def _ready(self, workers: list[Any]) -> None:
        import ray

        try:
            ray.get([worker.ready.remote() for worker in workers], timeout=WORKER_START_TIMEOUT_S)
        except ray.exceptions.GetTimeoutError:
            raise WorkerStartError(
                f"{len(workers)} worker actor(s) did not start within {WORKER_START_TIMEOUT_S:g}s; check that the "
                f"Ray cluster's nodes are alive (`ray status`). Finished items are kept: rerun to resume."
            ) from None

    def submit(self, method: str, *args: Any) -> tuple[Any, tuple[int, Any]]:
        """Call `method` on the least loaded worker: its result's reference, and the slot to release it with."""
        index = min(range(len(self.workers)), key=self.load.__getitem__)
        self.load[index] += 1
        worker = self.workers[index]
        return getattr(worker, method).remote(*args), (index, worker)

    def release(self, slot: tuple[int, Any]) -> None:
        index, worker = slot
        if self.workers[index] is worker:  # a replaced worker's load went with it
            self.load[index] -= 1

    def replace(self, slot: tuple[int, Any]) -> None:
        """Start a new worker in place of the one that died (once, however many of its items report it)."""
        index, worker = slot
        if self.workers[index] is worker:
            self.workers[index] = self._start()
            self.load[index] = 0
            self._ready([self.workers[index]])

    def refresh_models(self) -> None:
        import ray

        ray.get([worker.set_models.remote(self._models()) for worker in self.workers])

    def shutdown(self) -> None:
        import ray

        for worker in self.workers:
            ray.kill(worker)
