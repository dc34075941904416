"""`apigen-mt eval` and its report (issue 19, deliverable 1): the estimator and its interval, the report's tallies,
`--compare`, the one-line errors, and two evals through the installed command against a TEST DOUBLE endpoint whose
agent replays each task's ground truth (tests/loopback_replay.py): tau2's retail test split and tau-bench's curated
retail tasks, each of which must score reward 1 exactly where the ground truth replays (as `validate` measures).
No model engine starts; the two evals start Ray.
"""

from __future__ import annotations

import copy
import json
import math
from pathlib import Path
from typing import Any

import pytest

from apigen_mt.pipeline.eval.compare import MARK, compare_runs, render_comparison, write_comparison
from apigen_mt.pipeline.eval.report import REPORT_FORMAT, render_readme
from apigen_mt.pipeline.run.sources import LoadedSource, load_source, validate_source
from apigen_mt.pipeline.store.run_folder import RunFolder
from apigen_mt.pipeline.store.shards import read_rows
from apigen_mt.simulators.domain import get_domain
from apigen_mt.validators.pass_at_k import domain_report, intervals_apart, pass_curve, pass_hat_k_interval, rule_id
from tests.conftest import SHARED, cli_error_line, load_test_module
from tests.test_cli_adversarial import run_cli

replay = load_test_module("loopback_replay")
TAU2_RETAIL = SHARED / "tau2" / "retail"
TAUBENCH_RETAIL = SHARED / "taubench" / "retail"


# --- the estimator and its interval ---------------------------------------------------------------------------


def test_pass_hat_k_of_two_successes_in_four_trials_is_tau_bench_s() -> None:
    [one, two, three, four] = pass_curve({"t": [True, False, True, False]}, 4)
    assert (one.value, two.value, three.value, four.value) == (0.5, pytest.approx(1 / 6), 0.0, 0.0)
    assert [estimate.k for estimate in (one, two, three, four)] == [1, 2, 3, 4]


def test_tasks_with_fewer_than_k_scored_trials_are_left_out_of_pass_k() -> None:
    outcomes = {"a": [True, True, False], "b": [True]}
    assert pass_hat_k_interval(outcomes, 1).value == pytest.approx((2 / 3 + 1) / 2)
    two = pass_hat_k_interval(outcomes, 2)
    assert (two.value, two.tasks) == (pytest.approx(1 / 3), 1)
    with pytest.raises(ValueError, match="pass\\^4 needs a task with at least 4 scored trials; the most any has is 3"):
        pass_hat_k_interval(outcomes, 4)


def test_the_bootstrap_interval_is_seeded_and_near_the_normal_one_for_many_tasks() -> None:
    outcomes = {f"t{index}": [index % 2 == 0] for index in range(400)}
    estimate = pass_hat_k_interval(outcomes, 1)
    assert estimate == pass_hat_k_interval(outcomes, 1)  # the same numbers every time
    half_width = 1.96 * math.sqrt(0.25 / 400)  # the normal interval of a proportion of 0.5 over 400 tasks
    assert estimate.value == 0.5
    assert estimate.low == pytest.approx(0.5 - half_width, abs=0.01)
    assert estimate.high == pytest.approx(0.5 + half_width, abs=0.01)
    certain = pass_hat_k_interval({"a": [True, True], "b": [True, True]}, 2)
    assert (certain.value, certain.low, certain.high) == (1.0, 1.0, 1.0)


def test_intervals_apart_only_when_they_do_not_overlap() -> None:
    low = pass_hat_k_interval({f"t{i}": [i < 10] for i in range(100)}, 1)  # 0.1
    high = pass_hat_k_interval({f"t{i}": [i < 90] for i in range(100)}, 1)  # 0.9
    near = pass_hat_k_interval({f"t{i}": [i < 12] for i in range(100)}, 1)  # 0.12
    assert intervals_apart(low, high) and intervals_apart(high, low)
    assert not intervals_apart(low, near)


def row(task: str, trial: int, status: str, *, reward: float = 0.0, attribution: str | None = None, **extra: Any):
    return {
        "blueprint_id": task,
        "domain": "retail",
        "trial": trial,
        "status": status,
        "attribution": attribution,
        "reward": reward,
        "policy_violations": [],
        "prompt_tokens": 100,
        "completion_tokens": 10,
        "human_prompt_tokens": 50,
        "human_completion_tokens": 5,
        "duration_s": 2.0,
        **extra,
    }


