"""Hostile input to the run commands, through the installed console script: secrets (issue 18 class 10) and
tampered shards (class 11).

Class 10: a run whose --output is an S3 URI with credentials in it (an S3 server in this process: moto), against
an endpoint that echoes the API key inside its completions (`EchoingEndpoint`, a TEST DOUBLE built on
tests/loopback_endpoint.py), then its export. Neither the key nor the URI's credentials may appear in any line
printed, any file or folder name, or any file's content (Parquet read back, so compression hides nothing) under
the staging folder or at the URI. Class 11: shards of that run, tampered with, are refused by `export` and by a
resumed run with one line naming the shard and the fix, and the run folder is left as it was.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq
import pytest

from apigen_mt.pipeline.run.proposals import ProposalItem, system_row
from apigen_mt.pipeline.store.remote import RemoteError, RemoteRun, redact_uri, redacted_command
from apigen_mt.pipeline.store.run_folder import RunFolder
from apigen_mt.pipeline.store.schemas import BLUEPRINT_SCHEMA, TRAJECTORY_SCHEMA
from apigen_mt.pipeline.store.shards import RunFolderError, shard_paths
from tests.conftest import cli_error_line, load_test_module

HERE = Path(__file__).resolve().parent
CLI = Path(sys.executable).parent / "apigen-mt"
DEMO_BLUEPRINTS = HERE.parent / "examples" / "demo_blueprints.jsonl"
API_KEY = "sk-faults18-echoed-5e3f9b1c7d"
KEY_ID, SECRET = "AKIAFAULTS18KEYID", "faults18-uri-secret-Zq9Xw"
SECRETS = (API_KEY, KEY_ID, SECRET)
KEY_VARIABLE = "APIGEN_MT_TEST_ECHOED_KEY"


loopback = load_test_module("loopback_endpoint")
adversarial = load_test_module("test_cli_adversarial")


class EchoingEndpoint(loopback.LoopbackEndpoint):
    """TEST DOUBLE: the loopback endpoint, whose agent and human put the API key into their replies and thinking."""

    def _role_answer(self, body: dict[str, Any]) -> dict[str, Any]:
        answer = super()._role_answer(body)
        if loopback.role_of(body) in ("agent", "human"):
            for choice in answer["choices"]:
                message = choice["message"]
                if message.get("content") and not message.get("tool_calls"):
                    message["content"] = f"(my key is {API_KEY}) {message['content']}"
                message["reasoning_content"] = f"the server's key is {API_KEY}"
                self.counts["echoed"] += 1
        return answer


@pytest.fixture(scope="module")
def s3_endpoint():
    """host:port of an S3 server with an empty bucket `runs-bucket`; it takes any credentials."""
    moto_server = pytest.importorskip("moto.server", reason="moto[server] (the test extra) is not installed")
    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    filesystem, _ = pafs.FileSystem.from_uri(
        f"s3://{KEY_ID}:{SECRET}@runs-bucket?endpoint_override={host}:{port}&scheme=http&allow_bucket_creation=true"
    )
    filesystem.create_dir("runs-bucket")
    yield f"{host}:{port}"
    server.stop()


def secret_uri(s3: str, path: str) -> str:
    return f"s3://{KEY_ID}:{SECRET}@runs-bucket/{path}?endpoint_override={s3}&scheme=http"


def cli(*args: Any, cache: Path) -> subprocess.CompletedProcess[str]:
    env = os.environ | {KEY_VARIABLE: API_KEY, "XDG_CACHE_HOME": str(cache), "AWS_EC2_METADATA_DISABLED": "true"}
    return subprocess.run(
        [str(CLI), *map(str, args)], capture_output=True, text=True, timeout=300, env=env, stdin=subprocess.DEVNULL
    )


def phase2(config: Path, output: str | Path, *, limit: int, trials: int | None = None) -> list[Any]:
    """The arguments of `apigen-mt trajectories` on the demo blueprints."""
    more = [] if trials is None else ["--trials", trials]
    return [
        "trajectories",
        config,
        "--tasks",
        DEMO_BLUEPRINTS,
        "--domain",
        "retail",
        "--limit",
        limit,
        *more,
        "--output",
        output,
        "--quiet",
    ]


def write_config(folder: Path, base_url: str) -> Path:
    endpoint = {"base_url": base_url, "model": "teacher", "api_key_env": KEY_VARIABLE, "max_retries": 0}
    config = {
        "models": {"endpoint": {"backend": "openai", "endpoint": endpoint}},
        "roles": {role: "endpoint" for role in ("proposer", "reviewer", "human", "human_judge", "agent")},
        "trajectories": {"trials": 2, "episode": {"max_turns": 10}},
    }
    path = folder / "echo.yaml"
    path.write_text(json.dumps(config))  # JSON is YAML
    return path


def readable_texts(path: Path) -> list[str]:
    """What a file holds as text: its bytes, and a Parquet file's rows read back (compressed bytes hide text)."""
    texts = [path.read_bytes().decode("latin-1")]
    if path.suffix == ".parquet":
        texts.append(json.dumps(pq.read_table(path).to_pylist(), default=str))
    return texts


