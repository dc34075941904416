from __future__ import annotations

import json
from pathlib import Path

import pytest

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
TAUBENCH = SHARED / "taubench"


@pytest.fixture(scope="session")
def taubench_dir() -> Path:
    """`../shared/taubench` beside the checkout; tests that need tau-bench's data skip without it."""
    if not (TAUBENCH / "retail" / "orders.json").is_file():
        pytest.skip(f"tau-bench reference data not found at {TAUBENCH} (expected ../shared/taubench beside the checkout)")
    return TAUBENCH


@pytest.fixture(scope="session")
def taubench_tasks(taubench_dir: Path):
    def load(domain: str, split: str) -> list[dict]:
        return json.loads((taubench_dir / domain / f"tasks_{split}.json").read_text())

    return load
