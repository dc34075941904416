"""Deduplication and decontamination: write keys, n-grams, similarity, and reasons that name the match."""

from __future__ import annotations

import json
import re
from importlib.resources import files

import pytest

from apigen_mt.blueprints.dedup import (
    Decontaminator,
    Deduplicator,
    action_key,
    ngrams,
    write_tool_names,
)
from apigen_mt.simulators.domain import get_domain
from apigen_mt.simulators.types import Blueprint

RETAIL = get_domain("retail")
WRITES = write_tool_names(RETAIL)
CANCEL = {"name": "cancel_pending_order", "kwargs": {"order_id": "#W1077442", "reason": "ordered by mistake"}}
ADDRESS = {
    "name": "modify_user_address",
    "kwargs": {
        "user_id": "u1",
        "address1": "1 Main St",
        "address2": "",
        "city": "Boston",
        "state": "MA",
        "country": "USA",
        "zip": "02101",
    },
}
LOOKUP = {"name": "get_order_details", "kwargs": {"order_id": "#W1077442"}}


def task(instruction: str, actions=(), user_id: str = "u1", id: str | None = None) -> Blueprint:
    return Blueprint.model_validate(
        {"id": id, "user_id": user_id, "instruction": instruction, "actions": list(actions)}
    )


def test_write_tools_of_retail():
    assert {"cancel_pending_order", "modify_user_address", "exchange_delivered_order_items"} <= WRITES
    assert not WRITES & {"get_order_details", "find_user_id_by_email", "transfer_to_human_agents", "think"}


def test_action_key_is_the_user_and_the_set_of_writes():
    key = action_key(task("a", [LOOKUP, CANCEL, ADDRESS]), WRITES)
    assert key == action_key(task("b", [ADDRESS, CANCEL]), WRITES)  # reads and order do not count
    assert key != action_key(task("a", [LOOKUP, CANCEL, ADDRESS], user_id="u2"), WRITES)
    assert key != action_key(task("a", [CANCEL]), WRITES)
    assert action_key(task("a", [LOOKUP]), WRITES) is None  # nothing written: no key


def test_ngrams_are_lower_cased_word_3_grams():
    assert ngrams("one two three four") == {("one", "two", "three"), ("two", "three", "four")}
    assert ngrams("Cancel my order #W1 today") == ngrams("cancel my ORDER #w1 today!")  # case, punctuation
    assert not ngrams("Cancel my order now") & ngrams("Return two shirts please")
    assert ngrams("hi there") == {("hi", "there")}  # shorter than n words: one gram of all of them
    assert ngrams("") == frozenset()


INSTRUCTION = (
    "You are Ana Lee and your email is ana@example.com. "
    "You want order #W1077442 cancelled because you ordered it by mistake."
)


def test_the_deduplicator_keeps_the_first_and_names_it_in_later_reasons():
    dedup = Deduplicator(WRITES)
    assert dedup.check(task(INSTRUCTION, [CANCEL], id="bp-1")) is None
    same_writes = task("Please get rid of #W1077442 for me, it was a mistake.", [LOOKUP, CANCEL])
    assert dedup.check(same_writes) == "duplicate of kept blueprint bp-1: the same write actions for user 'u1'"
    other_user = task("Please get rid of #W1077442 for me, it was a mistake.", [CANCEL], user_id="u2")
    assert dedup.check(other_user) is None  # kept as #1
    near_copy = task(INSTRUCTION + " Be quick.", [ADDRESS])  # other writes, yet the same words
    assert dedup.check(near_copy) == "near-duplicate of kept blueprint bp-1: instruction similarity 0.91 >= 0.80"
    assert dedup.check(task("Return the blender from order #W4081037 to your gift card.", [ADDRESS])) is None


def test_blueprints_without_writes_are_compared_by_instruction_only():
    dedup = Deduplicator(WRITES)
    assert dedup.check(task("What is the status of my order #W1077442?", [LOOKUP])) is None
    assert dedup.check(task("How much did I pay for order #W4081037 in total?", [LOOKUP])) is None
    repeated = dedup.check(task("What is the status of my order #W1077442?"))
    assert repeated == "near-duplicate of kept blueprint #0: instruction similarity 1.00 >= 0.80"


def test_the_threshold_is_configurable():
    strict = Deduplicator(WRITES, threshold=0.3)
    assert strict.check(task("one two three four five six")) is None
    assert strict.check(task("one two three four five seven")) is not None  # 3 of 5 grams shared: 0.6


EXCLUDED = [
    {
        "user_id": "x",
        "instruction": "Your name is Omar Diaz. Return #W6067464 via credit_card_4190576: Electric Kettle.",
        "actions": [
            {
                "name": "return_delivered_order_items",
                "kwargs": {
                    "order_id": "#W6067464",
                    "item_ids": ["9624127908"],
                    "payment_method_id": "credit_card_4190576",
                },
            }
        ],
        "outputs": [],
    },
    {
        "user_id": "y",
        "instruction": "You want to know how many t-shirt options are available right now.",
        "actions": [],
        "outputs": ["10"],
    },
]


def test_the_decontaminator_names_the_excluded_task_it_matches():
    clean = Decontaminator(EXCLUDED, WRITES)
    assert len(clean) == 2
    same_writes = task(
        "Send back the kettle from #W6067464.", [Blueprint.model_validate(EXCLUDED[0]).actions[0]], user_id="z"
    )
    assert clean.check(same_writes) == (
        "reproduces excluded task 0 ('Your name is Omar Diaz. Return #W6067464 via ...'): the same write actions"
    )
    similar = task("You want to know how many t-shirt options are available at the moment.")
    assert clean.check(similar) == (
        "too similar to excluded task 1 ('You want to know how many t-shirt options ...'): "
        "instruction similarity 0.64 >= 0.50"
    )
    # An excluded task without writes does not match every blueprint without writes.
    assert clean.check(task("What is the status of my order #W1077442?", [LOOKUP])) is None


def test_an_excluded_entry_that_is_no_task_is_named():
    with pytest.raises(ValueError, match="excluded task 1 is not a task: instruction: Field required"):
        Decontaminator([EXCLUDED[0], {"actions": []}], WRITES)


def writes_of(blueprint: Blueprint) -> list[str]:
    return sorted(json.dumps(call.model_dump(), sort_keys=True) for call in blueprint.actions if call.name in WRITES)


@pytest.mark.parametrize("split", ["test", "dev"])
def test_tau_bench_tasks_are_caught_and_the_shipped_examples_are_not(taubench_dir, split):
    path = taubench_dir / "retail" / f"tasks_{split}.json"
    if not path.is_file():
        pytest.skip(f"tau-bench's retail {split} tasks are not at {path}")
    tasks = [Blueprint.model_validate(raw) for raw in json.loads(path.read_text())]
    clean = Decontaminator(tasks, WRITES)
    for index, blueprint in enumerate(tasks):
        reason = clean.check(blueprint)
        assert reason is not None, f"task {index} passed"
        named = tasks[int(re.search(r"excluded task (\d+) ", reason).group(1))]
        # itself, or an earlier task with the same writes or the very same instruction
        assert writes_of(named) == writes_of(blueprint) or named.instruction == blueprint.instruction
    examples = json.loads(files("apigen_mt.simulators.domains.retail").joinpath("example_tasks.json").read_text())
    assert [clean.check(Blueprint.model_validate(example)) for example in examples] == [None] * len(examples)