def leaks(folder: Path) -> list[str]:
    """Every place under `folder` a secret appears: a file or folder name, or a file's content."""
    found = []
    for path in [folder, *folder.rglob("*")]:
        relative = path.relative_to(folder.parent)
        found += [f"{relative} (name)" for secret in SECRETS if secret in str(path)]
        if path.is_file():
            found += [f"{relative} (content)" for secret in SECRETS for text in readable_texts(path) if secret in text]
    return found


def download(s3: str, path: str, into: Path) -> Path:
    """Every object under s3://runs-bucket/PATH, copied into a local folder."""
    filesystem, base = pafs.FileSystem.from_uri(f"s3://runs-bucket/{path}?endpoint_override={s3}&scheme=http")
    into.mkdir()
    pafs.copy_files(base, str(into), source_filesystem=filesystem, destination_filesystem=pafs.LocalFileSystem())
    return into


@pytest.fixture(scope="module")
def echoed_run(s3_endpoint, tmp_path_factory):
    """`trajectories` into a URI with credentials against the echoing endpoint, a copy of its staging folder as the
    run left it, then `export` of the URI."""
    folder = tmp_path_factory.mktemp("secrets")
    os.environ.setdefault("AWS_EC2_METADATA_DISABLED", "true")
    with EchoingEndpoint(models=("teacher",)) as endpoint:
        config = write_config(folder, endpoint.base_url)
        uri = secret_uri(s3_endpoint, "echoed")
        cache = folder / "cache"
        ran = cli(*phase2(config, uri, limit=2), cache=cache)
        staging = next(cache.rglob("manifest.json")).parent if ran.returncode == 0 else None
        if staging is not None:
            shutil.copytree(staging, folder / "as-run")
        exported = cli("export", uri, cache=cache)
        yield {
            "folder": folder,
            "config": config,
            "cache": cache,
            "staging": staging,
            "run": ran,
            "export": exported,
            "echoed": endpoint.counts["echoed"],
        }


# ---------------------------------------------------------------------------------------- class 10: secrets


def test_credentials_in_the_output_uri_and_an_echoed_api_key_are_nowhere(echoed_run, s3_endpoint):
    """issue 18 class 10: the run and its export finish; the echoed key is replaced in the rows; neither the key nor
    the URI's credentials appear in a line printed, a name or a file of the staging folder, or at the URI."""
    ran, exported = echoed_run["run"], echoed_run["export"]
    assert ran.returncode == 0 and "Traceback" not in ran.stderr, ran.stderr
    assert exported.returncode == 0 and "Traceback" not in exported.stderr, exported.stderr
    assert echoed_run["echoed"] > 0
    stored = " ".join(
        text for shard in shard_paths(echoed_run["staging"] / "trajectories") for text in readable_texts(shard)
    )
    assert "(my key is ***)" in stored  # what the endpoint said is kept, without the key
    for result in (ran, exported):
        assert [secret for secret in SECRETS if secret in result.stdout + result.stderr] == []
    assert "mirrored to s3://runs-bucket/echoed\n" in exported.stderr
    assert echoed_run["staging"].relative_to(echoed_run["cache"]).as_posix() == "apigen-mt/runs/s3/runs-bucket/echoed"
    assert (echoed_run["staging"] / "data").is_dir()  # the export is there too, and searched
    assert leaks(echoed_run["cache"]) == []
    at_the_uri = download(s3_endpoint, "echoed", echoed_run["folder"] / "at-the-uri")
    assert (at_the_uri / "manifest.json").is_file() and (at_the_uri / "data").is_dir()
    assert leaks(at_the_uri) == []


