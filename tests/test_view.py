"""`apigen-mt view` without a browser: its data layer, its pages through Starlette's test client, the static file,
and the CLI's one-line errors. The run is made by the scripted roles of both phases (tests/scripted_phase1.py,
then tests/scripted_job.py into the same folder: accepted, rejected and failed trials, every Phase 1 outcome)."""

from __future__ import annotations

import html
import json
import re
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from starlette.testclient import TestClient

from apigen_mt.pipeline.store.run_folder import RunFolder
from apigen_mt.pipeline.store.schemas import TRAJECTORY_SCHEMA
from apigen_mt.pipeline.store.shards import ShardWriter
from apigen_mt.pipeline.view import conversation
from apigen_mt.pipeline.view.app import create_app
from apigen_mt.pipeline.view.index import RunIndex
from apigen_mt.pipeline.view.queries import TrialQuery, trials_page
from apigen_mt.pipeline.view.static_page import write_static
from tests.conftest import load_by_value

CLI = Path(sys.executable).parent / "apigen-mt"
WRONG = "demo-retail-cancel-2"  # the scripted agent cancels it with the wrong reason: rejected, state differs


def make_run(out: Path) -> Path:
    """Phase 1 and Phase 2 with scripted roles, then the demo blueprints' trials added with --force (a Ray must be
    up: the `ray_local` fixture)."""
    from apigen_mt.pipeline.run.driver import run_generate

    phase1 = load_by_value("test_phase1_run")
    run_generate(phase1.config(), phase1.plan(), phase1.options(out), model_factory=phase1.scripted.factory)
    load_by_value("scripted_job").run(out, trials=3, force=True)
    return out


@pytest.fixture(scope="module")
def run_dir(ray_local, tmp_path_factory) -> Path:
    return make_run(tmp_path_factory.mktemp("view") / "run")


@pytest.fixture()
def client(run_dir: Path) -> TestClient:
    return TestClient(create_app(RunIndex(RunFolder(run_dir))))


def manifest_counts(run_dir: Path) -> dict[str, int]:
    return json.loads((run_dir / "manifest.json").read_text())["counts"]["trajectories"]


def shown_count(page: str, name: str) -> int:
    return int(re.search(rf'id="count-{name}">([\d,]+)<', page)[1].replace(",", ""))


def text_of(page: str) -> str:
    return html.unescape(re.sub(r"<[^>]+>", " ", page))


def test_the_overview_counts_what_the_manifest_counts_and_draws_both_funnels(client, run_dir):
    page = client.get("/").text
    counts = manifest_counts(run_dir)
    for name in ("trials", "accepted", "rejected", "failed", "unique_accepted"):
        assert shown_count(page, name) == counts[name], name
    assert counts["rejected"] and counts["failed"]  # the run has what the other tests look at
    words = text_of(page)
    for stage in ("rounds proposed", "past the review committee", "accepted blueprints", "trials played", "accepted"):
        assert stage in words
    assert "% kept)" in words
    assert page.count("<svg") == 8  # both funnels, pass^k, attribution, terminations, rules, turns, tool calls


