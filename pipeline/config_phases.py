"""The run config's phase sections: Phase 2's `trajectories` and Phase 1's `blueprint_generation`, with the
bounds of what a run can hold (`pipeline.config` has the rest of the config and reads the file)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from apigen_mt.blueprints.dedup import DECONTAMINATION_THRESHOLD, DEDUP_THRESHOLD
from apigen_mt.blueprints.loop import Phase1Settings
from apigen_mt.blueprints.samplers import SamplerSettings
from apigen_mt.pipeline.engines.vllm_config import MAX_IN_FLIGHT
from apigen_mt.pipeline.run.trials import TrialSettings
from apigen_mt.simulators.domain import get_domain

# What a run can hold: each trial and each proposal is an item in memory, each worker a process.
MAX_TRIALS = 10_000
MAX_PROPOSALS = 1_000_000
MAX_WORKERS = 1_000
MAX_ROWS_PER_SHARD = 100_000  # rows held in memory until their shard is written


class TrajectoryPhase(TrialSettings):
    """Phase 2: how many trials per blueprint, how they play, and how the run keeps the engines busy."""

    trials: int = Field(
        3,
        ge=1,
        le=MAX_TRIALS,
        description="episodes per blueprint (rejection sampling; pass^k up to k = trials); every trial is an item "
        "the run holds, so a bound keeps it within memory",
    )
    workers: int = Field(
        1, ge=1, le=MAX_WORKERS, description="Ray worker actors playing episodes, each a process running many at once"
    )
    in_flight: int | None = Field(
        None,
        ge=1,
        le=MAX_IN_FLIGHT,
        description="episodes in flight at once; default: as many as the agent's model takes at once (see "
        "Concurrency). Each holds a conversation in memory, and Ray counts an actor's calls in 32 bits",
    )
    max_attempts: int = Field(3, ge=1, le=100, description="plays of one trial when its engine dies under it")
    max_replays: int = Field(
        3,
        ge=0,
        le=100,
        description="reruns that play a trial again after it failed for a system reason (an endpoint down, replies "
        "no parser reads): such a trial is played on each rerun until it has failed this many more times; 0 keeps "
        "failed trials as they are",
    )
    rows_per_shard: int = Field(
        64, ge=1, le=MAX_ROWS_PER_SHARD, description="trials per Parquet shard, held in memory until it is written"
    )


class GenerationDomain(BaseModel):
    """One domain Phase 1 proposes blueprints for."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    domain: str = Field(description="a registered domain (retail, airline, ...) or the module path of your own")
    proposals: int = Field(
        ge=1,
        le=MAX_PROPOSALS,
        description="sampled contexts, each proposed and revised until accepted or given up; each is an item the run "
        "holds, so a bound keeps them within memory",
    )
    data_dir: str | None = Field(None, description="tau-bench-layout data folder; default: the domain's seeded data")

    @field_validator("domain")
    @classmethod
    def _known(cls, name: str) -> str:
        # A registered name, or an importable module path that defines a domain (`my_pkg.my_domain`).
        try:
            get_domain(name)
        except KeyError as exc:
            raise ValueError(exc.args[0]) from None
        return name


class RecombinationSettings(BaseModel):
    """Reverse task recombination after the proposals: accepted blueprints of one user joined into one task."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    size: int = Field(2, ge=2, le=10, description="blueprints joined into one task, whose instruction grows with each")
    limit: int | None = Field(
        None, ge=0, description="combinations tried per domain and run; null: every group of `size` (0: none)"
    )


class BlueprintPhase(Phase1Settings):
    """Phase 1: which domains get how many proposals, how contexts are sampled, the loop, dedup, and the workers.

    The proposer is the `proposer` role; the committee's K reviews and the feedback summaries are the
    `reviewer` role's (the summary condenses the reviewers' reflections).
    """

    domains: list[GenerationDomain] = Field(min_length=1, description="the domains to propose blueprints for")
    seed: int = Field(0, description="proposal i of domain D samples its context from a seed of this, D and i")
    sampler: SamplerSettings = Field(default_factory=SamplerSettings)
    recombination: RecombinationSettings = Field(default_factory=RecombinationSettings)
    dedup_threshold: float = Field(DEDUP_THRESHOLD, gt=0, le=1, description="instruction similarity of a duplicate")
    decontamination_threshold: float = Field(
        DECONTAMINATION_THRESHOLD, gt=0, le=1, description="instruction similarity to an excluded task that rejects"
    )
    workers: int = Field(
        1, ge=1, le=MAX_WORKERS, description="Ray worker actors running proposals, each a process running many at once"
    )
    in_flight: int | None = Field(
        None,
        ge=1,
        le=MAX_IN_FLIGHT,
        description="proposals in flight at once; default: as many as the proposer's model takes at once (see "
        "Concurrency). Each holds its conversations in memory, and Ray counts an actor's calls in 32 bits",
    )
    max_attempts: int = Field(3, ge=1, le=100, description="runs of one proposal when its engine dies under it")
    rows_per_shard: int = Field(
        64, ge=1, le=MAX_ROWS_PER_SHARD, description="proposal rounds per Parquet shard, held in memory until written"
    )

    @model_validator(mode="after")
    def _one_entry_per_domain(self) -> BlueprintPhase:
        names = [entry.domain for entry in self.domains]
        repeated = sorted({name for name in names if names.count(name) > 1})
        if repeated:
            # Blueprint ids are DOMAIN-pNNNN: two entries of one domain would give two proposals one id.
            raise ValueError(f"domain {', '.join(repeated)} is listed more than once; list each domain once")
        return self