def test_the_domain_report_scores_reward_and_acceptance_apart_and_leaves_system_failures_unscored() -> None:
    rows = [
        row("a", 0, "accepted", reward=1.0),
        row("a", 1, "rejected", reward=1.0, attribution="agent", policy_violations=["[R2] wrote before reading"]),
        row("b", 0, "rejected", attribution="human"),
        row("b", 1, "failed", attribution="system"),
        row("c", 0, "rejected", attribution="agent", policy_violations=["[R2] again", "[R5] other"]),
        row("c", 1, "rejected", attribution="agent"),
    ]
    report = domain_report(rows, 2)
    assert (report["tasks"], report["trials"], report["scored_trials"], report["unscored_system_failures"]) == (
        3,
        6,
        5,
        1,
    )
    by_reward = {e["k"]: e["value"] for e in report["pass_by_reward"]}
    by_acceptance = {e["k"]: e["value"] for e in report["pass_by_acceptance"]}
    assert by_reward == {1: pytest.approx((1 + 0 + 0) / 3), 2: pytest.approx((1 + 0) / 2)}  # b has 1 scored trial
    assert by_acceptance == {1: pytest.approx((0.5 + 0 + 0) / 3), 2: 0.0}
    assert report["failures"] == 5
    assert report["failure_shares"] == {"agent": 3 / 5, "human": 1 / 5, "system": 1 / 5}
    assert report["violations_by_rule"] == {"R2": 2, "R5": 1}
    assert report["per_trial"]["prompt_tokens"] == 100 and report["totals"]["human_completion_tokens"] == 25
    assert rule_id("no prefix here") == "no prefix here"


# --- --compare ------------------------------------------------------------------------------------------------


def eval_report(rows: list[dict[str, Any]], trials: int, agent: str) -> dict[str, Any]:
    """An eval.json as the eval writes it, of these rows."""
    return {
        "format": REPORT_FORMAT,
        "source": {
            "tasks": "tasks.json",
            "kind": "task file",
            "split": "test",
            "data_dir": None,
            "policy": "domain retail",
            "tasks_played": len({r["blueprint_id"] for r in rows}),
            "format_rejected": 0,
            "stage_one_problems": [],
            "nl_assertions_unscored": 3,
        },
        "trials_per_task": trials,
        "config_path": "run.yaml",
        "fingerprint": "f" * 64,
        "models": {"agent": [agent], "human": ["h"]},
        "interval": {"confidence": 0.95, "method": "bootstrap"},
        "domains": {"retail": domain_report(rows, trials)},
        "config": {},
    }


def test_compare_marks_the_runs_whose_interval_does_not_overlap_the_first_s(tmp_path: Path) -> None:
    weak = [row(f"t{i}", 0, "accepted" if i < 5 else "rejected", reward=float(i < 5)) for i in range(40)]
    strong = [row(f"t{i}", 0, "accepted" if i < 35 else "rejected", reward=float(i < 35)) for i in range(40)]
    alike = [row(f"t{i}", 0, "accepted" if i < 7 else "rejected", reward=float(i < 7)) for i in range(40)]
    runs = []
    for name, rows in (("weak", weak), ("strong", strong), ("alike", alike)):
        (tmp_path / name).mkdir()
        (tmp_path / name / "eval.json").write_text(json.dumps(eval_report(rows, 1, f"model-{name}")))
        runs.append(tmp_path / name)
    comparison = compare_runs(runs)
    [by_reward, by_acceptance] = comparison["rows"]
    assert (by_reward["measure"], by_acceptance["measure"]) == ("reward", "accepted")
    assert [value["differs_from_first"] for value in by_reward["values"]] == [False, True, False]
    assert [value["value"] for value in by_reward["values"]] == [5 / 40, 35 / 40, 7 / 40]
    table = render_comparison(comparison)
    assert "model-strong" in table
    assert "| retail | 1 | reward | 0.125 [" in table and "| retail | 1 | accepted | 0.125 [" in table
    marked = [line.split(" | ")[3:] for line in table.splitlines() if line.startswith("| retail |")]
    assert [[cell.endswith(f"{MARK} |") or cell.endswith(MARK) for cell in cells] for cells in marked] == [
        [False, True, False]
    ] * 2
    readme, data = write_comparison(comparison, tmp_path / "compared")
    assert json.loads(data.read_text()) == comparison and readme.read_text() == table


def test_the_readme_of_a_report_holds_both_measures_and_what_produced_it() -> None:
    rows = [row("a", t, "accepted", reward=1.0) for t in range(2)] + [row("b", 0, "failed", attribution="system")]
    text = render_readme(eval_report(rows, 2, "agent-x"))
    assert "# Evaluation: agent-x" in text
    assert "| k | pass^k, reward = 1 [95% CI] | pass^k, accepted [95% CI] | tasks |" in text
    assert "| 2 | 1.000 [1.000, 1.000] | 1.000 [1.000, 1.000] | 1 |" in text
    assert "1 not scored (the system failed them" in text
    assert "3 of tau2's nl_assertions left unscored" in text
    assert "Config: run.yaml (fingerprint ffffffffffff)" in text


