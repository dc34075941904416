"""Strict JSON, the output writers and stop signals, in-process (the CLI cases are in test_cli_adversarial.py)."""

from __future__ import annotations

import errno
import json
import os
import signal
from pathlib import Path

import pytest

from apigen_mt.pipeline.signals import Stopped, install_stop_handlers, signals_deferred
from apigen_mt.pipeline.store.io import InputError, read_json, read_records
from apigen_mt.pipeline.store.output import (
    OutputError,
    atomic_directory,
    atomic_entries,
    atomic_file,
    atomic_files_in,
    atomic_output,
    remove_stale_temps,
    temp_name,
)
from apigen_mt.simulators.strict_json import MAX_DEPTH, StrictJSONError, dumps_strict, loads_strict

# ---------------------------------------------------------------------------------------------- strict JSON


def test_nesting_up_to_the_limit_is_read_and_one_more_level_is_refused():
    assert loads_strict("[" * MAX_DEPTH + "]" * MAX_DEPTH, "x.json") == json.loads("[" * MAX_DEPTH + "]" * MAX_DEPTH)
    with pytest.raises(StrictJSONError, match=rf"^x\.json: nested deeper than {MAX_DEPTH} levels"):
        loads_strict('{"a": ' * (MAX_DEPTH + 1) + "1" + "}" * (MAX_DEPTH + 1), "x.json")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('{\n "a": 1,\n "b": NaN\n}', "t.json: line 3: NaN is not allowed"),
        ("[1,\n 2,\n\n -Infinity]", "t.json: line 4: -Infinity is not allowed"),
        ('["1e400",\n 1e400]', "t.json: line 2: the number 1e400 is too large"),
        ('[\n"NaN", "[[[[",\n' + "[" * 300 + "]" * 300 + "]", f"t.json: line 3: nested deeper than {MAX_DEPTH} levels"),
        ("[1,\n2,\n" + "7" * 4400 + "]", "t.json: line 3: an integer of 4400 digits exceeds the limit"),
        ('{"a": 1,\n "b" 2}', "t.json is not valid JSON (line 2, column 6: Expecting ':' delimiter)"),
        ('{"a" 1}', "t.json is not valid JSON (column 6: Expecting ':' delimiter)"),
    ],
)
def test_refusals_name_the_line_of_the_problem(text, message):
    with pytest.raises(StrictJSONError) as caught:
        loads_strict(text, "t.json")
    assert str(caught.value).startswith(message), str(caught.value)


def test_strings_that_look_like_refused_values_are_fine():
    assert loads_strict('["NaN", "Infinity", "1e400", "[[[", 1.5e300, -0.0]', "s") == [
        "NaN",
        "Infinity",
        "1e400",
        "[[[",
        1.5e300,
        -0.0,
    ]


@pytest.mark.parametrize("value", [float("nan"), float("inf"), {"a": [float("-inf")]}])
def test_dumps_strict_refuses_nan_and_infinity(value):
    with pytest.raises(StrictJSONError, match="NaN and Infinity are not JSON"):
        dumps_strict(value)


def test_json_lines_split_on_newline_only(tmp_path):
    path = tmp_path / "r.jsonl"
    values = ["a\u2028b", "c\u2029d", "e\u0085f", "g\x0bh\x0ci\x1cj"]
    path.write_text("".join(json.dumps(value, ensure_ascii=False) + "\r\n" for value in values), encoding="utf-8")
    assert read_records(path) == values


def test_a_lone_carriage_return_is_json_whitespace_not_a_line_break(tmp_path):
    path = tmp_path / "r.jsonl"
    path.write_bytes(b'{"a":\r1}\n{"b": 2}\n')
    assert read_records(path) == [{"a": 1}, {"b": 2}]


def test_read_json_reports_non_strict_input_as_input_error(tmp_path):
    path = tmp_path / "a.json"
    path.write_text('[{"amount":\n Infinity}]')
    with pytest.raises(InputError, match=rf"^{path}: line 2: Infinity is not allowed"):
        read_json(path)


# ---------------------------------------------------------------------------------------------- writers


def test_temp_names_are_short_fixed_and_hidden():
    names = {temp_name() for _ in range(50)}
    assert len(names) == 50
    assert all(name.startswith(".apigen-") and name.endswith(".tmp") and len(name) == 20 for name in names)


def test_atomic_output_keeps_the_old_file_when_the_block_fails(tmp_path):
    path = tmp_path / "out.jsonl"
    path.write_text("old\n")
    with pytest.raises(RuntimeError), atomic_output(path) as out:
        out.write("new\n")
        raise RuntimeError("half-way")
    assert path.read_text() == "old\n"
    assert sorted(tmp_path.iterdir()) == [path]


