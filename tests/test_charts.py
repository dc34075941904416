"""The overview charts' data (pipeline/export/charts.py), shared by the dataset card and the run viewer: one funnel
per phase, its stages in order and narrowing with the share each kept, and the other overview charts, on run
folders written with the project's shard writer (tests/test_export.py's trials with real observations) and on the
Phase-1 run folder of tests/fixtures/run-before-redesign."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from apigen_mt.pipeline.export import charts
from apigen_mt.pipeline.export.charts import Bin, PassK, Stage
from apigen_mt.pipeline.store.proposal_rows import Funnel
from apigen_mt.pipeline.store.run_folder import RunFolder
from apigen_mt.pipeline.store.schemas import TRAJECTORY_SCHEMA
from apigen_mt.pipeline.store.shards import ShardWriter
from tests.conftest import load_test_module

built = load_test_module("test_export")  # build_run, _row, _episode: trials with observations from the real environment
OLD_RUN = Path(__file__).resolve().parent / "fixtures" / "run-before-redesign" / "run"
PHASE2_STAGES = [
    "trials played",
    "judged",
    "final database right",
    "expected outputs said",
    "episode ended",
    "no policy violation",
    "accepted",
    "unique accepted trajectories",
]


def _trials(run_dir: Path) -> Any:
    return RunFolder(run_dir).trials(list(charts.CHART_COLUMNS))


def _write(run_dir: Path, rows: list[dict[str, Any]]) -> None:
    with ShardWriter(run_dir / "trajectories", TRAJECTORY_SCHEMA) as writer:
        for row in rows:
            writer.write(row)


def assert_a_funnel(stages: list[Stage]) -> None:
    """Each stage no larger than the one before, and its share kept the count over the count before."""
    assert stages[0].kept is None
    for before, stage in zip(stages, stages[1:], strict=False):
        assert stage.count <= before.count, (before, stage)
        assert stage.kept == (stage.count / before.count if before.count else None), (before, stage)


def _one_loss_per_check() -> list[dict[str, Any]]:
    """Nine trials, each check of Phase 2's funnel losing exactly one of them (two accepted trials share their
    agent's behaviour, so the unique ones lose one too)."""
    good = built._episode("Hi, I need to cancel an order.", "no longer needed", built.GOOD)
    same = built._episode("Hello! Please cancel one of my orders.", "no longer needed", built.GOOD)
    other = built._episode("Hi, I need to cancel an order.", "no longer needed", "Done: the order is cancelled.")
    wrong = built._episode("Hi, I need to cancel an order.", "ordered by mistake", built.GOOD)
    passed = {"state_match": True, "outputs_match": True, "terminated": True}
    return [
        built._row("b-0", 0, "failed", [], "system"),
        built._row("b-0", 1, "rejected", wrong, "agent") | {"policy_violations": ["[R2] first", "[R2] second"]},
        built._row("b-0", 2, "rejected", wrong, "agent") | passed | {"outputs_match": False},
        built._row("b-1", 0, "rejected", wrong, "agent") | passed | {"terminated": False},
        built._row("b-1", 1, "rejected", wrong, "agent")
        | passed
        | {"policy_violations": ["[R2] again", "[R5] other", "a violation naming no rule"]},
        built._row("b-1", 2, "rejected", wrong, "human") | passed | {"human_errors": ["stopped too early"]},
        built._row("b-2", 0, "accepted", good),
        built._row("b-2", 1, "accepted", same),
        built._row("b-2", 2, "accepted", other),
    ]


def test_each_check_of_phase_2_narrows_its_funnel_by_the_trials_it_fails(tmp_path: Path) -> None:
    _write(tmp_path, _one_loss_per_check())
    stages = charts.phase2_funnel(_trials(tmp_path))
    assert [stage.label for stage in stages] == PHASE2_STAGES
    assert [stage.count for stage in stages] == [9, 8, 7, 6, 5, 4, 3, 2]
    assert_a_funnel(stages)
    assert [stage.kept for stage in stages][1:3] == [8 / 9, 7 / 8]
    # A rule broken twice in one trial counts that trial once; a violation without "[RULE]" is still counted.
    assert charts.violations_by_rule(_trials(tmp_path)) == [("R2", 2), ("R5", 1), ("unnamed", 1)]


def test_the_export_runs_funnel_and_overview_charts(tmp_path: Path) -> None:
    built.build_run(tmp_path)
    trials = _trials(tmp_path)
    stages = charts.phase2_funnel(trials)
    # 10 rows stored, 9 trials (one replaced by a later row); one system failure; 3 accepted, 2 of them unique.
    assert [(stage.label, stage.count) for stage in stages] == list(zip(PHASE2_STAGES, [9, 8, 3, 3, 3, 3, 3, 2]))
    assert_a_funnel(stages)
    # pass^k: blueprint 0 has 2 of 4 accepted, blueprint 1 1 of 3, blueprint 2 0 of 2.
    assert charts.pass_k(trials) == [
        PassK(1, pytest.approx((2 / 4 + 1 / 3 + 0) / 3), 3),
        PassK(2, pytest.approx((1 / 6 + 0 + 0) / 3), 3),
        PassK(3, 0.0, 2),
        PassK(4, 0.0, 1),
    ]
    assert charts.attribution(trials) == [("agent", 4), ("human", 1), ("system", 1)]
    assert charts.terminations(trials) == [("user_stop", 8), ("engine_unavailable", 1)]
    assert charts.violations_by_rule(trials) == []
    # Every value from the fewest to the most is a bin, those no trial has holding 0; every trial is in one.
    turns = charts.turns_histogram(trials)
    assert turns == [Bin(0, 0, 1), *(Bin(value, 0, 0) for value in range(1, 6)), Bin(6, 3, 5)]
    assert charts.tool_calls_histogram(trials) == [Bin(0, 0, 1), Bin(1, 0, 0), Bin(2, 0, 0), Bin(3, 0, 0), Bin(4, 3, 5)]
    everything = charts.overview(trials, None)
    assert everything.phase1 is None and everything.phase2 == stages and everything.turns == turns


