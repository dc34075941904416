"""The run viewer on a large run: 100,000 synthetic trials, the overview and the first page of the trials table.

    python benchmarks/viewer.py [--trials 100000] [--rows-per-shard 1000] [--keep DIR]

Writes a run folder with the project's shard writer (synthetic rows shaped as a real run's: the retail policy as
system prompt, the domain's tools, a few turns of calls and answers, a rejected or failed share with reasons and
policy violations; no model), starts `apigen-mt view` on it as a user would (the server reads every shard's small
columns before it serves: the start is the cold read, timed apart), and asks for the overview and the first table
page, then both again, a filtered table, a free-text search and one trial. Targets: each page answers in under a
second, and the server's peak resident memory stays under 500 MiB. `--keep DIR` writes the folder there and leaves
it (a second run on it skips the writing).
The last line is `viewer: N trials; start and index S.S s (R MiB); overview X.XX s (again Y.YY s), first table page
Z.ZZ s, ...; peak RSS M MiB`.
"""

from __future__ import annotations

import argparse
import json
import random
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

from apigen_mt.pipeline.run.proposals import ProposalItem, proposal_id, system_row
from apigen_mt.pipeline.store.manifest import RunManifest, package_versions, utc_now
from apigen_mt.pipeline.store.run_folder import RunFolder
from apigen_mt.pipeline.store.schemas import BLUEPRINT_SCHEMA
from apigen_mt.pipeline.store.shards import ShardWriter
from apigen_mt.simulators.domain import get_domain

CLI = Path(sys.executable).parent / "apigen-mt"
TRIALS_PER_BLUEPRINT = 4
PROPOSAL_STAGES = ("format", "execution", "policy", "review", None)  # None: accepted
RETAIL = get_domain("retail")
POLICY = RETAIL.policy_text()
TOOLS = json.dumps([spec.openai() for spec in RETAIL.toolkit.specs()])
RULES = [rule.id for rule in RETAIL.rules]


def messages(rng: random.Random, user: str, order: str, calls: int) -> list[dict]:
    said = [
        {"role": "system", "content": POLICY},
        {"role": "user", "content": f"Hi, I am {user}. Please cancel order {order}, I ordered it by mistake."},
    ]
    for number in range(calls):
        call_id = f"call_{number}"
        arguments = {"order_id": order} if number else {"email": f"{user}@example.com"}
        name = "get_order_details" if number else "find_user_id_by_email"
        said.append(
            {
                "role": "assistant",
                "tool_calls": [
                    {"id": call_id, "type": "function", "function": {"name": name, "arguments": json.dumps(arguments)}}
                ],
            }
        )
        answer = {"order_id": order, "status": "pending", "items": [{"name": "Lamp", "price": rng.randint(10, 900)}]}
        said.append({"role": "tool", "tool_call_id": call_id, "name": name, "content": json.dumps(answer)})
    said.append({"role": "assistant", "content": f"Order {order} is cancelled; the refund is on its way."})
    said.append({"role": "user", "content": "Thanks, that is all. ###STOP###"})
    return said


