from __future__ import annotations

import pytest

from apigen_mt.simulators.types import Message, OpenAIToolCall, ToolCall
from apigen_mt.validators.sampling import blueprint_pass_hat_k, pass_hat_k, trajectory_signature


def test_pass_hat_k_matches_hand_computed_values() -> None:
    results = {"a": [True, True, False], "b": [True, True, True], "c": [False, False, False]}
    # a: C(2,k)/C(3,k) = 2/3, 1/3, 0; b: 1 for every k; c: 0.
    assert pass_hat_k(results, 1) == pytest.approx((2 / 3 + 1 + 0) / 3)
    assert pass_hat_k(results, 2) == pytest.approx((1 / 3 + 1 + 0) / 3)
    assert pass_hat_k(results, 3) == pytest.approx(1 / 3)
    assert blueprint_pass_hat_k([True, False, True, True, False], 2) == pytest.approx(3 / 10)  # C(3,2)/C(5,2)


def test_pass_hat_k_leaves_out_blueprints_with_fewer_than_k_trials() -> None:
    results = {"a": [True, False], "b": [True]}
    assert pass_hat_k(results, 1) == pytest.approx((1 / 2 + 1) / 2)
    assert pass_hat_k(results, 2) == pytest.approx(0.0)  # only a counts: C(1,2) = 0
    with pytest.raises(ValueError, match="at least 3 trials; the most any has is 2"):
        pass_hat_k(results, 3)
    with pytest.raises(ValueError, match="k >= 1"):
        pass_hat_k(results, 0)


def _episode(
    *,
    call_id: str = "call_1",
    arguments: str = '{"order_id": "#W0001", "reason": "no longer needed"}',
    reply: str = "Your order #W0001 is cancelled.",
    user: str = "Please cancel #W0001.",
) -> list[dict]:
    return [
        {"role": "system", "content": "policy"},
        {"role": "user", "content": user},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": call_id,
                    "type": "function",
                    "function": {"name": "cancel_pending_order", "arguments": arguments},
                }
            ],
        },
        {"role": "tool", "tool_call_id": call_id, "content": '{"status": "cancelled"}'},
        {"role": "assistant", "content": reply},
        {"role": "user", "content": "###STOP###"},
    ]


def test_signatures_are_equal_for_the_same_calls_and_replies() -> None:
    base = trajectory_signature(_episode())
    assert len(base) == 64 and int(base, 16) >= 0
    # Call ids, argument formatting, key order, the user's wording and surrounding whitespace do not count.
    assert trajectory_signature(_episode(call_id="call_xyz")) == base
    assert trajectory_signature(_episode(arguments='{ "reason":"no longer needed",  "order_id":"#W0001" }')) == base
    assert trajectory_signature(_episode(user="hi, cancel order #W0001 please")) == base
    assert trajectory_signature(_episode(reply="  Your order #W0001 is cancelled.\n")) == base
    models = [Message.model_validate(message) for message in _episode()]
    assert trajectory_signature(models) == base


def test_signatures_differ_when_the_agent_acts_or_speaks_differently() -> None:
    base = trajectory_signature(_episode())
    assert trajectory_signature(_episode(arguments='{"order_id": "#W0001", "reason": "ordered by mistake"}')) != base
    assert trajectory_signature(_episode(reply="Done: #W0001 is cancelled.")) != base
    extra_call = _episode()
    extra_call[2]["tool_calls"].append(
        OpenAIToolCall.of(ToolCall(name="get_order_details", arguments={"order_id": "#W0001"}), "call_2").model_dump()
    )
    assert trajectory_signature(extra_call) != base
    # Reply then call is not call then reply.
    swapped = _episode()
    swapped[2], swapped[4] = {"role": "assistant", "content": swapped[4]["content"]}, {**swapped[2]}
    assert trajectory_signature(swapped) != base