def test_an_unreachable_uri_with_credentials_is_one_line_without_them(echoed_run, tmp_path):
    """issue 18 class 10: the error line, and the staging folder, hold none of the URI's credentials."""
    cache = tmp_path / "cache"
    output = f"s3://{KEY_ID}:{SECRET}@runs-bucket/x?endpoint_override=127.0.0.1:9&scheme=http"
    line = adversarial.assert_clean_failure(cli(*phase2(echoed_run["config"], output, limit=1), cache=cache))
    staging = cache / "apigen-mt" / "runs" / "s3" / "runs-bucket" / "x"
    assert line.startswith("apigen-mt: error: s3://runs-bucket/x: When listing objects under key 'x/'"), line
    assert line.endswith(
        f"check the URI, the credentials and the network (the run's files are kept in {staging}; rerun the same "
        "command to finish the upload)"
    ), line
    assert [secret for secret in SECRETS if secret in line] == [] and staging.is_dir() and leaks(cache) == []


@pytest.mark.parametrize(
    ("uri", "message"),
    [
        (
            f"nosuchscheme://{KEY_ID}:{SECRET}@bucket/run",
            "--output nosuchscheme://***@bucket/run: Unrecognized filesystem type in URI: nosuchscheme://***@bucket/run",
        ),
        (
            f"s3://runs-bucket/x?scheme=http&secret_key={SECRET}",
            "--output s3://runs-bucket/x?scheme=http&secret_key=***: "
            "Unexpected query parameter in S3 URI: 'secret_key'",
        ),
    ],
    ids=["an unknown scheme", "a secret query parameter"],
)
def test_a_uri_pyarrow_refuses_is_named_without_its_credentials(uri, message, tmp_path):
    """issue 18 class 10: pyarrow quotes the URI it refuses; the message does not."""
    with pytest.raises(RemoteError) as refused:
        RemoteRun(uri, tmp_path / "staging")
    assert str(refused.value) == message


def test_redaction_hides_credentials_and_keeps_the_rest():
    """issue 18 class 10: what `redact_uri` hides (for the manifest's command, through `redacted_command`)."""
    command = ["apigen-mt", "generate", "c.yaml", "--output", f"s3://{KEY_ID}:{SECRET}@bucket/run?region=eu-west-1"]
    assert redacted_command(command) == [*command[:4], "s3://***@bucket/run?region=eu-west-1"]
    signed = "https://host/b/k?X-Amz-Credential=AKIA%2F20261207&X-Amz-Signature=f00d&X-Amz-Expires=60"
    assert redact_uri(f"GET {signed} failed") == (
        "GET https://host/b/k?X-Amz-Credential=***&X-Amz-Signature=***&X-Amz-Expires=60 failed"
    )
    assert redact_uri("gs://bucket/x?access_key=a1&token=t2&endpoint_override=h:1") == (
        "gs://bucket/x?access_key=***&token=***&endpoint_override=h:1"
    )
    assert redact_uri("s3://bucket/at@sign and mail@example.com") == "s3://bucket/at@sign and mail@example.com"


# ---------------------------------------------------------------------------------- class 11: tampered shards


def tampered_copy(echoed_run: dict[str, Any], folder: Path, change) -> tuple[Path, Path]:
    """A copy of the run folder as the run left it, its first trajectory shard rewritten with `change` made to its
    first row (Parquet lets a forger write anything; the schema's nulls are relaxed for that)."""
    run = folder / "run"
    shutil.copytree(echoed_run["folder"] / "as-run", run)
    shard = shard_paths(run / "trajectories")[0]
    rows = pq.read_table(shard).to_pylist()
    change(rows[0])
    loose = pa.schema([field.with_nullable(True) for field in TRAJECTORY_SCHEMA])
    pq.write_table(pa.Table.from_pylist(rows, schema=loose), shard)
    return run, shard


def rows_and_manifest(run: Path) -> dict[Path, bytes]:
    """The bytes of the run folder's shards and manifest (the lock file holds the pid of its last holder)."""
    return adversarial.snapshot(run / "manifest.json", run / "trajectories")