def test_a_stage_of_zero_keeps_a_share_of_zero_and_the_stages_after_it_keep_none(tmp_path: Path) -> None:
    wrong = built._episode("Hi, I need to cancel an order.", "ordered by mistake", built.GOOD)
    _write(tmp_path, [built._row("b-0", trial, "rejected", wrong, "agent") for trial in range(3)])
    stages = charts.phase2_funnel(_trials(tmp_path))
    assert [stage.count for stage in stages] == [3, 3, 0, 0, 0, 0, 0, 0]
    assert [stage.kept for stage in stages] == [None, 1.0, 0.0, None, None, None, None, None]
    assert charts.pass_k(_trials(tmp_path)) == [PassK(1, 0.0, 1), PassK(2, 0.0, 1), PassK(3, 0.0, 1)]


def test_a_run_without_trials_has_funnels_of_zero_and_empty_charts(tmp_path: Path) -> None:
    built.build_run(tmp_path)
    none = _trials(tmp_path).slice(0, 0)
    stages = charts.phase2_funnel(none)
    assert [(stage.label, stage.count, stage.kept) for stage in stages] == [(label, 0, None) for label in PHASE2_STAGES]
    everything = charts.overview(none, None)
    assert (everything.pass_k, everything.attribution, everything.terminations) == ([], [], [])
    assert (everything.violations_by_rule, everything.turns, everything.tool_calls) == ([], [], [])


def test_phase_1_funnel_of_a_stored_run_narrows_round_by_round_to_its_accepted_blueprints() -> None:
    funnel = RunFolder(OLD_RUN).funnel()  # 12 proposals in 17 rounds, 6 accepted, one a duplicate (see the fixture)
    stages = charts.phase1_funnel(funnel)
    assert [(stage.label, stage.count) for stage in stages] == [
        ("rounds proposed", 17),
        ("past the format check", 11),
        ("past the execution check", 11),
        ("past the policy check", 11),
        ("past the review committee", 7),
        ("not an excluded task", 7),
        ("accepted blueprints", 6),
    ]
    assert_a_funnel(stages)
    assert stages[-1].count == funnel["proposals_accepted"] == sum(funnel["accepted_by_round"].values())
    assert charts.overview(_trials(OLD_RUN), funnel).phase1 == stages


def test_phase_1_funnel_takes_decontamination_and_duplicates_off_the_rounds_past_review() -> None:
    counts = Funnel(
        proposals=4,
        proposed=6,
        passed_format=5,
        passed_execution=4,
        passed_policy=4,
        passed_review=4,
        decontaminated=2,
        deduplicated=2,
        accepted_by_round={},
        recombinations=0,
        recombined=0,
        proposals_accepted=0,
        proposals_rejected=4,
        proposals_failed=0,
    )
    stages = charts.phase1_funnel(counts)
    assert [stage.count for stage in stages] == [6, 5, 4, 4, 4, 2, 0]
    assert_a_funnel(stages)
    nothing = charts.phase1_funnel(Funnel(**{key: 0 for key in counts} | {"accepted_by_round": {}}))
    assert [(stage.count, stage.kept) for stage in nothing] == [(0, None)] * 7


def test_share_text_reads_none_and_all_only_when_they_are() -> None:
    assert [charts.share_text(kept) for kept in (None, 0.0, 0.001, 0.375, 0.996, 1.0)] == [
        "–",
        "0%",
        "<1%",
        "38%",
        ">99%",
        "100%",
    ]


def test_charts_of_trials_without_their_columns_say_which_are_missing(tmp_path: Path) -> None:
    built.build_run(tmp_path)
    with pytest.raises(ValueError, match="lack the column\\(s\\) signature, turns the charts read"):
        charts.phase2_funnel(_trials(tmp_path).drop_columns(["signature", "turns"]))


def test_a_histogram_of_values_far_apart_holds_only_the_values_trials_have(tmp_path: Path) -> None:
    wrong = built._episode("Hi, I need to cancel an order.", "ordered by mistake", built.GOOD)
    rows = [built._row("b-0", 0, "rejected", wrong, "agent"), built._row("b-0", 1, "rejected", wrong, "agent")]
    _write(tmp_path, [rows[0], rows[1] | {"turns": 10**12}])  # an edited shard: no episode has so many turns
    assert charts.turns_histogram(_trials(tmp_path)) == [Bin(6, 0, 1), Bin(10**12, 0, 1)]