def test_atomic_output_through_a_symlink_replaces_the_target_not_the_link(tmp_path):
    target, link = tmp_path / "real.json", tmp_path / "link.json"
    target.write_text("old")
    link.symlink_to(target)
    with atomic_output(link, binary=True) as out:
        out.write(b"new")
    assert link.is_symlink() and target.read_bytes() == b"new"


def test_atomic_file_publishes_what_the_caller_wrote_and_removes_it_on_failure(tmp_path):
    path = tmp_path / "shard.parquet"
    with atomic_file(path) as tmp:
        assert tmp.parent == tmp_path and tmp.name != path.name
        tmp.write_bytes(b"PAR1")
    assert path.read_bytes() == b"PAR1"
    with pytest.raises(RuntimeError), atomic_file(path) as tmp:
        tmp.write_bytes(b"half")
        raise RuntimeError("writer failed")
    assert path.read_bytes() == b"PAR1" and sorted(tmp_path.iterdir()) == [path]


def test_atomic_file_refuses_an_input_and_a_device(tmp_path):
    source = tmp_path / "in.json"
    source.write_text("[]")
    with pytest.raises(OutputError, match="is also an input"), atomic_file(source, inputs=[source]):
        pass
    with pytest.raises(OutputError, match="must be a regular file"), atomic_file(Path(os.devnull)):
        pass


def test_atomic_directory_refuses_a_non_empty_folder_unless_replacing(tmp_path):
    folder = tmp_path / "export"
    folder.mkdir()
    (folder / "old.txt").write_text("old")
    with pytest.raises(OutputError, match="exists and is not empty"), atomic_directory(folder):
        pass
    with atomic_directory(folder, replace=True) as staging:
        assert staging.parent == tmp_path and not (staging / "old.txt").exists()
        (staging / "new.txt").write_text("new")
    assert [path.name for path in folder.iterdir()] == ["new.txt"]
    assert sorted(path.name for path in tmp_path.iterdir()) == ["export"]


def test_atomic_directory_keeps_the_old_folder_when_the_block_fails(tmp_path):
    folder = tmp_path / "export"
    folder.mkdir()
    (folder / "old.txt").write_text("old")
    with pytest.raises(RuntimeError), atomic_directory(folder, replace=True) as staging:
        (staging / "new.txt").write_text("new")
        raise RuntimeError("export failed")
    assert [path.name for path in folder.iterdir()] == ["old.txt"]
    assert sorted(path.name for path in tmp_path.iterdir()) == ["export"]


def test_atomic_directory_refuses_a_folder_holding_an_input(tmp_path):
    source = tmp_path / "data" / "users.json"
    source.parent.mkdir()
    source.write_text("{}")
    with (
        pytest.raises(OutputError, match="holds an input"),
        atomic_directory(tmp_path / "data", inputs=[source], replace=True),
    ):
        pass
    assert source.read_text() == "{}"


def test_atomic_files_in_a_new_folder_leaves_no_folder_on_failure(tmp_path):
    folder = tmp_path / "new" / "data"
    with pytest.raises(RuntimeError), atomic_files_in(folder, ["a.json", "b.json"]) as staging:
        (staging / "a.json").write_text("{}")
        raise RuntimeError("generator failed")
    assert not folder.exists()


def test_atomic_files_in_moves_every_file_and_keeps_others(tmp_path):
    (tmp_path / "a.json").write_text("old")
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(OutputError, match=r"already holds a\.json"), atomic_files_in(tmp_path, ["a.json", "b.json"]):
        pass
    with atomic_files_in(tmp_path, ["a.json", "b.json"], replace=True) as staging:
        (staging / "a.json").write_text("new a")
        (staging / "b.json").write_text("new b")
    assert {path.name: path.read_text() for path in tmp_path.iterdir()} == {
        "a.json": "new a",
        "b.json": "new b",
        "notes.txt": "mine",
    }


def test_atomic_entries_replaces_every_name_together_and_removes_those_not_written(tmp_path):
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "old.parquet").write_text("old")
    (tmp_path / "README.md").write_text("old card")
    (tmp_path / "dataset-openai").mkdir()
    (tmp_path / "notes.txt").write_text("mine")
    with atomic_entries(tmp_path, ["data", "README.md", "dataset-openai"]) as staging:
        assert staging.parent == tmp_path and not any(staging.iterdir())
        (staging / "data").mkdir()
        (staging / "data" / "new.parquet").write_text("new")
        (staging / "README.md").write_text("new card")
    assert {str(path.relative_to(tmp_path)): path.read_text() for path in tmp_path.rglob("*") if path.is_file()} == {
        "data/new.parquet": "new",
        "README.md": "new card",
        "notes.txt": "mine",
    }
    assert sorted(path.name for path in tmp_path.iterdir()) == ["README.md", "data", "notes.txt"]


