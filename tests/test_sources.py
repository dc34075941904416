"""Phase 2 blueprint sources: records that cannot become blueprints are kept as `validate` records; none is
dropped without a word."""

from __future__ import annotations

import json

import pytest

from apigen_mt.pipeline.run.sources import SourceError, blueprint_id, load_source, validate_source

CANCEL = {"name": "cancel_pending_order", "kwargs": {"order_id": "#W1", "reason": "ordered by mistake"}}


def test_records_that_are_no_blueprint_of_the_domain_are_format_rejections(tmp_path):
    records = [
        {"id": "x1", "domain": "airline", "instruction": "hi", "actions": []},
        [1, 2],
        {"instruction": "cancel", "actions": [CANCEL]},
        {"instruction": 5, "actions": "no"},
        {"instruction": "cancel", "actions": [CANCEL]},  # the same task again: played once, the repeat rejected
    ]
    path = tmp_path / "blueprints.jsonl"
    path.write_text("".join(json.dumps(record) + "\n" for record in records))

    source = load_source("retail", path)

    def rejection(index, id_, reasons):
        return {
            "index": index,
            "id": id_,
            "accepted": False,
            "failed_stage": "format",
            "reasons": reasons,
            "diff_patch": None,
        }

    assert source.rejected == [
        rejection(0, "x1", ["the blueprint is for domain 'airline', the source is 'retail'"]),
        rejection(1, None, [f"{path}: record 2 is not a JSON object"]),
        rejection(
            3,
            blueprint_id("retail", records[3]),
            ["instruction: Input should be a valid string", "actions: Input should be a valid list"],
        ),
        rejection(
            4,
            blueprint_id("retail", records[4]),
            [f"record 5 repeats record 3 (id {blueprint_id('retail', records[4])!r}), which is played once"],
        ),
    ]
    assert [blueprint.id for blueprint in source.blueprints] == [blueprint_id("retail", records[2])]


def test_an_integer_id_becomes_its_text_and_other_ids_are_rejected(tmp_path):
    records = [
        {"id": 7, "instruction": "cancel", "actions": [CANCEL]},
        {"id": True, "instruction": "cancel", "actions": [CANCEL]},
        {"id": ["a"], "instruction": "cancel", "actions": [CANCEL]},
        {"id": "7", "instruction": "cancel", "actions": [CANCEL]},  # the same record once its id is text
    ]
    path = tmp_path / "tasks.json"
    path.write_text(json.dumps(records))
    source = load_source("retail", path)
    assert [blueprint.id for blueprint in source.blueprints] == ["7"]
    assert [(record["index"], record["reasons"]) for record in source.rejected] == [
        (1, ["id: must be a string or an integer, not true"]),
        (2, ['id: must be a string or an integer, not ["a"]']),
        (3, ["record 4 repeats record 1 (id '7'), which is played once"]),
    ]


def test_two_different_tasks_with_one_id_are_refused_naming_both_records(tmp_path):
    path = tmp_path / "tasks.jsonl"
    records = [{"id": "t", "instruction": "cancel", "actions": [CANCEL]}, {"id": "t", "instruction": "other"}]
    path.write_text("".join(json.dumps(record) + "\n" for record in records))
    with pytest.raises(SourceError, match=r"records 1 and 2 are different tasks with the same id 't'; give each"):
        load_source("retail", path)


def test_a_stage_1_rejection_names_its_record_in_the_file(tmp_path):
    broken = {"name": "no_such_tool", "arguments": {}}
    records = [{"instruction": "x", "actions": [5]}, {"instruction": "cancel", "actions": [broken]}]
    path = tmp_path / "tasks.json"
    path.write_text(json.dumps(records))
    source = load_source("retail", path)
    validate_source(source)
    assert [record["index"] for record in source.rejected] == [0, 1]
    assert source.blueprints == [] and source.origin == str(path)
