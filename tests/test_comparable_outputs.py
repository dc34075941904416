"""Expected outputs at stage 1 in the form the trajectory verifier compares them.

The verifier reads a reply as tau-bench does (lowercased, commas removed) but an output only lowercased, so an
output with a comma ("1,234.50") could never match. Stage 1 of Phase 2 (every file blueprint, and every
generated one going on to episodes) removes the commas, and the format stage rejects an output that says
nothing once they are gone.
"""

from __future__ import annotations

import json

from apigen_mt.pipeline.run.sources import LoadedSource, load_source, validate_source
from apigen_mt.simulators.domain import get_domain
from apigen_mt.simulators.types import Blueprint
from apigen_mt.validators.blueprint import validate_blueprint, with_comparable_outputs
from apigen_mt.validators.format import check_format
from apigen_mt.validators.trajectory import comparable_output, reply_form, verify_trajectory

RETAIL = get_domain("retail")
USER = next(iter(RETAIL.load()["users"]))  # a user of the seeded database
BLUEPRINT = {
    "user_id": USER,
    "instruction": "Ask how much the order cost and how it shipped.",
    "actions": [],
    "outputs": ["1,234.50", "Paris, France", "1234.50", "Express"],
}
REPLY = "Your order came to $1,234.50 and went Express to Paris, France."


def conversation(reply: str) -> list[dict[str, str]]:
    return [
        {"role": "user", "content": "What did I pay?"},
        {"role": "assistant", "content": reply},
        {"role": "user", "content": "###STOP###"},
    ]


def test_an_output_with_a_comma_never_matches_as_written_and_always_after_stage_one():
    db = RETAIL.load()
    as_written = verify_trajectory(RETAIL, db, BLUEPRINT, conversation(REPLY))
    assert as_written.details["outputs"] == {
        "1,234.50": False,
        "Paris, France": False,
        "1234.50": True,
        "Express": True,
    }

    normalised = with_comparable_outputs(Blueprint.model_validate(BLUEPRINT))
    assert normalised.outputs == ["1234.50", "Paris France", "Express"]  # "1,234.50" and "1234.50" are one output now
    verdict = verify_trajectory(RETAIL, db, normalised, conversation(REPLY))
    assert (verdict.outputs_match, verdict.reward) == (True, 1.0)
    # The normal form is exactly what the comparison reads: an output matches its own wording in a reply.
    assert all(comparable_output(output).lower() == reply_form(output) for output in BLUEPRINT["outputs"])


def test_a_blueprint_without_commas_is_left_as_it_is():
    blueprint = Blueprint.model_validate({**BLUEPRINT, "outputs": ["Express"]})
    assert with_comparable_outputs(blueprint) is blueprint


def test_an_output_empty_without_its_commas_is_rejected_by_the_format_stage():
    verdict = check_format(RETAIL, {**BLUEPRINT, "outputs": ["Express", ", ,"]})
    assert verdict.reasons == [
        "outputs[1] ', ,' is empty once commas are removed (as they are from replies), so every reply would match it"
    ]
    assert validate_blueprint(RETAIL, RETAIL.load(), {**BLUEPRINT, "outputs": ["Express"]})[-1].passed


def test_phase_two_stage_one_keeps_file_and_generated_blueprints_with_comparable_outputs(tmp_path):
    path = tmp_path / "blueprints.jsonl"
    path.write_text(json.dumps(BLUEPRINT) + "\n", encoding="utf-8")
    from_file = load_source("retail", path)
    generated = LoadedSource(
        RETAIL, None, RETAIL.load(), RETAIL.policy, [Blueprint.model_validate({**BLUEPRINT, "id": "retail-p0"})]
    )
    for source in (from_file, generated):
        validate_source(source)
        [kept] = source.blueprints
        assert kept.outputs == ["1234.50", "Paris France", "Express"] and source.rejected == []
        assert kept.id in source.ground_truth