def _old_outputs(folder: Path) -> dict[str, str]:
    (folder / "data").mkdir()
    (folder / "data" / "old.parquet").write_text("old")
    (folder / "README.md").write_text("old card")
    return {"data/old.parquet": "old", "README.md": "old card"}


def _files(folder: Path) -> dict[str, str]:
    return {str(path.relative_to(folder)): path.read_text() for path in folder.rglob("*") if path.is_file()}


def test_atomic_entries_keeps_every_old_entry_when_the_block_is_stopped(tmp_path, stop_handlers):
    old = _old_outputs(tmp_path)
    with pytest.raises(Stopped), atomic_entries(tmp_path, ["data", "README.md"]) as staging:
        (staging / "data").mkdir()
        (staging / "data" / "new.parquet").write_text("new")
        os.kill(os.getpid(), signal.SIGTERM)
        (staging / "README.md").write_text("new card")
    assert _files(tmp_path) == old


def test_atomic_entries_finishes_the_swap_before_a_stop_signal_that_arrives_during_it(
    tmp_path, stop_handlers, monkeypatch
):
    _old_outputs(tmp_path)
    real_replace = os.replace

    def replace_then_stop(source, target):  # a TEST DOUBLE of os.replace: SIGTERM arrives after the first rename
        real_replace(source, target)
        monkeypatch.setattr(os, "replace", real_replace)
        os.kill(os.getpid(), signal.SIGTERM)

    with pytest.raises(Stopped), atomic_entries(tmp_path, ["data", "README.md"]) as staging:
        (staging / "data").mkdir()
        (staging / "data" / "new.parquet").write_text("new")
        (staging / "README.md").write_text("new card")
        monkeypatch.setattr(os, "replace", replace_then_stop)
    assert _files(tmp_path) == {"data/new.parquet": "new", "README.md": "new card"}
    assert sorted(path.name for path in tmp_path.iterdir()) == ["README.md", "data"]


def test_atomic_entries_puts_every_old_entry_back_when_a_rename_fails(tmp_path, monkeypatch):
    old = _old_outputs(tmp_path)
    real_replace = os.replace

    def replace_failing_on_the_new_card(source, target):  # a TEST DOUBLE of os.replace: the disk refuses one rename
        if Path(target) == tmp_path / "README.md" and Path(source).read_text() == "new card":
            raise OSError(errno.EIO, "Input/output error")
        return real_replace(source, target)

    monkeypatch.setattr(os, "replace", replace_failing_on_the_new_card)
    with (
        pytest.raises(OutputError, match=rf"cannot write {tmp_path / 'README.md'}: Input/output error"),
        atomic_entries(tmp_path, ["data", "README.md"]) as staging,
    ):
        (staging / "data").mkdir()
        (staging / "README.md").write_text("new card")
    assert _files(tmp_path) == old
    assert sorted(path.name for path in tmp_path.iterdir()) == ["README.md", "data"]


def test_remove_stale_temps_removes_only_what_temp_names_look_like(tmp_path):
    (tmp_path / temp_name()).mkdir()
    (tmp_path / temp_name() / "nested").mkdir(parents=True)
    (tmp_path / temp_name()).write_text("half a card")
    for name in (".apigen-run.lock", ".apigen-notahex.tmp", "README.md"):
        (tmp_path / name).write_text("keep")
    remove_stale_temps(tmp_path)
    assert sorted(path.name for path in tmp_path.iterdir()) == [".apigen-notahex.tmp", ".apigen-run.lock", "README.md"]


# ---------------------------------------------------------------------------------------------- signals


@pytest.fixture
def stop_handlers():
    saved = {signum: signal.getsignal(signum) for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
    install_stop_handlers()
    yield
    for signum, handler in saved.items():
        signal.signal(signum, handler)


def test_sigterm_raises_stopped_with_its_exit_status(stop_handlers):
    with pytest.raises(Stopped) as caught:
        os.kill(os.getpid(), signal.SIGTERM)  # the handler runs right after, in this thread
        pytest.fail("SIGTERM did not raise")
    assert caught.value.status == 128 + signal.SIGTERM and str(caught.value) == "stopped by SIGTERM"


def test_a_signal_during_a_deferred_block_waits_for_its_end(stop_handlers):
    done = []
    with pytest.raises(Stopped) as caught, signals_deferred():
        os.kill(os.getpid(), signal.SIGHUP)
        done.append("the block finished")
    assert done == ["the block finished"] and caught.value.signum == signal.SIGHUP
