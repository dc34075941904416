"""Phase 2 blueprint sources: records that cannot become blueprints are kept as `validate` records."""

from __future__ import annotations

import json

from apigen_mt.pipeline.run.sources import blueprint_id, load_source

CANCEL = {"name": "cancel_pending_order", "kwargs": {"order_id": "#W1", "reason": "ordered by mistake"}}


def test_records_that_are_no_blueprint_of_the_domain_are_format_rejections(tmp_path):
    records = [
        {"id": "x1", "domain": "airline", "instruction": "hi", "actions": []},
        [1, 2],
        {"instruction": "cancel", "actions": [CANCEL]},
        {"instruction": 5, "actions": "no"},
        {"instruction": "cancel", "actions": [CANCEL]},  # the same content again: dropped, not rejected
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
    ]
    assert [blueprint.id for blueprint in source.blueprints] == [blueprint_id("retail", records[2])]
