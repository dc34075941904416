from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from types import ModuleType

import pytest

HERE = Path(__file__).resolve().parent
SHARED = HERE.parent.parent / "shared"
TAUBENCH = SHARED / "taubench"


@pytest.fixture(scope="session")
def taubench_dir() -> Path:
    """`../shared/taubench` beside the checkout; tests that need tau-bench's data skip without it."""
    if not (TAUBENCH / "retail" / "orders.json").is_file():
        pytest.skip(
            f"tau-bench reference data not found at {TAUBENCH} (expected ../shared/taubench beside the checkout)"
        )
    return TAUBENCH


@pytest.fixture(scope="session")
def taubench_tasks(taubench_dir: Path):
    def load(domain: str, split: str) -> list[dict]:
        return json.loads((taubench_dir / domain / f"tasks_{split}.json").read_text())

    return load


@pytest.fixture(scope="module")
def ray_local():
    """A local Ray for one test module (two CPUs, quiet); modules that send test doubles by value register them
    with `load_by_value` or their own fixture."""
    import ray

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    yield
    ray.shutdown()


def load_test_module(name: str) -> ModuleType:
    """`tests/<name>.py` as module `name` (a test double, another test file's helpers), loaded once: the tests
    folder is not on the import path of pytest's importlib mode, nor of the processes tests start."""
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, HERE / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


def load_by_value(name: str) -> ModuleType:
    """`load_test_module` for tests on Ray (import it as `tests.conftest`, the name pytest's importlib mode gives
    this file): Ray's workers cannot import the tests folder, so the module travels by value."""
    module = load_test_module(name)
    import ray.cloudpickle  # here, not at the top: most tests never load Ray

    ray.cloudpickle.register_pickle_by_value(module)
    return module


def cli_error_line(*args: str | Path) -> str:
    """Run the installed `apigen-mt` with `args` on a machine-local Ray (no cluster address, resource checks on),
    assert that it exits 2, and return its one `apigen-mt: error:` line."""
    import os
    import subprocess

    from apigen_mt.pipeline.engines.resources import SKIP_ENV

    env = {key: value for key, value in os.environ.items() if key not in ("RAY_ADDRESS", SKIP_ENV)}
    cli = Path(sys.executable).parent / "apigen-mt"
    done = subprocess.run([str(cli), *map(str, args)], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 2, done.stderr
    [line] = [line for line in done.stderr.splitlines() if line.startswith("apigen-mt: error:")]
    return line
