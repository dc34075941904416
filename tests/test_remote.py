"""Run folders at a filesystem URI: an S3 server in this process (moto), the run staged locally and mirrored;
resuming from another staging folder (another machine) skips what the URI holds; the export replaces the
URI's export outputs; a URI that cannot be used is one CLI line."""

from __future__ import annotations

import importlib.util
import logging
import os
import subprocess
import sys
from pathlib import Path

import pyarrow.fs as pafs
import pyarrow.parquet as pq
import pytest

from apigen_mt.pipeline.store.remote import RemoteError, RemoteRun, is_uri

HERE = Path(__file__).resolve().parent
CLI = Path(sys.executable).parent / "apigen-mt"
CREDENTIALS = {"AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test", "AWS_DEFAULT_REGION": "us-east-1"}


def _load_job():
    spec = importlib.util.spec_from_file_location("scripted_job", HERE / "scripted_job.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["scripted_job"] = module
    spec.loader.exec_module(module)
    import ray.cloudpickle

    ray.cloudpickle.register_pickle_by_value(module)  # Ray's workers cannot import the tests folder
    return module


job = _load_job()


@pytest.fixture(scope="module")
def s3_endpoint():
    """host:port of an S3 server with an empty bucket `runs-bucket`."""
    moto_server = pytest.importorskip("moto.server", reason="moto[server] (the test extra) is not installed")
    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # one line per request otherwise
    saved = {name: os.environ.get(name) for name in CREDENTIALS}
    os.environ.update(CREDENTIALS)
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"{host}:{port}"
    filesystem, _ = pafs.FileSystem.from_uri(
        f"s3://runs-bucket?endpoint_override={endpoint}&scheme=http&allow_bucket_creation=true"
    )
    filesystem.create_dir("runs-bucket")
    yield endpoint
    server.stop()
    for name, value in saved.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value


def uri(endpoint: str, path: str) -> str:
    return f"s3://runs-bucket/{path}?endpoint_override={endpoint}&scheme=http"


def objects(endpoint: str, path: str) -> dict[str, int]:
    """relative key -> size under s3://runs-bucket/PATH."""
    filesystem, base = pafs.FileSystem.from_uri(uri(endpoint, path))
    infos = filesystem.get_file_info(pafs.FileSelector(base, recursive=True, allow_not_found=True))
    return {info.path[len(base) + 1 :]: info.size for info in infos if info.type == pafs.FileType.File}


def cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run([str(CLI), *args], capture_output=True, text=True, env=os.environ | env, timeout=300)


def test_uris_and_their_staging_folders(tmp_path, monkeypatch):
    assert is_uri("s3://bucket/run") and is_uri("gs://bucket/run") and is_uri("hdfs://host/run")
    assert not is_uri("runs/demo") and not is_uri("/abs/runs") and not is_uri("file:///abs/runs")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    staged = RemoteRun("s3://bucket/runs/../x?region=us-east-1").local
    assert staged == tmp_path / "apigen-mt" / "runs" / "s3" / "bucket" / "runs" / "x"
    with pytest.raises(RemoteError, match="Unrecognized filesystem type"):
        RemoteRun("nosuchscheme://bucket/run")


def test_a_run_is_mirrored_and_resumes_from_another_staging_folder(s3_endpoint, ray_local, tmp_path):
    target = uri(s3_endpoint, "runs/a")
    first = job.run(
        tmp_path / "machine-1", trials=2, rows_per_shard=3, remote=RemoteRun(target, tmp_path / "machine-1")
    )
    assert first.played == 10
    stored = objects(s3_endpoint, "runs/a")
    staged = {
        path.relative_to(tmp_path / "machine-1").as_posix(): path.stat().st_size
        for path in (tmp_path / "machine-1").rglob("*")
        if path.is_file() and not path.name.startswith(".")
    }
    assert stored == staged  # every shard (4 of 3 rows or fewer) and the final manifest, nothing else
    assert sum(name.startswith("trajectories/part-") for name in stored) == 4

    second = job.run(tmp_path / "machine-2", trials=3, remote=RemoteRun(target, tmp_path / "machine-2"))
    # The third trials were missing, and the broken blueprint's two trials failed for a system reason: played again.
    assert (second.played, second.replayed, second.skipped) == (7, 2, 8)
    filesystem, base = pafs.FileSystem.from_uri(target)
    shards = [f"{base}/{name}" for name in objects(s3_endpoint, "runs/a") if name.startswith("trajectories/")]
    pairs = {
        (row["blueprint_id"], row["trial"])
        for name in shards
        for row in pq.read_table(name, filesystem=filesystem).to_pylist()
    }
    assert len(pairs) == 15


def test_export_replaces_the_uris_export_outputs(s3_endpoint, ray_local, tmp_path):
    target = uri(s3_endpoint, "runs/b")
    job.run(tmp_path / "machine-1", trials=1, remote=RemoteRun(target, tmp_path / "machine-1"))
    env = {"XDG_CACHE_HOME": str(tmp_path / "cache")} | CREDENTIALS
    done = cli("export", target, env=env)
    assert done.returncode == 0, done.stderr
    assert "mirrored to s3://runs-bucket/runs/b" in done.stderr
    stored = objects(s3_endpoint, "runs/b")
    assert {
        "README.md",
        "manifest.json",
        "data/openai/train-00000.parquet",
        "data/openai/rejected-00000.parquet",
    } <= set(stored)
    assert any(name.startswith("dataset/") for name in stored)

    done = cli("export", target, "--split", "train", "--format", "openai", env=env)
    assert done.returncode == 0, done.stderr
    stored = objects(s3_endpoint, "runs/b")
    assert "data/openai/train-00000.parquet" in stored
    # The earlier export's are gone; the run's own files (tasks-rejected.jsonl among them) stay.
    assert not any(("rejected" in name or "sharegpt" in name) and name != "tasks-rejected.jsonl" for name in stored)
    assert any(name.startswith("trajectories/part-") for name in stored)  # the run's own files stay


def test_an_unusable_uri_is_one_line(s3_endpoint, tmp_path):
    env = {"XDG_CACHE_HOME": str(tmp_path)} | CREDENTIALS
    done = cli("export", "nosuchscheme://bucket/run", env=env)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert done.stderr.count("\n") == 1 and "Unrecognized filesystem type" in done.stderr
    unreachable = "s3://runs-bucket/x?endpoint_override=127.0.0.1:9&scheme=http"
    done = cli("export", unreachable, env=env)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert "s3://runs-bucket/x:" in done.stderr and "check the URI, the credentials and the network" in done.stderr
