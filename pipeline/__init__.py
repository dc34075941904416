"""Imperative shell: config, LLM backends, Ray actors, run driver, storage, export and the CLI.

The main job from Python is `generate` (pipeline/api.py; README "Python API")."""

from apigen_mt.pipeline.api import GenerateError, GenerateResult, generate

__all__ = ["GenerateError", "GenerateResult", "generate"]
