"""Ray worker actors that play trials: one async actor runs many episodes at once.

The driver sends each worker the models (picklable clients of the engine actors) and the sources it may
be asked about; a worker loads each source's database once and keeps it.
"""

from __future__ import annotations

from typing import Any

from apigen_mt.pipeline.trials import TrialItem, TrialModels, TrialSettings, play_trial
from apigen_mt.simulators.domain import Domain, get_domain
from apigen_mt.simulators.state import JSON

SourceSpec = tuple[str, str | None]  # (domain name, data folder or None for the domain's seeded data)


class TrialWorker:
    """Plays trials on request. Wrap with `start_workers`; every method is called through Ray."""

    def __init__(self, models: TrialModels, settings: TrialSettings, sources: dict[str, SourceSpec]) -> None:
        self.models = models
        self.settings = settings
        self.sources = sources
        self._loaded: dict[str, tuple[Domain, JSON, str]] = {}

    def set_models(self, models: TrialModels) -> None:
        """New engine handles after the driver replaced a dead engine."""
        self.models = models

    def _source(self, key: str) -> tuple[Domain, JSON, str]:
        if key not in self._loaded:
            name, data_dir = self.sources[key]
            domain = get_domain(name)
            self._loaded[key] = (domain, domain.load(data_dir), domain.policy_text(data_dir))
        return self._loaded[key]

    async def play(self, source: str, item: TrialItem) -> dict[str, Any]:
        domain, db, policy = self._source(source)
        return await play_trial(domain, db, policy, item, self.models, self.settings)

    def ready(self) -> bool:
        return True


def start_workers(
    count: int, models: TrialModels, settings: TrialSettings, sources: dict[str, SourceSpec], max_concurrency: int
) -> list[Any]:
    """`count` worker actors, each taking up to `max_concurrency` trials at once; waits until they are up."""
    import ray

    # No CPU reserved: a worker mostly awaits its engines, and on a small machine the engines need the cores.
    actor = ray.remote(TrialWorker).options(num_cpus=0, max_concurrency=max_concurrency, max_restarts=0)
    workers = [actor.remote(models, settings, sources) for _ in range(count)]
    ray.get([worker.ready.remote() for worker in workers])
    return workers