TAMPERINGS = {
    "a null blueprint_id": (lambda row: row.update(blueprint_id=None), "row 0 has a null 'blueprint_id'"),
    "an unknown status": (
        lambda row: row.update(status="forged"),
        "row 0 has status 'forged', not one of accepted, failed, rejected",
    ),
    "an unknown attribution": (
        lambda row: row.update(status="rejected", attribution="nobody"),
        "row 0 has attribution 'nobody', not one of agent, human, null, system",
    ),
}


@pytest.mark.parametrize("tampering", TAMPERINGS)
def test_export_refuses_a_tampered_shard_naming_it_and_the_fix(echoed_run, tmp_path, tampering):
    """issue 18 class 11: one line naming the shard, what is wrong in it and the fix; nothing written."""
    change, problem = TAMPERINGS[tampering]
    run, shard = tampered_copy(echoed_run, tmp_path, change)
    before, paths = rows_and_manifest(run), sorted(run.rglob("*"))
    line = adversarial.assert_clean_failure(cli("export", run, cache=tmp_path / "cache"), snapshot=before)
    assert line == (
        f"apigen-mt: error: shard {shard} does not fit the run folder's contract: {problem}; move it out of "
        f"{shard.parent} (its trials or proposals are then run again on resume) or restore it"
    )
    assert sorted(run.rglob("*")) == paths  # no dataset, no card


def test_a_resumed_run_refuses_a_tampered_shard_before_playing(echoed_run, tmp_path):
    """issue 18 class 11: a rerun into the folder stops at the shard, before Ray, leaving rows and manifest as they
    were."""
    run, shard = tampered_copy(echoed_run, tmp_path, lambda row: row.update(blueprint_id=None))
    before = rows_and_manifest(run)
    result = cli(*phase2(echoed_run["config"], run, limit=2, trials=3), cache=tmp_path / "cache")
    line = adversarial.assert_clean_failure(result, snapshot=before, folder=run / "trajectories")
    assert f"shard {shard} does not fit the run folder's contract: row 0 has a null 'blueprint_id'" in line


def proposal_row(**changes: Any) -> dict[str, Any]:
    """A final Phase-1 row as the worker makes it (a proposal rejected at `policy`), with `changes`."""
    row = system_row(ProposalItem("retail", 0, seed=0), "proposer", "a write the policy forbids")
    return row | {"status": "rejected", "failed_stage": "policy"} | changes


def test_a_proposal_row_with_an_unknown_failed_stage_is_neither_written_nor_read(tmp_path):
    """issue 18 class 11, Phase 1's shards: a `failed_stage` outside the stages is refused by the writer, and a
    shard forged with one is refused at read, naming it."""
    folder = RunFolder(tmp_path / "run")
    with folder.proposal_writer(rows_per_shard=1) as writer:
        writer.write(proposal_row())
        with pytest.raises(ValueError, match="column 'failed_stage' is 'bribery', not one of decontamination, "):
            writer.write(proposal_row(proposal=1, failed_stage="bribery"))
    assert [row["proposal"] for row in folder.final_proposals()] == [0]
    [shard] = shard_paths(folder.proposals_dir)
    pq.write_table(pa.Table.from_pylist([proposal_row(failed_stage="bribery")], schema=BLUEPRINT_SCHEMA), shard)
    with pytest.raises(
        RunFolderError,
        match=f"shard {shard} does not fit the run folder's contract: row 0 has failed_stage 'bribery', not one of ",
    ):
        folder.final_proposals()


@pytest.mark.parametrize(
    "base_url",
    [f"http://{KEY_ID}:{SECRET}@127.0.0.1:9/v1", f"https://127.0.0.1:9/v1?api_key={SECRET}"],
    ids=["user and password", "a key parameter"],
)
def test_an_endpoint_url_with_credentials_is_refused_without_repeating_them(base_url, tmp_path):
    """issue 18 class 10: a key written into an endpoint's URL would be copied into the manifest's config, rows'
    reasons and logs; the config is refused in one line, which names the field and hides the key."""
    line = cli_error_line(
        "trajectories", write_config(tmp_path, base_url), "--tasks", DEMO_BLUEPRINTS, "--output", tmp_path / "o"
    )
    assert "models.endpoint.openai.endpoint.base_url" in line and "hold no credentials" in line, line
    assert SECRET not in line and KEY_ID not in line
    assert not (tmp_path / "o").exists()