def trial_row(index: int, rng: random.Random) -> dict:
    blueprint_id = proposal_id("retail", index // TRIALS_PER_BLUEPRINT)
    user, order = f"user_{index // TRIALS_PER_BLUEPRINT}", f"#W{index // TRIALS_PER_BLUEPRINT:07d}"
    calls = rng.randint(1, 8)
    draw = rng.random()
    status = "accepted" if draw < 0.7 else "rejected" if draw < 0.92 else "failed"
    violations = [f"[{rng.choice(RULES)}] action 1 (get_order_details) acts before the user is verified"] * (
        status == "rejected" and rng.random() < 0.4
    )
    reasons = {
        "accepted": [],
        "rejected": [
            f'the final database differs from the ground truth\'s in 1 place(s): /orders/{order}/status is "pending"'
        ],
        "failed": ["model_error: the agent model's backend failed: HTTP 503"],
    }[status] + violations
    blueprint = {
        "id": blueprint_id,
        "domain": "retail",
        "user_id": user,
        "instruction": f"You are {user}. Cancel order {order}.",
        "actions": [{"name": "cancel_pending_order", "arguments": {"order_id": order, "reason": "ordered by mistake"}}],
        "outputs": [],
    }
    return {
        "blueprint_id": blueprint_id,
        "domain": "retail",
        "trial": index % TRIALS_PER_BLUEPRINT,
        "attempt": 1,
        "status": status,
        "reasons": reasons,
        "attribution": None if status == "accepted" else "system" if status == "failed" else "agent",
        "reward": 1.0 if status == "accepted" else 0.0,
        "state_match": status == "accepted",
        "outputs_match": True,
        "terminated": status != "failed",
        "policy_violations": violations,
        "human_errors": [],
        "termination": "model_error" if status == "failed" else "user_stop",
        "messages": json.dumps(messages(rng, user, order, calls)),
        "tools": TOOLS,
        "blueprint": json.dumps(blueprint),
        "signature": f"{index // TRIALS_PER_BLUEPRINT:x}-{calls}",
        "turns": calls + 1,
        "tool_calls": calls,
        "prompt_tokens": 2000 * (calls + 1),
        "completion_tokens": 40 * (calls + 1),
        "human_prompt_tokens": 600,
        "human_completion_tokens": 40,
        "agent_model": "synthetic",
        "human_model": "synthetic",
        "duration_s": rng.uniform(1, 30),
        "turn_stats": "[]",
        "finished_at": utc_now(),
    }


def proposal_row(index: int) -> dict:
    """Proposal `index`'s one round, failed at a stage in turn or accepted: the worker's row of a proposal that
    ran no stage (`system_row`), with its outcome."""
    stage = PROPOSAL_STAGES[index % len(PROPOSAL_STAGES)]
    row = system_row(ProposalItem("retail", index, seed=index), "synthetic", "", fallbacks=[])
    return row | {
        "status": "accepted" if stage is None else "rejected",
        "failed_stage": stage,
        "reasons": [] if stage is None else [f"rejected at {stage}"],
    }


def write_run(out: Path, trials: int, rows_per_shard: int) -> float:
    started = time.perf_counter()
    run = RunFolder(out)
    rng = random.Random(0)
    with run.trajectory_writer(rows_per_shard) as writer:
        for index in range(trials):
            writer.write(trial_row(index, rng))
    with ShardWriter(run.proposals_dir, BLUEPRINT_SCHEMA, rows_per_shard=rows_per_shard) as writer:
        for index in range(trials // TRIALS_PER_BLUEPRINT):
            writer.write(proposal_row(index))
    manifest = RunManifest(config={}, fingerprint="synthetic", versions=package_versions(), started_at=utc_now())
    run.save_manifest(manifest.model_copy(update={"finished_at": utc_now()}))
    return time.perf_counter() - started


def timed_get(client: httpx.Client, path: str) -> tuple[float, str]:
    started = time.perf_counter()
    answer = client.get(path)
    answer.raise_for_status()
    return time.perf_counter() - started, answer.text


def rss_mib(pid: int, field: str = "VmHWM") -> float:
    """The process's peak (VmHWM) or current (VmRSS) resident memory."""
    status = Path(f"/proc/{pid}/status").read_text()
    return int(re.search(rf"{field}:\s+(\d+) kB", status)[1]) / 1024


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--trials", type=int, default=100_000)
    parser.add_argument("--rows-per-shard", type=int, default=1000)
    parser.add_argument("--keep", type=Path, help="write the run folder here and keep it")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        out = args.keep or Path(scratch) / "run"
        if not (out / "manifest.json").exists():
            seconds = write_run(out, args.trials, args.rows_per_shard)
            print(f"wrote {args.trials:,} trials in {seconds:.0f} s to {out}", file=sys.stderr)
        started = time.perf_counter()
        server = subprocess.Popen([str(CLI), "view", str(out), "--port", "0"], stderr=subprocess.PIPE, text=True)
        try:
            line = server.stderr.readline()
            # The server indexes every shard's small columns before it serves: its start is the cold read.
            startup, at_start = time.perf_counter() - started, rss_mib(server.pid, "VmRSS")
            match = re.search(r"http://[\d.]+:(\d+)/", line)
            if match is None:
                raise SystemExit(f"the viewer did not start: {line}{server.stderr.read()}")
            base = f"http://127.0.0.1:{match[1]}"
            with httpx.Client(base_url=base, timeout=120) as client:
                overview, page = timed_get(client, "/")
                table, rows = timed_get(client, "/trials")
                overview_again, _ = timed_get(client, "/")
                table_again, _ = timed_get(client, "/trials?status=rejected&sort=tokens&descending=true")
                search, _ = timed_get(client, "/trials?text=by+mistake")
                trial, _ = timed_get(client, f"/trial?blueprint={proposal_id('retail', 0)}&trial=0")
            shown = re.search(r'id="count-trials">([\d,]+)<', page)[1]
            assert shown.replace(",", "") == str(args.trials), f"the overview shows {shown} trials"
            assert rows.count('<tr class="status-') == 50, "the first table page holds 50 trials"
            peak = rss_mib(server.pid)
        finally:
            server.terminate()
            server.wait(timeout=30)
    print(
        f"viewer: {args.trials:,} trials; start and index {startup:.1f} s ({at_start:.0f} MiB); overview "
        f"{overview:.2f} s (again {overview_again:.2f} s), first table page "
        f"{table:.2f} s (filtered and sorted {table_again:.2f} s), one trial {trial:.2f} s, search in every "
        f"conversation {search:.2f} s; peak RSS {peak:.0f} MiB (targets: under 1 s each, under 500 MiB)"
    )


if __name__ == "__main__":
    main()