def test_the_table_filters_sorts_and_pages(client, run_dir):
    counts = manifest_counts(run_dir)
    rejected = client.get("/trials", params={"status": "rejected"}).text
    assert rejected.count('<tr class="status-rejected">') == counts["rejected"]
    assert '<tr class="status-accepted">' not in rejected
    failed = client.get("/trials", params={"reason": "system failure"}).text
    assert failed.count('<tr class="status-failed">') == counts["failed"]
    index = RunIndex(RunFolder(run_dir))
    snapshot = index.snapshot()
    by_turns = trials_page(index, snapshot, TrialQuery(sort="turns", descending=True), per_page=1000).rows
    turns = [row["turns"] for row in by_turns]
    assert turns == sorted(turns, reverse=True) and len(turns) == counts["trials"]
    first, second = (trials_page(index, snapshot, TrialQuery(page=page), per_page=4) for page in (1, 2))
    assert first.pages == second.pages == -(-counts["trials"] // 4)
    keys = {(row["blueprint_id"], row["trial"]) for row in first.rows + second.rows}
    assert len(keys) == 8


def test_free_text_search_finds_the_conversations_that_hold_the_text(client, run_dir):
    stored = RunFolder(run_dir).trials(["blueprint_id", "trial", "messages"]).to_pylist()
    expected = sorted((row["blueprint_id"], row["trial"]) for row in stored if "rain jacket" in row["messages"].lower())
    assert 0 < len(expected) < len(stored)
    index = RunIndex(RunFolder(run_dir))
    found = trials_page(index, index.snapshot(), TrialQuery(text="Rain JACKET"), per_page=1000).rows
    assert sorted((row["blueprint_id"], row["trial"]) for row in found) == expected


def test_a_rejected_trial_shows_its_reasons_linked_to_the_call_and_its_calls_beside_the_truth(client):
    page = client.get("/trial", params={"blueprint": WRONG, "trial": 0}).text
    words = text_of(page)
    assert "the final database differs from the ground truth's in 1 place(s)" in words
    assert '/orders/#W9457132/cancel_reason is "no longer needed"' in words  # the database difference
    cancel = re.search(r'<div class="call" id="(call\d+)">\s*<div class="call-name">→ <code>cancel_pending_order', page)
    assert cancel, "the cancel call is in the chat"
    assert f'href="#{cancel[1]}">see in the chat' in page
    assert '<tr class="differs">' in page and page.count('<tr class="same">') == 2  # two reads right, the cancel not
    assert "system prompt (" in words and "ordered a rain jacket by mistake" in words


def test_a_blueprint_shows_every_round_with_its_stage_feedback_and_votes(client, run_dir):
    rounds = {}
    for row in RunFolder(run_dir).proposals().to_pylist():
        rounds.setdefault(row["blueprint_id"], []).append(row)
    revised = next(rows for rows in rounds.values() if len(rows) == 2 and rows[-1]["status"] == "accepted")
    page = client.get("/blueprint", params={"id": revised[0]["blueprint_id"]}).text
    words = text_of(page)
    assert "Round 0" in words and "failed at format" in words and "Round 1" in words
    assert "Feedback this round answered" in words and "Its feedback went into round 1" in words
    ballot = json.loads(revised[1]["votes"])["ballots"][0]
    assert ballot["reflection"] in words and "Committee: score" in words
    assert client.get("/blueprints").text.count('<tr class="status-') == len(rounds)


def test_a_shard_written_after_the_first_look_shows_and_changes_the_version(run_dir, tmp_path):
    copy = shutil.copytree(run_dir, tmp_path / "run")
    index = RunIndex(RunFolder(copy))
    before, version = index.snapshot(), index.version()
    assert index.snapshot() is before  # nothing changed: nothing read again
    row = RunFolder(copy).trials().slice(0, 1).to_pylist()[0]
    with ShardWriter(copy / "trajectories", TRAJECTORY_SCHEMA) as writer:
        writer.write(row | {"trial": 1000})
    assert index.version() != version
    after = index.snapshot()
    assert len(after.trials) == len(before.trials) + 1
    assert shown_count(TestClient(create_app(index)).get("/").text, "trials") == len(before.trials) + 1


def test_the_static_file_holds_the_overview_and_a_sample_of_each_status_and_nothing_from_outside(run_dir, tmp_path):
    path = tmp_path / "report.html"
    shown = write_static(RunIndex(RunFolder(run_dir)), path)
    page = path.read_text()
    counts = manifest_counts(run_dir)
    assert shown_count(page, "trials") == counts["trials"]
    statuses = re.findall(r'id="trial-status">(\w+)<', page)
    assert sorted(set(statuses)) == ["accepted", "failed", "rejected"] and len(statuses) == shown
    assert not re.search(r"""(src|href)=["']?(https?:)?//""", page)  # no asset from a network
    assert "<script" not in page and "<style>" in page


def test_bad_requests_are_one_line_pages(client):
    answer = client.get("/trials", params={"status": "bogus"})
    assert answer.status_code == 400 and "status: Input should be" in text_of(answer.text)
    answer = client.get("/trial", params={"blueprint": "nope", "trial": "0"})
    assert answer.status_code == 404 and "no trial 0 of blueprint 'nope'" in text_of(answer.text)
    assert client.get("/trial", params={"blueprint": WRONG, "trial": "x"}).status_code == 400
    assert client.get("/api/version").json()["version"]


def test_chat_pairs_answers_with_calls_and_reasons_find_their_turn():
    call = {
        "id": "c7",
        "type": "function",
        "function": {"name": "get_order_details", "arguments": '{"order_id": "#W1"}'},
    }
    messages = [
        {"role": "system", "content": "policy"},
        {"role": "user", "content": "where is #W1"},
        {"role": "assistant", "content": "", "tool_calls": [call], "reasoning_content": "look it up"},
        {"role": "tool", "tool_call_id": "c7", "content": "pending"},
        {"role": "assistant", "content": "It is pending."},
        {"role": "user", "content": "bye ###STOP###"},
    ]
    bubbles = conversation.chat(messages)
    assert [bubble.role for bubble in bubbles] == ["system", "user", "assistant", "assistant", "user"]
    assert bubbles[2].calls[0].answer == "pending" and bubbles[2].thinking == "look it up"
    reasons = [
        "[R3] action 0 (get_order_details) reads before the user is verified",
        "agent turn 2: text beside a call removed",
        "the user ended the conversation before the agent attempted cancel_pending_order",
        "expected output 'shipped' appears in none of the agent's 1 replies",
        'the final database differs from the ground truth\'s in 1 place(s): /orders/#W1/status is "a" but x',
        "something no part of the chat is named in",
    ]
    anchors = [reason.anchor for reason in conversation.linked_reasons(reasons, bubbles)]
    assert anchors == ["call0", "m4", "m5", "m4", "call0", None]
    rows = conversation.actions_against_truth(bubbles, [{"name": "cancel_pending_order", "arguments": {}}])
    assert [(row.agent is not None, row.truth is not None, row.same) for row in rows] == [(True, True, False)]


def test_the_cli_says_in_one_line_what_is_wrong(run_dir, tmp_path):
    missing = subprocess.run([str(CLI), "view", str(tmp_path / "none")], capture_output=True, text=True, timeout=60)
    assert missing.returncode == 2 and missing.stderr.startswith("apigen-mt: error: run folder ")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        busy = subprocess.run(
            [str(CLI), "view", str(run_dir), "--port", str(port)], capture_output=True, text=True, timeout=60
        )
    assert busy.returncode == 2 and f"cannot serve on 127.0.0.1:{port}" in busy.stderr
    assert len(busy.stderr.strip().splitlines()) == 1


def test_a_static_file_never_replaces_the_run_s_data_and_a_file_is_no_run_folder(run_dir, tmp_path):
    manifest = run_dir / "manifest.json"
    before = manifest.read_bytes()
    over = subprocess.run(
        [str(CLI), "view", str(run_dir), "--static", str(manifest)], capture_output=True, text=True, timeout=60
    )
    assert over.returncode == 2 and manifest.read_bytes() == before
    assert over.stderr.strip() == (
        f"apigen-mt: error: --static {manifest} would replace manifest.json of run folder {run_dir}; give a new "
        "file or an .html one"
    )
    report = run_dir / "report.html"
    for _ in range(2):  # into the run folder, then over the earlier report
        subprocess.run([str(CLI), "view", str(run_dir), "--static", str(report)], check=True, timeout=60)
    assert report.read_text().startswith("<!doctype html>")
    report.unlink()
    file = subprocess.run([str(CLI), "view", str(manifest)], capture_output=True, text=True, timeout=60)
    assert file.returncode == 2 and f"run folder {manifest} is a file, not a folder" in file.stderr


def test_the_printed_url_accepts_connections_at_once(run_dir):
    """A browser opened on the printed URL straight away is served, not refused while the app starts."""
    server = subprocess.Popen([str(CLI), "view", str(run_dir), "--port", "0"], stderr=subprocess.PIPE, text=True)
    try:
        port = int(re.search(r"http://127\.0\.0\.1:(\d+)/", server.stderr.readline())[1])
        socket.create_connection(("127.0.0.1", port), timeout=5).close()
        assert httpx.get(f"http://127.0.0.1:{port}/", timeout=60).status_code == 200
    finally:
        server.terminate()
        server.wait(timeout=30)
