"""Imperative shell: the run config, the front door (`generate`, pipeline/api.py; README "Python API"), and by
responsibility, each subpackage importing only those before it: store (the run folder), engines (the models),
run (the driver and both phases), export (the dataset and its card), cli (the `apigen-mt` command)."""

from apigen_mt.pipeline.api import GenerateError, GenerateResult, generate

__all__ = ["GenerateError", "GenerateResult", "generate"]