# --- one-line errors ------------------------------------------------------------------------------------------


def test_eval_without_config_or_with_a_folder_that_is_no_eval_run_is_one_line(tmp_path: Path) -> None:
    assert cli_error_line("eval").endswith(
        "eval needs the run config: apigen-mt eval CONFIG --tasks SOURCE (or --compare RUN RUN ...)"
    )
    (tmp_path / "plain").mkdir()
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "eval.json").write_text(json.dumps(eval_report([row("a", 0, "accepted")], 1, "m")))
    line = cli_error_line("eval", "--compare", tmp_path / "other", "--compare", tmp_path / "plain")
    assert line.endswith(
        f"{tmp_path / 'plain'} is not an eval run (it has no eval.json); give folders `apigen-mt eval` wrote"
    )
    assert cli_error_line("eval", "--compare", tmp_path / "other").endswith(
        "--compare needs at least two eval runs, got 1"
    )
    assert cli_error_line("eval", "--compare", tmp_path / "other", tmp_path / "other", "--trials", "2").endswith(
        "--compare reads finished eval runs; --trials belong to a new eval: drop them"
    )


def test_an_unknown_source_or_a_split_without_split_file_is_one_line(tmp_path: Path, taubench_dir: Path) -> None:
    config = tmp_path / "run.yaml"
    config.write_text(json.dumps(eval_config("http://127.0.0.1:9/v1")))
    missing = tmp_path / "nowhere.json"
    assert cli_error_line("eval", config, "--tasks", missing).endswith(
        f"--tasks {missing}: no such file or folder; give a task file or a run folder"
    )
    dev = taubench_dir / "retail" / "tasks_dev.json"
    line = cli_error_line("eval", config, "--tasks", dev, "--domain", "retail", "--split", "test")
    assert f"{dev} has no split file beside it ({dev.parent / 'split_tasks.json'} not found)" in line  # sources' words
    assert "'test'" in line or "--split test" in line
    tau2 = TAU2_RETAIL / "tasks.json"
    if tau2.is_file():  # tau2's users live in tau-bench's data, not in the domain's seeded database
        line = cli_error_line("eval", config, "--tasks", tau2, "--split", "test")
        assert "no task to play (none of its 40 records is a task of retail; the first: tau2 task" in line
        assert line.endswith(
            "without --data-dir they were read against the retail domain's own seeded database: give the data "
            "the tasks were written for (tau2-bench's are tau-bench's))"
        )
    assert cli_error_line("eval", config, "--tasks", tmp_path).endswith(
        f"--tasks {tmp_path} is a folder but no run folder with Phase-1 blueprints (no blueprints/ shards); give a "
        "task file, or the output folder of `apigen-mt blueprints` or `generate`"
    )


# --- the replay double's evals ---------------------------------------------------------------------------------


def eval_config(base_url: str) -> dict[str, Any]:
    """Every role on the endpoint, one trial per task, room for the longest ground truth."""
    return {
        "models": {"hosted": {"backend": "openai", "endpoint": {"base_url": base_url, "model": "replay"}}},
        "roles": {role: "hosted" for role in ("proposer", "reviewer", "human", "human_judge", "agent")},
        "trajectories": {"trials": 1, "episode": {"max_turns": 30}},
    }


def replaying(source: LoadedSource) -> set[str]:
    """The ids of the tasks whose ground truth replays, as `validate` measures it (stage 1 accepts them)."""
    checked = copy.deepcopy(source)
    validate_source(checked)
    return {str(blueprint.id) for blueprint in checked.blueprints}


def run_eval(
    tmp_path: Path, source: LoadedSource, *args: Any, runs: int = 1
) -> tuple[Path, dict[str, Any], list[dict[str, Any]], list[str]]:
    """`apigen-mt eval` of the source's task file against the replay double, `runs` times into one folder: (run
    folder, eval.json, rows, the last run's stderr lines)."""
    with replay.ReplayEndpoint(source.blueprints) as endpoint:
        config = tmp_path / "run.yaml"
        config.write_text(json.dumps(eval_config(endpoint.base_url)))
        for _ in range(runs):
            result = run_cli("eval", config, "--output", tmp_path / "run", "--quiet", *args, timeout=300)
            assert result.returncode == 0 and "Traceback" not in result.stderr, result.stderr
    assert endpoint.unmatched == [] and endpoint.off_schema == []
    report = json.loads((tmp_path / "run" / "eval.json").read_text())
    rows = read_rows(tmp_path / "run" / "trajectories").to_pylist()
    return tmp_path / "run", report, rows, result.stderr.splitlines()


@pytest.fixture(scope="module")
def tau2_test_split() -> LoadedSource:
    if not (TAU2_RETAIL / "split_tasks.json").is_file() or not (TAUBENCH_RETAIL / "orders.json").is_file():
        pytest.skip(f"tau2 task files or tau-bench's retail data not found under {SHARED} (expected ../shared)")
    return load_source("retail", TAU2_RETAIL / "tasks.json", data_dir=TAUBENCH_RETAIL, split="test")


def test_the_replay_double_scores_reward_1_on_every_tau2_test_task_that_replays(
    tmp_path: Path, tau2_test_split: LoadedSource
) -> None:
    test_ids = {str(i) for i in json.loads((TAU2_RETAIL / "split_tasks.json").read_text())["test"]}
    replays = replaying(tau2_test_split)
    run, report, rows, _ = run_eval(
        tmp_path,
        tau2_test_split,
        "--tasks",
        TAU2_RETAIL / "tasks.json",
        "--split",
        "test",
        "--data-dir",
        TAUBENCH_RETAIL,
    )
    assert {r["blueprint_id"] for r in rows} == test_ids and len(rows) == len(test_ids) == 40  # none dropped
    assert {r["blueprint_id"] for r in rows if r["reward"] == 1.0} >= replays
    retail = report["domains"]["retail"]
    assert retail["tasks"] == 40 and retail["unscored_system_failures"] == 0
    rewarded = sum(r["reward"] == 1.0 for r in rows)
    assert retail["pass_by_reward"][0]["value"] == pytest.approx(rewarded / 40)
    assert report["source"]["split"] == "test" and report["source"]["policy"] == str(TAU2_RETAIL / "policy.md")
    assert report["source"]["nl_assertions_unscored"] == sum(tau2_test_split.unscored_assertions.values())
    assert [p["id"] for p in report["source"]["stage_one_problems"]] == sorted(test_ids - replays)
    readme = (run / "README.md").read_text()
    assert f"| 1 | {rewarded / 40:.3f} [" in readme
    print(f"tau2 retail test: {len(replays)} of 40 replay; README.md:\n{readme}")


def test_the_replay_double_scores_exactly_the_tau_bench_curated_tasks_that_replay_and_a_rerun_resumes(
    tmp_path: Path, taubench_dir: Path
) -> None:
    tasks = taubench_dir / "retail" / "tasks_dev.json"
    source = load_source("retail", tasks, data_dir=taubench_dir / "retail")
    replays = replaying(source)
    _, report, rows, printed = run_eval(
        tmp_path,
        source,
        "--tasks",
        tasks,
        "--domain",
        "retail",
        "--data-dir",
        taubench_dir / "retail",
        "--trials",
        "2",
        runs=2,
    )
    assert len(rows) == 2 * len(source.blueprints)  # the second run played nothing again: it resumed
    assert printed[0] == f"0 trials played, {2 * len(source.blueprints)} already done", printed
    scored = {(r["blueprint_id"], r["trial"]) for r in rows if r["reward"] == 1.0}
    assert scored == {(task, trial) for task in replays for trial in range(2)}
    retail = report["domains"]["retail"]
    assert [e["k"] for e in retail["pass_by_reward"]] == [1, 2]
    assert retail["pass_by_reward"][1]["value"] == pytest.approx(len(replays) / len(source.blueprints))
    print(f"tau-bench retail dev: {len(replays)} of {len(source.blueprints)} replay; report: {retail}")


def test_a_run_folder_s_accepted_blueprints_are_a_task_set(tmp_path: Path) -> None:
    run = Path(__file__).resolve().parent / "fixtures" / "run-before-redesign" / "run"  # Phase 1 accepted 6
    retail = get_domain("retail")
    source = LoadedSource(retail, None, retail.load(None), retail.policy, RunFolder(run).accepted_blueprints())
    _, report, rows, printed = run_eval(tmp_path, source, "--tasks", run)
    assert sorted(r["blueprint_id"] for r in rows) == sorted(str(b.id) for b in source.blueprints)
    assert {r["blueprint_id"] for r in rows if r["reward"] == 1.0} == replaying(source)
    assert report["source"]["kind"] == "run folder (accepted blueprints)"
    assert report["source"]["policy"] == "domain retail"
    assert printed[-2].startswith("retail: 6 tasks, 6 trials scored: pass^1 1.000 by reward"), printed
